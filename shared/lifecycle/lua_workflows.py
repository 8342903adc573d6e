"""Workflows in Lua: dependencies kept in RQ 3's own data model, resolved inside the lifecycle scripts.

A job that waits for others is `deferred`, listed in `rq:deferred:<queue>`, named in each dependency's
`rq:job:<dep>:dependents` set, and lists its dependencies in `rq:job::<id>:dependencies` and `dependency_ids`:
exactly what RQ 3 writes for `enqueue(..., depends_on=...)`, so plain RQ's dependent jobs run under Ferry's
workers and `rq info` shows Ferry's. When a job reaches a final state (FINISH, settle's fail and cancel
paths, CANCEL; each exactly once), `wf_final` resolves its dependents in the same script: one `EXISTS` for
a job nobody waits for. A dependent whose dependencies have all ended is queued; one whose dependency failed
or was canceled fails at once naming it, unless its policy for that dependency is `run` (`ferry_run_on`, or
RQ's `allow_dependency_failures`). A dependent that asked for results (`ferry_inputs`) gets each finished
dependency's result copied into its hash (`ferry_in:<dep>`) as that dependency finishes, so it holds its
inputs however long it waits (results expire; the copy lives as long as the job).

`WF_SUBMIT` enqueues a whole workflow (or one job with `depends_on`) in one script: a dependency already
final is seen in the same step that registers the others, so no wake-up is lost between check and register.
"""

from __future__ import annotations

from shared import keys


def _affixes(key: str) -> tuple[str, str]:
    prefix, _, suffix = key.partition("\0")
    return prefix, suffix


_DEPENDENTS = _affixes(keys.dependents("\0"))
_DEPENDENCIES = _affixes(keys.dependencies("\0"))
DEFAULT_FAILURE_TTL_S = 7 * 86_400  # for a plain RQ job with no failure_ttl field
MAX_ERROR_CHARS = 1000

# Inserted into lifecycle.lua.PRELUDE after `task_of` (it uses JOB, QUEUE, FAILED, FINAL, count, wake, task_of,
# result_entry).
LUA = f"""
local WF_DEPENDENTS, WF_DEPENDENTS_END = '{_DEPENDENTS[0]}', '{_DEPENDENTS[1]}'
local WF_DEPENDENCIES, WF_DEPENDENCIES_END = '{_DEPENDENCIES[0]}', '{_DEPENDENCIES[1]}'
local WF_DEFERRED, WF_RESULTS = '{keys.deferred("")}', '{keys.results("")}'

-- 'met', 'wait', or 'broken' plus the dependency and its status. A dependency whose hash is gone counts
-- as met, as in RQ (`Job.dependencies_are_met`).
local function wf_verdict(did)
  local f = redis.call('HMGET', JOB .. did, 'allow_dependency_failures', 'ferry_run_on')
  local verdict = 'met'
  for _, dep in ipairs(redis.call('SMEMBERS', WF_DEPENDENCIES .. did .. WF_DEPENDENCIES_END)) do
    local st = redis.call('HGET', JOB .. dep, 'status')
    if st and st ~= 'finished' then
      if not FINAL[st] then
        verdict = 'wait'
      elseif f[1] ~= '1' and not string.find(f[2] or '', ',' .. dep .. ',', 1, true) then
        return 'broken', dep, st
      end
    end
  end
  return verdict
end

local function wf_queue(did, origin, front, now)
  redis.call('HSET', JOB .. did, 'status', 'queued', 'enqueued_at', now)
  redis.call('ZREM', WF_DEFERRED .. origin, did)
  redis.call('SADD', QUEUES, QUEUE .. origin)
  if front == '1' then redis.call('LPUSH', QUEUE .. origin, did) else redis.call('RPUSH', QUEUE .. origin, did) end
  offer(JOB .. did, did, origin)   -- placement (lua_locality)
  wake(origin)
end

local function wf_fail(did, origin, dep, dstatus, now, now_unix)
  local jkey = JOB .. did
  local ttl = tonumber(redis.call('HGET', jkey, 'failure_ttl') or '') or {DEFAULT_FAILURE_TTL_S}
  local why = redis.call('HGET', JOB .. dep, 'ferry_error')
  local err = 'dependency ' .. dep .. ' ' .. dstatus
  if why and why ~= '' then err = err .. ' (' .. why .. ')' end
  err = string.sub(err, 1, {MAX_ERROR_CHARS})
  redis.call('HSET', jkey, 'status', 'failed', 'ended_at', now, 'ferry_error', err)
  redis.call('EXPIRE', jkey, ttl)
  idem_release(jkey, did)   -- its key can be used again, as after SETTLE's fail
  redis.call('ZREM', WF_DEFERRED .. origin, did)
  redis.call('ZADD', FAILED .. origin, now_unix + ttl, did)
  result_entry(did, ttl, 'type', '2', 'worker_name', '')
  count(origin, task_of(jkey, ''), 'failed')
  redis.call('PUBLISH', DONE, did)
end

local function wf_cancel_now(id, origin, why, now, now_unix, ttl)
  local jkey = JOB .. id
  redis.call('ZREM', WF_DEFERRED .. origin, id)
  redis.call('HSET', jkey, 'status', 'canceled', 'ended_at', now, 'ferry_error', why)
  redis.call('EXPIRE', jkey, ttl)
  idem_release(jkey, id)   -- its key can be used again, as after CANCEL
  redis.call('ZADD', CANCELED .. origin, now_unix + ttl, id)
  result_entry(id, ttl, 'type', '3', 'worker_name', '')
  count(origin, task_of(jkey, ''), 'canceled')
  redis.call('PUBLISH', DONE, id)
end

-- Job `id` just became final (payload: its result, base64 JSON, when it finished). Its dependents, and
-- theirs when they fail in turn, are settled here; a worklist, not recursion, however deep the chain.
local function wf_final(id, now, now_unix, payload)
  if redis.call('EXISTS', WF_DEPENDENTS .. id .. WF_DEPENDENTS_END) == 0 then return end
  local work, i = {{{{id, payload or ''}}}}, 1
  while i <= #work do
    local pid, result = work[i][1], work[i][2]
    i = i + 1
    local key = WF_DEPENDENTS .. pid .. WF_DEPENDENTS_END
    for _, did in ipairs(redis.call('SMEMBERS', key)) do
      local f = redis.call('HMGET', JOB .. did, 'status', 'origin', 'ferry_inputs', 'enqueue_at_front')
      if f[1] == 'deferred' then
        if result ~= '' and f[3] == '1' then
          redis.call('HSET', JOB .. did, 'ferry_in:' .. pid, result)
          inputs_from_result(JOB .. did, pid)   -- placement: run it where that result is (lua_locality)
        end
        local verdict, dep, dstatus = wf_verdict(did)
        if verdict == 'met' then
          wf_queue(did, f[2], f[4], now)
        elseif verdict == 'broken' then
          wf_fail(did, f[2], dep, dstatus, now, now_unix)
          work[#work + 1] = {{did, ''}}
        end
      end
    end
    redis.call('DEL', key)
  end
end

-- CANCEL of a deferred job (KEYS[1] its hash): canceled at once; its own dependents are settled.
local function wf_cancel_deferred(id, origin, now, ttl, now_unix)
  wf_cancel_now(id, origin, 'canceled before it ran', now, now_unix, ttl)
  wf_final(id, now, now_unix, '')
  return {{'canceled'}}
end
"""

# One job of a workflow, in WF_SUBMIT's ARGV: id, queue, wants results ('1'/''), front ('1'/''),
# number of dependencies, the dependencies..., number of 'run' dependencies, those..., number of fields, k, v...
WF_SUBMIT_BODY = """
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

-- KEYS: the workflow's key ('' for a single job), an idempotency key ('' for none)
-- ARGV: now (RQ), now (unix), ttl (of the workflow record, or of the idempotency key), workflow fields count,
-- field, value..., job count, then each job (see lua_workflows.WF_SUBMIT_BODY's comment).
if KEYS[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then return {0} end   -- a re-sent submit
if KEYS[2] and KEYS[2] ~= '' then   -- a single job's idempotency key: as ENQUEUE's (duplicate, conflict)
  local taken = wf_idem_take(KEYS[2], ARGV)
  if taken then return taken end
end
local now, now_unix = ARGV[1], tonumber(ARGV[2])
local p = 4
local nwf = tonumber(ARGV[p]); p = p + 1
if KEYS[1] ~= '' then
  redis.call('HSET', KEYS[1], unpack(ARGV, p, p + 2 * nwf - 1))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
p = p + 2 * nwf
local njobs = tonumber(ARGV[p]); p = p + 1
local out = {1}
for _ = 1, njobs do
  local id, qname, wants, front = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  p = p + 4
  local deps = {unpack(ARGV, p + 1, p + tonumber(ARGV[p]))}
  p = p + 1 + #deps
  local run_on = {unpack(ARGV, p + 1, p + tonumber(ARGV[p]))}
  p = p + 1 + #run_on
  local nfields = tonumber(ARGV[p])
  local jkey = JOB .. id
  redis.call('HSET', jkey, unpack(ARGV, p + 1, p + 2 * nfields))
  p = p + 1 + 2 * nfields
  redis.call('SADD', QUEUES, QUEUE .. qname)
  if #deps == 0 then
    redis.call('RPUSH', QUEUE .. qname, id)
    offer(jkey, id, qname)   -- placement (lua_locality)
    wake(qname)
    out[#out + 1] = 'queued'
  else
    redis.call('HSET', jkey, 'dependency_id', deps[1], 'dependency_ids', cjson.encode(deps),
               'ferry_run_on', ',' .. table.concat(run_on, ',') .. ',', 'ferry_inputs', wants,
               'enqueue_at_front', front)
    for _, dep in ipairs(deps) do
      redis.call('SADD', WF_DEPENDENCIES .. id .. WF_DEPENDENCIES_END, dep)
      local st = redis.call('HGET', JOB .. dep, 'status')
      if st and not FINAL[st] then
        redis.call('SADD', WF_DEPENDENTS .. dep .. WF_DEPENDENTS_END, id)
      elseif st == 'finished' and wants == '1' then   -- already done: its result is copied now
        local last = redis.call('XREVRANGE', WF_RESULTS .. dep, '+', '-', 'COUNT', 1)[1]
        if last then
          for k = 1, #last[2], 2 do
            if last[2][k] == 'return_value' then
              redis.call('HSET', jkey, 'ferry_in:' .. dep, last[2][k + 1])
              inputs_from_result(jkey, dep)
            end
          end
        end
      end
    end
    redis.call('HSET', jkey, 'status', 'deferred')
    redis.call('ZADD', WF_DEFERRED .. qname, now_unix, id)
    local verdict, dep, dstatus = wf_verdict(id)
    if verdict == 'met' then
      wf_queue(id, qname, front, now)
      out[#out + 1] = 'queued'
    elseif verdict == 'broken' then
      wf_fail(id, qname, dep, dstatus, now, now_unix)
      out[#out + 1] = 'failed'
    else
      out[#out + 1] = 'deferred'
    end
  end
end
return out
"""

WF_CANCEL_BODY = """
-- Cancel every job of a workflow not yet final. ARGV: now (RQ), now (unix), failure ttl, job ids...
-- Deferred and queued jobs are canceled at once (deferred ones first, so none is woken by another's end);
-- started ones are asked to stop (their worker settles them canceled). Returns {{id, outcome}, ...}.
local now, now_unix, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for pass = 1, 2 do
  for i = 4, #ARGV do
    local id = ARGV[i]
    local f = redis.call('HMGET', JOB .. id, 'status', 'origin', 'worker_name')
    if pass == 1 and f[1] == 'deferred' then
      wf_cancel_now(id, f[2], 'canceled with its workflow before it ran', now, now_unix, ttl)
      out[#out + 1] = {id, 'canceled'}
    elseif pass == 2 and f[1] == 'queued' then
      redis.call('LREM', QUEUE .. f[2], 0, id)
      wf_cancel_now(id, f[2], 'canceled with its workflow before it ran', now, now_unix, ttl)
      out[#out + 1] = {id, 'canceled'}
    elseif pass == 2 and f[1] == 'started' then
      redis.call('HSET', JOB .. id, 'cancel_requested', '1')
      redis.call('PUBLISH', CONTROL .. (f[3] or ''), 'cancel ' .. id)
      out[#out + 1] = {id, 'canceling'}
    end
  end
end
for _, pair in ipairs(out) do   -- jobs outside the workflow may wait for these
  if pair[2] == 'canceled' then wf_final(pair[1], now, now_unix, '') end
end
return out
"""
