"""Lua for delayed jobs and retry back-off: `LUA` joins the lifecycle prelude (before `settle`), the scripts
below run with that prelude in front (shared/lifecycle/scheduled.py binds them).

A delayed job is a member of RQ's ScheduledJobRegistry (`rq:scheduled:<queue>`, score = due time in unix
seconds) with status `scheduled`. PROMOTE moves due members to their queue; every move is gated on the
ZREM of the member (a job is never moved twice, even by two callers) and the whole call on the promoter
lease (only its holder moves anything). Scores are passed and kept as the strings Python wrote: a Lua
number would be formatted with 14 digits, a tenth of a millisecond off.
"""

from __future__ import annotations

from shared import backoff, delays, keys


def _q(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


ATTEMPT_ERRORS_KEPT = 10  # the last N attempts' errors are kept on the job (`ferry_attempt_errors`)
ATTEMPT_ERROR_CHARS = 500  # each one cut to this many characters

LUA = f"""
local SCHEDULED, PROMOTER = {_q(keys.scheduled(''))}, {_q(keys.PROMOTER_LEASE)}
local DELAYS_WAKE, DELAYS_WAKE_AT = {_q(keys.DELAYS_WAKE_CHANNEL)}, {_q(keys.DELAYS_WAKE_AT)}
local DUE = {_q(delays.DUE_FIELD)}

-- Wake the promoter when a job is due before the moment it sleeps until (or when nobody said when).
local function note_due(due)
  local at = tonumber(redis.call('GET', DELAYS_WAKE_AT) or '')
  if not at or tonumber(due) < at then redis.call('PUBLISH', DELAYS_WAKE, due) end
end

-- ENQUEUE of a delayed job (KEYS[4]: its scheduled registry): into the registry instead of onto the queue.
local function schedule_new(k, argv)
  redis.call('SADD', QUEUES, k[2])
  local due = redis.call('HGET', k[1], DUE)
  redis.call('ZADD', k[4], due, argv[1])
  note_due(due)
  return {{1, argv[1]}}
end

-- CANCEL of a job still waiting for its due time: out of the registry, canceled like a queued job.
local function cancel_scheduled(jkey, argv, origin)
  local ttl = tonumber(argv[3])
  redis.call('ZREM', SCHEDULED .. origin, argv[1])
  redis.call('HSET', jkey, 'status', 'canceled', 'ended_at', argv[2], 'ferry_error', 'canceled before it ran')
  redis.call('EXPIRE', jkey, ttl)
  redis.call('ZADD', CANCELED .. origin, tonumber(argv[4]) + ttl, argv[1])
  result_entry(argv[1], ttl, 'type', '3', 'worker_name', '')
  count(origin, task_of(jkey, ''), 'canceled')
  idem_release(jkey, argv[1])
  redis.call('PUBLISH', DONE, argv[1])
  return {{'canceled'}}
end
"""

LUA += f"""
local ATTEMPT_ERRORS = {_q(backoff.ATTEMPT_ERRORS_FIELD)}
-- settle(): keep this attempt's error on the job (the last {ATTEMPT_ERRORS_KEPT}, each cut short), as JSON.
local function note_attempt_error(jkey, a)
  local f = redis.call('HMGET', jkey, ATTEMPT_ERRORS, 'number_of_retries', 'started_at')
  local kept = {{}}
  if f[1] then
    local ok, decoded = pcall(cjson.decode, f[1])
    if ok and type(decoded) == 'table' then kept = decoded end
  end
  kept[#kept + 1] = {{attempt = (tonumber(f[2] or '0') or 0) + 1, started_at = f[3] or '', failed_at = a.now,
                     error = string.sub(a.short or '', 1, {ATTEMPT_ERROR_CHARS})}}
  while #kept > {ATTEMPT_ERRORS_KEPT} do table.remove(kept, 1) end
  redis.call('HSET', jkey, ATTEMPT_ERRORS, cjson.encode(kept))
end

-- settle()'s retry when the worker computed a back-off (a.retry_due: unix s): scheduled, not queued.
local function retry_later(a, jkey, left, task)
  if not a.retry_due or a.retry_due == '' then return false end
  redis.call('HSET', jkey, 'status', 'scheduled', 'retries_left', left - 1, 'ferry_error', a.short,
             'worker_name', '', DUE, a.retry_due)
  redis.call('HINCRBY', jkey, 'number_of_retries', 1)
  redis.call('ZADD', SCHEDULED .. a.queue, a.retry_due, a.id)
  count(a.queue, task, 'retried')
  if a.reason ~= '' then redis.call('HINCRBY', METRICS, requeued_field(a.queue, task, a.reason), 1) end
  note_due(a.retry_due)
  return true
end
"""

# KEYS: none. ARGV: holder (node id), now (unix), now (RQ format), limit, queue names...
# Returns {{promoted, more}}: more = 1 when the limit stopped it (call again); {{-1, 0}}: the lease is not ours.
PROMOTE = """
if redis.call('GET', PROMOTER) ~= ARGV[1] then return {-1, 0} end
local limit = tonumber(ARGV[4])
local seen, promoted = 0, 0
for i = 5, #ARGV do
  local qname = ARGV[i]
  local rkey = SCHEDULED .. qname
  local pushed = 0
  if seen < limit then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', rkey, '-inf', ARGV[2], 'LIMIT', 0, limit - seen)) do
      seen = seen + 1
      if redis.call('ZREM', rkey, id) == 1 then   -- the gate: only the first mover of this member goes on
        local jkey = JOB .. id
        local f = redis.call('HMGET', jkey, 'status', 'enqueue_at_front')
        if f[1] == 'scheduled' then   -- a deleted or canceled job only leaves the registry
          redis.call('HSET', jkey, 'status', 'queued', 'enqueued_at', ARGV[3])
          redis.call('HINCRBY', jkey, 'ferry_promotions', 1)
          if f[2] == '1' then redis.call('LPUSH', QUEUE .. qname, id) else redis.call('RPUSH', QUEUE .. qname, id) end
          pushed = pushed + 1
        end
      end
    end
  end
  if pushed > 0 then
    promoted = promoted + pushed
    wake(qname)
  end
end
if seen >= limit then return {promoted, 1} end
return {promoted, 0}
"""

# KEYS: none. ARGV: now (unix), longest sleep (s), wake_at expiry (ms), queue names...
# The earliest due time over the queues (a string, or false), after recording when the promoter will look
# again (`DELAYS_WAKE_AT`), atomically: an enqueue after this sees it and publishes if it is due sooner.
NEXT_DUE = """
local wake_at = tonumber(ARGV[1]) + tonumber(ARGV[2])
local earliest, text = nil, false
for i = 4, #ARGV do
  local first = redis.call('ZRANGE', SCHEDULED .. ARGV[i], 0, 0, 'WITHSCORES')
  if first[2] and (not earliest or tonumber(first[2]) < earliest) then earliest, text = tonumber(first[2]), first[2] end
end
if earliest and earliest < wake_at then wake_at = earliest end
redis.call('SET', DELAYS_WAKE_AT, string.format('%.6f', wake_at), 'PX', ARGV[3])
return text
"""

# KEYS: none. ARGV: holder, lease (ms), 'hold' | 'release'. 1 when `holder` holds the lease afterwards.
LEASE = f"""
local PROMOTER = {_q(keys.PROMOTER_LEASE)}
local current = redis.call('GET', PROMOTER)
if ARGV[3] == 'release' then
  if current == ARGV[1] then redis.call('DEL', PROMOTER) end
  return 0
end
if current == ARGV[1] then
  redis.call('PEXPIRE', PROMOTER, ARGV[2])
  return 1
end
if not current then
  redis.call('SET', PROMOTER, ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
