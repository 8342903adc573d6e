"""Lua for locality-aware placement: which nodes hold which objects, and offering a job to one node first.

`LUA` is spliced into the lifecycle prelude (lua.py) before `claim`, so ENQUEUE and claim() call it with
one line each:
- ENQUEUE calls `offer(job key, id, queue)`: a job whose hash names input objects (`ferry_input_objects`,
  `id:nbytes,...`) and an offer window (`ferry_placement_delay_s`) is offered to the live node holding
  the most of those bytes: `ferry:offers:<queue>` (id -> end of the offer), `ferry:prefer:<node>` (a
  list of ids) and the job's `ferry_offer` field. The job is pushed on `rq:queue:<name>` as always, so
  queue counts stay exact.
- claim() calls `promote_preferred` (the node's offered jobs, still queued within the first
  PLACEMENT_SCAN entries of their queue, move to its head, so this claim pops them first), then per
  queue `has_offers` (one EXISTS when nothing is offered: the whole cost for other jobs) and
  `next_job`: LPOP, or, while offers are open, the first job in the queue's first PLACEMENT_SCAN
  entries that is not offered to another node, taken with LREM (never reordering the others).
Every take is gated on removing the id from the queue inside the claim script: exactly once.
"""

from __future__ import annotations

from shared import keys

PLACEMENT_SCAN = 100  # queue entries a claim looks through (promoting, or skipping other nodes' offers)


def _q(text: str) -> str:
    return "'" + text + "'"


def _node_holds(node: str) -> str:
    """Lua: the node's holdings key (keys.node_holds) for the Lua expression `node`."""
    prefix, suffix = keys.node_holds("\0").split("\0")
    return f"{_q(prefix)} .. {node} .. {_q(suffix)}"


LUA = f"""
local HOLDERS, OFFERS, PREFER = {_q(keys.holders(''))}, {_q(keys.offers(''))}, {_q(keys.preferred(''))}
local CATALOG, PLACEMENT_SCAN = {_q(keys.catalog(''))}, {PLACEMENT_SCAN}

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function node_of(worker) return string.match(worker, '^([^.]+)') end

-- ENQUEUE: offer the job to the live node that holds the most bytes of its inputs (none: nothing to do).
local function offer(jkey, id, qname)
  local f = redis.call('HMGET', jkey, 'ferry_input_objects', 'ferry_placement_delay_s')
  if not f[1] or not f[2] then return end
  local bytes, nodes = {{}}, {{}}
  for oid, n in string.gmatch(f[1], '([^:,]+):([^,]+)') do
    for _, node in ipairs(redis.call('SMEMBERS', HOLDERS .. oid)) do
      if not bytes[node] then nodes[#nodes + 1] = node end
      bytes[node] = (bytes[node] or 0) + tonumber(n)
    end
  end
  if #nodes == 0 then return end
  table.sort(nodes, function(x, y) return bytes[x] > bytes[y] end)
  for _, node in ipairs(nodes) do
    if redis.call('EXISTS', CATALOG .. node) == 1 then   -- the catalog entry expires with the node's heartbeat
      redis.call('ZADD', OFFERS .. qname, now_s() + tonumber(f[2]), id)
      redis.call('HSET', jkey, 'ferry_offer', node)
      redis.call('RPUSH', PREFER .. node, id)
      redis.call('EXPIRE', PREFER .. node, 3600)
      return
    end
  end
end

-- A workflow step that receives a finished job's result holding objects (a chain's large array) takes them as
-- its inputs (FINISH keeps them in the job's `ferry_result_objects`), so `offer` sends it to the node that
-- produced them, which adopted and published them.
local function inputs_from_result(jkey, dep)
  local objects = redis.call('HGET', JOB .. dep, 'ferry_result_objects')
  if not objects then return end
  local have = redis.call('HGET', jkey, 'ferry_input_objects')
  if have and have ~= '' then objects = objects .. ',' .. have end
  redis.call('HSET', jkey, 'ferry_input_objects', objects)
end

-- claim(): this node's offered jobs, still queued near the head of a queue it serves, go to that head.
local function promote_preferred(worker, n, qnames)
  local pkey = PREFER .. node_of(worker)
  if redis.call('EXISTS', pkey) == 0 then return end
  local serves = {{}}
  for _, q in ipairs(qnames) do serves[q] = true end
  local moved = 0
  while moved < n do
    local id = redis.call('LPOP', pkey)
    if not id then break end
    local f = redis.call('HMGET', JOB .. id, 'origin', 'status')
    if f[1] and serves[f[1]] and f[2] == 'queued' then
      local qkey = QUEUE .. f[1]
      if redis.call('LPOS', qkey, id, 'MAXLEN', PLACEMENT_SCAN) and redis.call('LREM', qkey, 1, id) == 1 then
        redis.call('LPUSH', qkey, id)
        moved = moved + 1
      end
    end
  end
end

-- claim(): whether this queue has open offers (expired ones are dropped first).
local function has_offers(qname)
  local okey = OFFERS .. qname
  if redis.call('EXISTS', okey) == 0 then return false end
  redis.call('ZREMRANGEBYSCORE', okey, '-inf', now_s())
  return redis.call('EXISTS', okey) == 1
end

-- claim() that found nothing: ms until the first open offer on these queues ends (other nodes' offers: this
-- worker may take those jobs then), or -1 when none is open. Saves the idle worker a round trip to ask.
local function offer_wait_ms(offered_queues, claimed)
  if claimed > 0 or #offered_queues == 0 then return -1 end
  local first
  for _, qname in ipairs(offered_queues) do
    local head = redis.call('ZRANGE', OFFERS .. qname, 0, 0, 'WITHSCORES')
    if head[2] and (not first or tonumber(head[2]) < first) then first = tonumber(head[2]) end
  end
  if not first then return -1 end
  return math.max(0, math.floor((first - now_s()) * 1000))
end

-- claim(): the next job id this worker may take from the queue (removed from it), or nil.
local function next_job(qkey, qname, worker, offered)
  if not offered then return redis.call('LPOP', qkey) end
  local node, okey = node_of(worker), OFFERS .. qname
  for _, id in ipairs(redis.call('LRANGE', qkey, 0, PLACEMENT_SCAN - 1)) do
    local open = not redis.call('ZSCORE', okey, id) or redis.call('HGET', JOB .. id, 'ferry_offer') == node
    if open and redis.call('LREM', qkey, 1, id) == 1 then
      redis.call('ZREM', okey, id)
      return id
    end
  end
  return nil
end
"""

# KEYS: none. ARGV: node, then `+<object id>` (now held) or `-<object id>` (evicted) entries.
HOLD = f"""
local node = ARGV[1]
local holds = {_node_holds('node')}
for i = 2, #ARGV do
  local sign, oid = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if sign == '+' then
    redis.call('SADD', {_q(keys.holders(''))} .. oid, node)
    redis.call('SADD', holds, oid)
  else
    redis.call('SREM', {_q(keys.holders(''))} .. oid, node)
    redis.call('SREM', holds, oid)
  end
end
redis.call('SADD', {_q(keys.HOLDING_NODES)}, node)
return 1
"""

# Drop a node's holdings and offers: at its start and stop, or (ARGV[1] = '') every node whose heartbeat
# in ferry:nodes is older than ARGV[2] (unix s) or missing. ARGV: node or '', cutoff. Returns the nodes dropped.
FORGET = f"""
local function forget(node)
  local holds = {_node_holds('node')}
  for _, oid in ipairs(redis.call('SMEMBERS', holds)) do redis.call('SREM', {_q(keys.holders(''))} .. oid, node) end
  redis.call('DEL', holds, {_q(keys.preferred(''))} .. node)
  redis.call('SREM', {_q(keys.HOLDING_NODES)}, node)
end
if ARGV[1] ~= '' then forget(ARGV[1]); return {{ARGV[1]}} end
local out = {{}}
for _, node in ipairs(redis.call('SMEMBERS', {_q(keys.HOLDING_NODES)})) do
  local beat = redis.call('ZSCORE', {_q(keys.NODES)}, node)
  if not beat or tonumber(beat) < tonumber(ARGV[2]) then forget(node); out[#out + 1] = node end
end
return out
"""

# Results written behind (shared/handoff.py) whose writer died before they reached Redis: their job finished,
# but nobody off its node can read the result, so it runs again (same result ids: readers keep waiting).
# Appended to the lifecycle PRELUDE by handoff.py. ARGV: cutoff (unix s: older node heartbeats are dead), now (RQ)
RECOVER_BODY = f"""
local PENDING, OBJ, NODES = {_q(keys.PENDING_OBJECTS)}, {_q(keys.object_meta(''))}, {_q(keys.NODES)}
local out = {{}}
for _, oid in ipairs(redis.call('ZRANGE', PENDING, 0, 199)) do
  local pkey = OBJ .. oid .. ':pending'
  local p = redis.call('HMGET', pkey, 'job', 'queue', 'worker', 'node')
  if not p[1] or redis.call('EXISTS', OBJ .. oid) == 1 then
    redis.call('ZREM', PENDING, oid)
    redis.call('DEL', pkey)
  else
    local state = redis.call('HGET', WORKER .. p[3], 'state')
    local node_dead = tonumber(redis.call('ZSCORE', NODES, p[4]) or '0') < tonumber(ARGV[1])
    if node_dead or not state or state == 'dead' then
      local jkey = JOB .. p[1]
      local f = redis.call('HMGET', jkey, 'status', 'ferry_task')
      if f[1] == 'finished' and p[3] ~= '' then   -- ('' : it ran again and wrote no such result: give up)
        redis.call('HSET', jkey, 'status', 'queued', 'enqueued_at', ARGV[2], 'ended_at', '', 'worker_name', '',
                   'ferry_error', 'its result was lost with its worker before it reached Redis; running it again')
        redis.call('HINCRBY', jkey, 'number_of_retries', 1)   -- another attempt, though no retry is used up
        redis.call('PERSIST', jkey)
        redis.call('ZREM', FINISHED .. p[2], p[1])
        redis.call('LPUSH', QUEUE .. p[2], p[1])
        redis.call('HSET', pkey, 'worker', '')
        local reason = 'worker_died'
        if node_dead then reason = 'node_died' end
        redis.call('HINCRBY', METRICS, requeued_field(p[2], f[2] or 'unknown', reason), 1)
        wake(p[2])
        out[#out + 1] = p[1]
      elseif f[1] ~= 'queued' and f[1] ~= 'started' then   -- failed, canceled or gone: readers stop waiting
        redis.call('ZREM', PENDING, oid)
        redis.call('DEL', pkey)
      end   -- queued or started: a run is coming, and it writes the marker again
    end
  end
end
return out
"""
