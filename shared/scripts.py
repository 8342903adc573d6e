"""Lua scripts that make each job state change one atomic round trip to Redis.

Atomicity is what keeps jobs from being lost: a job leaves its queue and enters the started registry
in the same step (RQ's multi-queue BLPOP can lose a job between the two), and a failed or abandoned
job is either requeued or failed exactly once, whoever (worker, supervisor, reaper) gets there first.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

ENQUEUE = """
-- KEYS: job, queue, idempotency key ('' for none)   ARGV: id, queue name, idempotency ttl, field, value, ...
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ARGV[1]} end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', 'rq:queues', KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'ferry:wake', ARGV[2])
return {1, ARGV[1]}
"""

CLAIM = """
-- KEYS: queues in priority order   ARGV: worker name, now (RQ format), heartbeat deadline, execution id, worker key
for _, qkey in ipairs(KEYS) do
  while true do
    local id = redis.call('LPOP', qkey)
    if not id then break end
    local jkey = 'rq:job:' .. id
    local f = redis.call('HMGET', jkey, 'status', 'data', 'timeout', 'result_ttl', 'failure_ttl')
    if f[1] == 'queued' then   -- cancelled or deleted jobs are skipped
      local qname = string.sub(qkey, 10)
      local member = id .. ':' .. ARGV[4]
      redis.call('HSET', jkey, 'status', 'started', 'started_at', ARGV[2], 'last_heartbeat', ARGV[2], 'worker_name', ARGV[1])
      redis.call('ZADD', 'rq:wip:' .. qname, ARGV[3], member)
      redis.call('HSET', ARGV[5], 'state', 'busy', 'current_job', id, 'current_execution', member, 'current_queue', qname)
      return {id, qname, f[2], f[3] or '', f[4] or '', f[5] or ''}
    end
  end
end
return false
"""

FINISH = """
-- KEYS: job, started registry, finished registry, results stream, worker
-- ARGV: member, now, result ttl, finished score, return value (b64 JSON), worker name, execution id,
--       started (unix), ended (unix), job id
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[5], 'state', 'idle', 'current_job', '', 'current_execution', '', 'last_heartbeat', ARGV[2])
redis.call('HINCRBY', KEYS[5], 'successful_job_count', 1)
if redis.call('EXISTS', KEYS[1]) == 0 then return 'deleted' end
redis.call('HSET', KEYS[1], 'status', 'finished', 'ended_at', ARGV[2], 'ferry_error', '')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[10])
redis.call('XADD', KEYS[4], 'MAXLEN', '10', '*', 'type', '1', 'worker_name', ARGV[6], 'return_value', ARGV[5],
           'execution_id', ARGV[7], 'execution_started_at', ARGV[8], 'execution_ended_at', ARGV[9])
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('PUBLISH', 'ferry:done', ARGV[10])
return 'finished'
"""

SETTLE_FAILURE = """
-- A failed, timed-out, cancelled or abandoned execution: requeue it while retries remain, else fail it.
-- KEYS: job, started registry, queue, failed registry, results stream, canceled registry
-- ARGV: member ('' when not registered), now, short error, exc string (b64 zlib), failure ttl,
--       failed score, retryable ('1'/'0'), worker name, job id, exc_info (zlib)
if ARGV[1] ~= '' and redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 'gone' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'deleted' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'started' then return status end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], 'ferry_error', 'canceled while running')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[6], ARGV[6], ARGV[9])
  redis.call('XADD', KEYS[5], 'MAXLEN', '10', '*', 'type', '3', 'worker_name', ARGV[8])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
  redis.call('PUBLISH', 'ferry:done', ARGV[9])
  return 'canceled'
end
local left = tonumber(redis.call('HGET', KEYS[1], 'retries_left') or '0') or 0
if ARGV[7] == '1' and left > 0 then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'retries_left', left - 1, 'ferry_error', ARGV[3],
             'enqueued_at', ARGV[2], 'worker_name', '')
  redis.call('HINCRBY', KEYS[1], 'number_of_retries', 1)
  redis.call('RPUSH', KEYS[3], ARGV[9])
  redis.call('PUBLISH', 'ferry:wake', '')
  return 'retried'
end
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[2], 'ferry_error', ARGV[3], 'exc_info', ARGV[10])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[9])
redis.call('XADD', KEYS[5], 'MAXLEN', '10', '*', 'type', '2', 'worker_name', ARGV[8], 'exc_string', ARGV[4])
redis.call('EXPIRE', KEYS[5], ARGV[5])
redis.call('PUBLISH', 'ferry:done', ARGV[9])
return 'failed'
"""

CANCEL = """
-- KEYS: job   ARGV: job id, now, failure ttl, score
local f = redis.call('HMGET', KEYS[1], 'status', 'origin', 'worker_name')
if not f[1] then return {'missing'} end
if f[1] == 'queued' then
  redis.call('LREM', 'rq:queue:' .. f[2], 0, ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], 'ferry_error', 'canceled before it ran')
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', 'rq:canceled:' .. f[2], ARGV[4], ARGV[1])
  redis.call('XADD', 'rq:results:' .. ARGV[1], 'MAXLEN', '10', '*', 'type', '3', 'worker_name', '')
  redis.call('EXPIRE', 'rq:results:' .. ARGV[1], ARGV[3])
  redis.call('PUBLISH', 'ferry:done', ARGV[1])
  return {'canceled'}
end
if f[1] == 'started' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', 'ferry:control:' .. f[3], 'cancel ' .. ARGV[1])
  return {'canceling'}
end
return {'already', f[1]}
"""


def queue_script(pipe: Pipeline, script: Script, keys: list[str], args: list[Any]) -> None:
    """Add `script` to a pipeline as a bare EVALSHA.

    redis-py's `script(client=pipe)` makes every `execute()` send SCRIPT EXISTS first: one more round
    trip per job on the worker's hot path. The caller loads the scripts once (`Scripts.load`) and, on
    NoScriptError (a restarted or flushed server), loads them again and retries.
    """
    pipe.evalsha(script.sha, len(keys), *keys, *args)


class Scripts:
    """The scripts bound to one connection (EVALSHA, reloaded by redis-py if the server forgot them)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.enqueue: Script = conn.register_script(ENQUEUE)
        self.claim: Script = conn.register_script(CLAIM)
        self.finish: Script = conn.register_script(FINISH)
        self.settle_failure: Script = conn.register_script(SETTLE_FAILURE)
        self.cancel: Script = conn.register_script(CANCEL)
        self._conn = conn

    def load(self) -> None:
        """Load every script into the server (for bare EVALSHA in pipelines, see `queue_script`)."""
        for script in (self.enqueue, self.claim, self.finish, self.settle_failure, self.cancel):
            script.sha = self._conn.script_load(script.script)
