"""Lua for four gaps closed together: a dependent job's idempotency key, and purging a queue (issue 7, 8).

`LUA` is appended to the lifecycle prelude (lua.py, one line), after every function it calls
(`idem_take`, `idem_release` from lua_jobsurface; the limits' and delays' helpers); each hook in an existing
script is one call.

- **A dependent job's idempotency key** (`wf_idem_take`): `WF_SUBMIT` takes a single job's key with the
  same `idem_take` as `ENQUEUE` (the same request returns the first job, a different one is a conflict),
  and the scripts that end a deferred job (`wf_fail`, `wf_cancel_now`) give it back with `idem_release`,
  as SETTLE and CANCEL do for any other job.
"""

from __future__ import annotations

LUA = """
-- WF_SUBMIT of one job with depends_on (ARGV: now, now unix, ttl, 0 workflow fields, 1 job, then the job:
-- id, queue, wants, front, #deps, deps..., #run_on, run_on..., #fields, field, value...): take its idempotency
-- key as ENQUEUE does. nil when taken; else ENQUEUE's reply ({0, first job} duplicate, {2, first job} conflict).
local function wf_idem_take(ikey, argv)
  local p = 6 + 2 * tonumber(argv[4])
  local id = argv[p]
  p = p + 4
  p = p + 1 + tonumber(argv[p])   -- the dependencies
  p = p + 1 + tonumber(argv[p])   -- the 'run' dependencies
  local fp = ''
  for i = p + 1, p + 2 * tonumber(argv[p]) - 1, 2 do
    if argv[i] == IDEM_FP then fp = argv[i + 1] end
  end
  return idem_take(ikey, id, argv[3], {'', '', '', IDEM_FP, fp})
end
"""
