"""Lua for pause, concurrency and rate limits, and RQ 3's RateLimit: appended to the lifecycle's PRELUDE.

The hooks in lua.py are one line each: `claim()` filters its queues through `unpaused()` and admits each
job through `limits_admit()`; every script that ends an execution (FINISH, `settle()`, `release()`,
hence REQUEUE_HELD and REAP) calls `limits_release()`; the final outcomes call `rq_release()`.

A job's limits travel in its own hash (`ferry_limits`, JSON written at submit, see shared/limits.py), so a
job without limits costs one more field in an HMGET the scripts already do, and nothing else. A job over
a limit is set aside in the limit's waiting list (it keeps status `queued`; `ferry_waiting` names the
limit) instead of being claimed: it holds no worker process. It goes back to the FRONT of its queue when
a slot of that limit is released (one job per slot) or, for a rate limit, when `PROMOTE` (run by every
node's supervisor) finds the limit's due time passed. Slots belong to executions (`id:exec`), so the
script that ends an execution, whoever runs it, gives its slots back, once.
"""

from __future__ import annotations

from shared import keys

_q = repr  # plain ASCII key prefixes: Python's repr is a valid Lua string literal

LUA = f"""
local SUSPENDED, PAUSED = {_q(keys.RQ_SUSPENDED)}, {_q(keys.PAUSED_QUEUES)}
local LIMITS_DUE, LIMITS_WAITING = {_q(keys.LIMITS_DUE)}, {_q(keys.LIMITS_WAITING)}
local WAITING_BY_QUEUE, RQ_RL = {_q(keys.LIMITS_WAITING_BY_QUEUE)}, {_q(keys.RQ_RATE_LIMIT_PREFIX)}
local LIMIT_PREFIX = {_q(keys.LIMIT_PREFIX)}
local function label(l, what) return string.sub(l.k, string.len(LIMIT_PREFIX) + 1) .. ' (' .. what .. ')' end

-- The queues a claim may take from: all of them unless a pause exists (one EXISTS when none does).
local function unpaused(qnames)
  if redis.call('EXISTS', SUSPENDED, PAUSED) == 0 then return qnames end
  if redis.call('EXISTS', SUSPENDED) == 1 then return {{}} end
  local out = {{}}
  for _, q in ipairs(qnames) do
    if redis.call('SISMEMBER', PAUSED, q) == 0 then out[#out + 1] = q end
  end
  return out
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function node_of(worker) return string.match(worker or '', '^([^.]+)') or '' end

local function waiting_key(base, node)
  if node == '' then return base .. ':waiting' end
  return base .. ':node:' .. node .. ':waiting'
end

-- Up to `k` waiting jobs of a waiting list back to the FRONT of their queues (canceled ones are dropped).
local function promote(base, node, k)
  local wkey = waiting_key(base, node)
  local moved, popped = 0, 0
  while moved < k do
    local id = redis.call('LPOP', wkey)
    if not id then break end
    popped = popped + 1
    local jkey = JOB .. id
    local f = redis.call('HMGET', jkey, 'status', 'origin', 'ferry_waiting')
    if f[3] then
      redis.call('HDEL', jkey, 'ferry_waiting')
      if f[2] then redis.call('HINCRBY', WAITING_BY_QUEUE, f[2], -1) end
    end
    if f[1] == 'queued' and f[2] then
      redis.call('LPUSH', QUEUE .. f[2], id)
      wake(f[2])
      moved = moved + 1
    end
  end
  if popped > 0 and redis.call('EXISTS', wkey) == 0 then
    redis.call('SREM', LIMITS_WAITING, cjson.encode({{base, node}}))
  end
  return moved
end

-- Set a job aside for the limit `base` (on `node` for a per-node limit): it keeps its place among waiters
-- (front if it waited before: `ferry_waited`), and is visible as waiting (`ferry_waiting`).
local function set_aside(id, qname, l, node, why)   -- returns false: not claimed
  local jkey = JOB .. id
  local wkey = waiting_key(l.k, node)
  if redis.call('HGET', jkey, 'ferry_waited') then redis.call('LPUSH', wkey, id)
  else redis.call('RPUSH', wkey, id) end
  redis.call('HSET', jkey, 'ferry_waiting', why, 'ferry_waited', '1')
  redis.call('HINCRBY', WAITING_BY_QUEUE, qname, 1)
  redis.call('HSET', l.k, 'n', l.n or 0, 'node', l.node or 0, 'rate', l.rate or 0, 'per_ms', l.per_ms or 0)
  redis.call('SADD', LIMITS_WAITING, cjson.encode({{l.k, node}}))
  return false
end

-- Admit a popped job (f = HMGET status, ferry_limits): true to claim it, false if it is not claimable
-- (canceled, deleted, or set aside for a limit). As the first job of a claim, a job over a limit is set
-- aside (at most MAX_ASIDE a script, then `stop`). Behind another job (prefetch) a limited job is taken
-- only if it leaves a slot free for other workers; otherwise it goes back to the front and `stop` ends
-- this queue for this claim: a prefetching worker never starves the others of a limit's slots.
local MAX_ASIDE, asides = 100, 0
local function limits_admit(f, id, qname, worker, exec, claimed)
  if f[1] ~= 'queued' then return false end
  if not f[2] then return true end
  if asides >= MAX_ASIDE then
    redis.call('LPUSH', QUEUE .. qname, id)
    return false, true
  end
  local limits = cjson.decode(f[2])
  local node = node_of(worker)
  local spare = 0
  if claimed > 0 then spare = 1 end
  local function over(l, wait_node, why)
    if claimed > 0 then
      redis.call('LPUSH', QUEUE .. qname, id)
      return false, true
    end
    asides = asides + 1
    return set_aside(id, qname, l, wait_node, label(l, why))
  end
  local now = nil
  for _, l in ipairs(limits) do
    local n, pn, rate = tonumber(l.n or 0), tonumber(l.node or 0), tonumber(l.rate or 0)
    if n > 0 and redis.call('HLEN', l.k .. ':running') >= n - spare then
      return over(l, '', 'concurrency ' .. n)
    end
    if pn > 0 and redis.call('SCARD', l.k .. ':node:' .. node .. ':running') >= pn - spare then
      return over(l, node, 'concurrency per node ' .. pn .. ' on ' .. node)
    end
    if rate > 0 then
      now = now or now_ms()
      local per = tonumber(l.per_ms)
      redis.call('ZREMRANGEBYSCORE', l.k .. ':starts', '-inf', now - per)
      if redis.call('ZCARD', l.k .. ':starts') >= rate then
        local oldest = redis.call('ZRANGE', l.k .. ':starts', 0, 0, 'WITHSCORES')
        redis.call('ZADD', LIMITS_DUE, 'LT', tonumber(oldest[2]) + per, l.k)
        return over(l, '', 'rate ' .. rate .. ' per ' .. per .. ' ms')
      end
    end
  end
  local member = id .. ':' .. exec
  for _, l in ipairs(limits) do
    if tonumber(l.n or 0) > 0 or tonumber(l.node or 0) > 0 then
      redis.call('HSET', l.k .. ':running', member, node)
      if tonumber(l.node or 0) > 0 then redis.call('SADD', l.k .. ':node:' .. node .. ':running', member) end
    end
    if tonumber(l.rate or 0) > 0 then
      redis.call('ZADD', l.k .. ':starts', now, member)
      redis.call('PEXPIRE', l.k .. ':starts', tonumber(l.per_ms) + 1000)
    end
  end
  return true
end

-- A waiting job was canceled: it no longer counts as waiting (it is dropped when its turn comes).
local function limits_unwait(jkey, qname)
  redis.call('HDEL', jkey, 'ferry_waiting')
  redis.call('HINCRBY', WAITING_BY_QUEUE, qname, -1)
end

-- An execution ended (finished, failed, requeued, released, reaped): give its slots back, once, and let one
-- waiting job per freed slot go back to the front of its queue.
local function limits_release(id, exec, spec)
  if not spec then return end
  local member = id .. ':' .. exec
  for _, l in ipairs(cjson.decode(spec)) do
    if tonumber(l.n or 0) > 0 or tonumber(l.node or 0) > 0 then
      local node = redis.call('HGET', l.k .. ':running', member)
      if node then
        redis.call('HDEL', l.k .. ':running', member)
        if tonumber(l.node or 0) > 0 then
          redis.call('SREM', l.k .. ':node:' .. node .. ':running', member)
          promote(l.k, node, 1)
        end
        promote(l.k, '', 1)   -- a cluster-wide (or rate) waiter; one set aside again costs a list move
      end
    end
  end
end

-- RQ 3's RateLimit (rq/rate_limit.py): a job enqueued by RQ with `rate_limit=RateLimit(key, n)` holds a slot
-- in `rq:rl:<key>:allowed` from its promotion until it ends; at its final outcome the slot is released and
-- RQ's waiting jobs fill the free slots, oldest first, exactly as RQ's RELEASE_AND_ENQUEUE_SCRIPT does.
local function rq_release(id, key, now, now_unix)
  if not key then return end
  local allowed, waiting = RQ_RL .. key .. ':allowed', RQ_RL .. key .. ':rate_limited'
  if redis.call('ZREM', allowed, id) == 0 then return end
  local concurrency = tonumber(redis.call('HGET', RQ_RL .. key, 'concurrency') or '0') or 0
  while redis.call('ZCARD', allowed) < concurrency do
    local popped = redis.call('ZPOPMIN', waiting)
    if #popped == 0 then break end
    local jid = popped[1]
    local f = redis.call('HMGET', JOB .. jid, 'origin', 'status', 'enqueue_at_front')
    if f[1] and f[2] == 'rate_limited' then
      redis.call('ZADD', allowed, now_unix, jid)
      if f[3] == '1' then redis.call('LPUSH', QUEUE .. f[1], jid) else redis.call('RPUSH', QUEUE .. f[1], jid) end
      redis.call('HSET', JOB .. jid, 'status', 'queued', 'enqueued_at', now)
      wake(f[1])
    end
  end
end
"""

PROMOTE = """
-- Waiting jobs whose rate window now allows a start go back to the front of their queues; with ARGV[1] = '1'
-- (the reaper's period) also any waiting list whose limit has free slots (a safety net: a promoted job that
-- was canceled before it was claimed frees no slot). Returns how many jobs were moved.
local moved = 0
local now = now_ms()
for _, base in ipairs(redis.call('ZRANGEBYSCORE', LIMITS_DUE, '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', LIMITS_DUE, base)
  local c = redis.call('HMGET', base, 'rate', 'per_ms')
  local rate, per = tonumber(c[1] or '0') or 0, tonumber(c[2] or '0') or 0
  if rate > 0 then
    redis.call('ZREMRANGEBYSCORE', base .. ':starts', '-inf', now - per)
    local free = rate - redis.call('ZCARD', base .. ':starts')
    if free > 0 then moved = moved + promote(base, '', free) end
    if redis.call('EXISTS', base .. ':waiting') == 1 then
      local oldest = redis.call('ZRANGE', base .. ':starts', 0, 0, 'WITHSCORES')
      local due = now + math.max(10, math.floor(per / rate))
      if free <= 0 and oldest[2] then due = tonumber(oldest[2]) + per end
      redis.call('ZADD', LIMITS_DUE, 'LT', due, base)
    end
  end
end
if ARGV[1] == '1' then
  for _, entry in ipairs(redis.call('SRANDMEMBER', LIMITS_WAITING, 100)) do
    local e = cjson.decode(entry)
    local base, node = e[1], e[2]
    local c = redis.call('HMGET', base, 'n', 'node')
    local n, pn = tonumber(c[1] or '0') or 0, tonumber(c[2] or '0') or 0
    local free = 0
    if node ~= '' then free = pn - redis.call('SCARD', base .. ':node:' .. node .. ':running')
    elseif n > 0 then free = n - redis.call('HLEN', base .. ':running') end
    if free > 0 then moved = moved + promote(base, node, free)
    elseif redis.call('EXISTS', waiting_key(base, node)) == 0 then
      redis.call('SREM', LIMITS_WAITING, entry)
    end
  end
end
return moved
"""
