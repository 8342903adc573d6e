"""Lua for the job surface (issue 9): idempotency keys, per-job tags, progress, RQ 3's executions index.

`LUA` is inserted in the lifecycle prelude (lua.py) right after its key names, before any function that
calls these (Lua resolves a local at compile time); the existing scripts call each with one line. Every
function is cheap for a job that does not use its feature: one HGET or EXISTS guard, never a scan.
"""

from __future__ import annotations

from shared import keys
from shared.job_settings import TAG_INDEX_MAX

_q = lambda text: "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731

LUA = f"""
-- The server's time (unix s), read once per script run.
local js_now = nil
local function js_time()
  if not js_now then
    local t = redis.call('TIME')
    js_now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  end
  return js_now
end

local IDEM_KEY, IDEM_FP = 'ferry_idem_key', 'ferry_idem_fp'

-- The value of field `name` among ARGV's field/value pairs starting at `first` (nil if absent).
local function js_field(argv, first, name)
  for i = first, #argv - 1, 2 do
    if argv[i] == name then return argv[i + 1] end
  end
  return nil
end

-- Take idempotency key `ikey` for job `id`; nil when taken, else ENQUEUE's reply: {{0, existing}} for
-- the same task, queue and args (a duplicate), {{2, existing}} for different ones (a conflict). A key
-- whose job no longer exists (expired) is taken over.
local function idem_take(ikey, id, ttl, argv)
  local existing = redis.call('GET', ikey)
  if existing then
    local fp = redis.call('HGET', JOB .. existing, IDEM_FP)
    if fp then
      if fp == js_field(argv, 4, IDEM_FP) then return {{0, existing}} end
      return {{2, existing}}
    end
    if redis.call('EXISTS', JOB .. existing) == 1 then return {{0, existing}} end
  end
  redis.call('SET', ikey, id, 'EX', ttl)
  return nil
end

-- A job that failed for good or was canceled gives its idempotency key back, so it can be resubmitted.
-- Only if the key still names this job: safe to run twice, and never frees a key someone else took since.
local function idem_release(jkey, id)
  local ikey = redis.call('HGET', jkey, IDEM_KEY)
  if ikey and redis.call('GET', ikey) == id then redis.call('DEL', ikey) end
end

-- Index a new job under its tags (ENQUEUE's KEYS from the 4th on): newest TAG_INDEX_MAX ids per tag; the
-- index lives a day longer than the longest its jobs can be kept (`longest`: job_settings.longest_ttl_s).
local function tag_job(id, keys_, longest)
  local ttl = (tonumber(longest) or 0) + 86400
  for i = 5, #keys_ do   -- after job, queue, idempotency key, scheduled registry
    redis.call('ZADD', keys_[i], js_time(), id)
    redis.call('ZREMRANGEBYRANK', keys_[i], 0, -{TAG_INDEX_MAX + 1})
    if redis.call('TTL', keys_[i]) < ttl then redis.call('EXPIRE', keys_[i], math.floor(ttl)) end
  end
end

-- RQ 3's executions index (rq/executions.py), so `Worker.get_current_job_id()`, rq-dashboard's worker page
-- and `total_working_time` see Ferry's jobs: an execution hash per claimed job, its `job_id:execution_id`
-- in the worker's set; the heartbeat keeps both alive with the claim record.
local RQ_EXEC, RQ_EXECUTIONS = {_q(keys.RQ_EXECUTION_PREFIX)}, {_q(keys.EXECUTIONS_SUFFIX)}

-- TTLs come from the heartbeat (rq_commands.refresh), not from here: two commands less per job. Every
-- execution ends in FINISH, SETTLE (also for a dead worker or node) or RELEASE, which delete it; the TTL is
-- only the safety net, and RQ drops set members whose hash is gone when it reads them.
local function rq_exec_start(id, exec, worker)
  local now = js_time()
  redis.call('HSET', RQ_EXEC .. id .. ':' .. exec, 'id', exec, 'job_id', id, 'created_at', now,
             'last_heartbeat', now, 'worker_name', worker)
  redis.call('SADD', WORKER .. worker .. RQ_EXECUTIONS, id .. ':' .. exec)
end

-- An execution ended (finished, settled or given back): out of the index. (RQ's `total_working_time` is added
-- by the worker process with its heartbeat: one command per heartbeat instead of one per job.)
local function rq_exec_end(id, exec, worker)
  local key = RQ_EXEC .. id .. ':' .. exec
  if not worker or worker == '' then worker = redis.call('HGET', key, 'worker_name') end
  redis.call('DEL', key)
  if worker and worker ~= '' then redis.call('SREM', WORKER .. worker .. RQ_EXECUTIONS, id .. ':' .. exec) end
end
"""


# A running task's progress: stored while the job is started (never over a final state), published for live readers.
PROGRESS = f"""
-- KEYS: job   ARGV: job id, progress JSON
if redis.call('HGET', KEYS[1], 'status') ~= 'started' then return 0 end
redis.call('HSET', KEYS[1], 'ferry_progress', ARGV[2])
redis.call('PUBLISH', {_q(keys.EVENTS_CHANNEL)}, ARGV[1])
return 1
"""
