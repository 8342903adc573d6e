"""Lua for purging a queue (`PURGE`, shared/purge.py): its queued jobs, its scheduled ones (RQ's
`rq:scheduled:<queue>`, delayed jobs and retries waiting out a back-off) and its jobs set aside by a
concurrency or rate limit, in one atomic step; each dropped job gives its idempotency key back, leaves its
limit's waiting list and count, and fails its dependents (naming it) before its hash is deleted.

The script runs after the lifecycle prelude (lua.py: `PURGE = PRELUDE + PURGE_BODY`) and uses its helpers
(`idem_release`, `limits_unwait`, `wf_final`).
"""

from __future__ import annotations

PURGE_BODY = """
-- PURGE: drop job `id` if its status is one of `statuses` (a job a worker holds is never dropped): its
-- idempotency key, its place among a limit's waiters, its dependents (failed, naming it), then its hash.
local function purge_drop(id, statuses, now, now_unix)
  local jkey = JOB .. id
  local f = redis.call('HMGET', jkey, 'status', 'origin', 'ferry_waiting')
  if not f[1] or not statuses[f[1]] then return 0 end
  idem_release(jkey, id)
  if f[3] then limits_unwait(jkey, f[2]) end
  if redis.call('EXISTS', WF_DEPENDENTS .. id .. WF_DEPENDENTS_END) == 1 then
    redis.call('HSET', jkey, 'status', 'canceled', 'ferry_error', 'purged with its queue')
    wf_final(id, now, now_unix, '')
  end
  redis.call('DEL', jkey)
  return 1
end

-- KEYS: none (names from the prelude)   ARGV: queue name, now (RQ), now (unix)
-- Returns {queued, scheduled, waiting}: how many jobs of each kind were dropped.
local qname, now, now_unix = ARGV[1], ARGV[2], tonumber(ARGV[3])
local queued_ = {queued = true}
local queued, scheduled, waiting = 0, 0, 0
for _, id in ipairs(redis.call('LRANGE', QUEUE .. qname, 0, -1)) do
  queued = queued + purge_drop(id, queued_, now, now_unix)
end
redis.call('DEL', QUEUE .. qname, OFFERS .. qname)
local sched = SCHEDULED .. qname
for _, id in ipairs(redis.call('ZRANGE', sched, 0, -1)) do
  scheduled = scheduled + purge_drop(id, {scheduled = true}, now, now_unix)
end
redis.call('DEL', sched)
for _, entry in ipairs(redis.call('SMEMBERS', LIMITS_WAITING)) do   -- every non-empty waiting list
  local e = cjson.decode(entry)
  local wkey = waiting_key(e[1], e[2])
  for _, id in ipairs(redis.call('LRANGE', wkey, 0, -1)) do
    if redis.call('HGET', JOB .. id, 'origin') == qname and purge_drop(id, queued_, now, now_unix) == 1 then
      redis.call('LREM', wkey, 0, id)
      waiting = waiting + 1
    end
  end
  if redis.call('EXISTS', wkey) == 0 then redis.call('SREM', LIMITS_WAITING, entry) end
end
return {queued, scheduled, waiting}
"""
