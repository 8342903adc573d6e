"""The lifecycle's Lua scripts. Each job state change is one of them: one atomic step, safe to run twice.

Key names are not spelled here: the prelude is generated from `shared.keys` and `shared.job_metrics`,
so the scripts and the Python side agree by construction. Everything a script changes is gated on a
fact the first run destroys (a started-registry member removed, a status no longer `started`, a claim
record already naming this execution id), so a command that redis-py or Ferry sends again changes
nothing the second time: no second result entry, no second count, no second job popped.
"""

from __future__ import annotations

from shared import job_metrics, keys
from shared.job_status import FINAL_STATUSES
from shared.lifecycle import lua_delays, lua_jobsurface, lua_limits, lua_locality, lua_purge, lua_workflows

RESULT_ENTRIES_KEPT = 10  # a job's result stream keeps its last entries (RQ keeps 10 too)

# The layout of one claimed job in a claim reply; `lifecycle.Claimed.from_reply` reads it, `item()` writes it.
CLAIM_FIELDS = ("id", "queue", "data", "data_bytes", "timeout", "result_ttl", "failure_ttl", "enqueued_at", "task",
                "exec", "cancel_requested")

# A dispatched job's execution id starts with this (a worker's own claims use hex ids): see `dispatch`.
DISPATCH_PREFIX = "h"
DISPATCH_MESSAGE = "job "  # the start of a dispatch message: then each CLAIM_FIELDS value as `<length>:<bytes>`


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lua_concat(template: str, *names: str) -> str:
    """A Lua expression for `template` with each `@name@` replaced by the Lua variable `name`."""
    parts = [template]
    for name in names:
        parts = [piece for part in parts for piece in _split_keep(part, f"@{name}@")]
    is_name = lambda piece: len(piece) > 2 and piece.startswith("@") and piece.endswith("@")  # noqa: E731
    return " .. ".join(piece[1:-1] if is_name(piece) else _lua_string(piece) for piece in parts if piece)


def _split_keep(text: str, marker: str) -> list[str]:
    pieces = text.split(marker)
    out = [pieces[0]]
    for piece in pieces[1:]:
        out += [marker, piece]
    return out


_q = _lua_string
_REQUEUED_FIELD = _lua_concat(job_metrics.requeued_field("@q@", "@t@", "@r@"), "q", "t", "r")
_FINAL_ENTRIES = ", ".join(f"[{_lua_string(s)}] = true" for s in sorted(FINAL_STATUSES))

PRELUDE = f"""
local JOB, QUEUE, WIP = {_q(keys.job(''))}, {_q(keys.queue(''))}, {_q(keys.started(''))}
local FINISHED, FAILED, CANCELED = {_q(keys.finished(''))}, {_q(keys.failed(''))}, {_q(keys.canceled(''))}
local RESULTS, QUEUES, WORKER = {_q(keys.results(''))}, {_q(keys.RQ_QUEUES)}, {_q(keys.worker(''))}
local METRICS, DONE = {_q(job_metrics.METRICS_KEY)}, {_q(keys.DONE_CHANNEL)}
local IDLE, CLAIM, CONTROL = {_q(keys.IDLE_WORKERS)}, {_q(keys.claim(''))}, {_q(keys.control_channel(''))}
local IDLE_ON = {_q(keys.idle_on(''))}
local FINAL = {{{_FINAL_ENTRIES}}}
{lua_jobsurface.LUA}
local function jobs_field(q, t, o) return {_lua_concat(job_metrics.jobs_field("@q@", "@t@", "@o@"), "q", "t", "o")} end
local function requeued_field(q, t, r) return {_REQUEUED_FIELD} end

local function count(q, t, outcome) redis.call('HINCRBY', METRICS, jobs_field(q, t, outcome), 1) end

local function split(text)
  local out = {{}}
  for part in string.gmatch(text or '', '[^,]+') do out[#out + 1] = part end
  return out
end

-- Idle workers: IDLE (worker -> the queues it waits on) and one set per queue (IDLE_ON .. queue). A worker
-- is registered in the claim that found its queues empty, and taken off every set when it claims a job
-- or is woken.
local function set_idle(worker, qnames)
  redis.call('HSET', IDLE, worker, table.concat(qnames, ','))
  for _, q in ipairs(qnames) do redis.call('SADD', IDLE_ON .. q, worker) end
end

local function set_busy(worker)   -- returns the queues it was idle on (none if it was not idle)
  local was = redis.call('HGET', IDLE, worker)
  if not was then return {{}} end
  redis.call('HDEL', IDLE, worker)
  local qnames = split(was)
  for _, q in ipairs(qnames) do redis.call('SREM', IDLE_ON .. q, worker) end
  return qnames
end

-- A job for queue q: wake ONE idle worker waiting on it (busy workers find the job on their next claim), so
-- one enqueue costs one wake-up, not one per idle process. A worker that no longer listens (it died) is
-- skipped: PUBLISH counts the receivers.
local function wake(q)
  local ikey = IDLE_ON .. q
  while true do
    local worker = redis.call('SPOP', ikey)
    if not worker then return end
    set_busy(worker)
    if redis.call('PUBLISH', CONTROL .. worker, 'wake') > 0 then return end
  end
end

local function task_of(jkey, given)
  if given and given ~= '' then return given end
  return redis.call('HGET', jkey, 'ferry_task') or 'unknown'
end

-- A result-stream entry (RQ's layout), kept as long as the job: every final state writes one.
local function result_entry(id, ttl, ...)
  redis.call('XADD', RESULTS .. id, 'MAXLEN', '{RESULT_ENTRIES_KEPT}', '*', ...)
  redis.call('EXPIRE', RESULTS .. id, ttl)
end
{lua_limits.LUA}
{lua_locality.LUA}
{lua_workflows.LUA}

-- One claimed job, in CLAIM_FIELDS order. Data over the bound is not sent: the worker fails the job.
local function item(id, qname, maxdata, exec)
  local jkey = JOB .. id
  local size = redis.call('HSTRLEN', jkey, 'data')
  local f = redis.call('HMGET', jkey, 'timeout', 'result_ttl', 'failure_ttl', 'enqueued_at', 'ferry_task',
                       'cancel_requested')
  local data = ''
  if size <= maxdata then data = redis.call('HGET', jkey, 'data') or '' end
  return {{id, qname, data, size, f[1] or '', f[2] or '', f[3] or '', f[4] or '', f[5] or '', exec, f[6] or ''}}
end

-- The worker's claim record: `exec` (its latest claim) and `ids`, every job it holds in the order it runs
-- them, as `id@queue@exec` (a refill claimed while the last prefetched job runs comes after that job).
local function entries(text)
  local out = {{}}
  for _, entry in ipairs(split(text)) do
    local id, qname, exec = string.match(entry, '^([^@]+)@([^@]+)@(.*)$')
    if id then out[#out + 1] = {{id, qname, exec}} end
  end
  return out
end

-- Claim up to `n` jobs for execution `exec`. A repeat with the same execution id (a re-sent command)
-- returns what the first run claimed, from the worker's claim record, and pops nothing. The second value:
-- when nothing was claimed because other nodes' offers hold the jobs, the ms until the first offer ends
-- (the idle worker looks again then), else -1. A claim by an idle worker (no `current` job) also returns
-- the jobs dispatched to it that it may not have received yet (it drops those it has: same execution id).
local function claim(worker, now, deadline, exec, n, ttl, maxdata, qnames, current)
  local rkey = CLAIM .. worker
  local wkey = WORKER .. worker
  local rec = redis.call('HMGET', rkey, 'exec', 'ids')
  local out = {{}}
  local idle = not current or current == ''
  local function registered(e) return redis.call('ZSCORE', WIP .. e[2], e[1] .. ':' .. e[3]) end
  local function undelivered(e) return idle and string.sub(e[3], 1, 1) == {_q(DISPATCH_PREFIX)} end
  if rec[1] == exec then
    for _, e in ipairs(entries(rec[2])) do
      if e[3] == exec or (undelivered(e) and registered(e)) then out[#out + 1] = item(e[1], e[2], maxdata, e[3]) end
    end
    return out, -1
  end
  local held = {{}}
  for _, e in ipairs(entries(rec[2])) do   -- jobs still held from earlier claims stay first
    if registered(e) then
      held[#held + 1] = table.concat(e, '@')
      if undelivered(e) then out[#out + 1] = item(e[1], e[2], maxdata, e[3]) end
    end
  end
  local claimed = 0
  local offered_queues = {{}}
  qnames = unpaused(qnames)
  promote_preferred(worker, n, qnames)   -- locality: this node's offered jobs first (lua_locality.py)
  for _, qname in ipairs(qnames) do
    local qkey = QUEUE .. qname
    local offered = has_offers(qname)
    if offered then offered_queues[#offered_queues + 1] = qname end
    while claimed < n do
      local id = next_job(qkey, qname, worker, offered)
      if not id then break end
      local jkey = JOB .. id
      local f = redis.call('HMGET', jkey, 'status', 'ferry_limits')
      local admit, stop = limits_admit(f, id, qname, worker, exec, claimed)
      if stop then break end
      if admit then   -- canceled or deleted jobs are skipped, jobs over a limit set aside
        redis.call('HSET', jkey, 'status', 'started', 'started_at', now, 'last_heartbeat', now, 'worker_name', worker)
        redis.call('ZADD', WIP .. qname, deadline, id .. ':' .. exec)
        held[#held + 1] = id .. '@' .. qname .. '@' .. exec
        out[#out + 1] = item(id, qname, maxdata, exec)
        rq_exec_start(id, exec, worker)
        claimed = claimed + 1
      end
    end
    if claimed >= n then break end
  end
  redis.call('HSET', rkey, 'exec', exec, 'ids', table.concat(held, ','))
  redis.call('EXPIRE', rkey, ttl)
  if current and current ~= '' then
    redis.call('HSET', wkey, 'state', 'busy', 'current_job', current, 'last_heartbeat', now)
    if #out > 0 then set_busy(worker) end   -- still running `current`: its next finish claims again
  elseif #out > 0 then
    redis.call('HSET', wkey, 'state', 'busy', 'current_job', out[1][1], 'current_execution', out[1][1] .. ':' .. exec,
               'current_queue', out[1][2], 'last_heartbeat', now)
    set_busy(worker)
  else
    -- registered idle in the same step that found every queue empty: an enqueue after this wakes it
    redis.call('HSET', wkey, 'state', 'idle', 'current_job', '', 'current_execution', '', 'last_heartbeat', now)
    set_idle(worker, qnames)   -- not on paused queues: an enqueue there wakes nobody; a resume wakes all
    -- what `dispatch` needs to claim for it: its heartbeat deadline (s from now), record ttl, data bound
    redis.call('HSET', rkey, 'dispatch', (tonumber(deadline) - js_time()) .. ' ' .. ttl .. ' ' .. maxdata)
  end
  return out, offer_wait_ms(offered_queues, #out)
end

local function histograms(a)
  if a.run_field ~= '' then
    redis.call('HINCRBY', METRICS, a.run_field, 1)
    redis.call('HINCRBYFLOAT', METRICS, a.run_sum_field, a.run_s)
    redis.call('HINCRBY', METRICS, a.wait_field, 1)
    redis.call('HINCRBYFLOAT', METRICS, a.wait_sum_field, a.wait_s)
  end
end

{lua_delays.LUA}
-- A failed, timed-out, canceled or abandoned execution: requeue it while retries remain, else fail it.
-- Gated on removing the execution's registry member: only the first caller (worker, supervisor, reaper,
-- or a re-sent command) changes anything.
local function settle(a)
  if redis.call('ZREM', WIP .. a.queue, a.id .. ':' .. a.exec) == 0 then return 'gone' end
  rq_exec_end(a.id, a.exec, a.worker)
  local jkey = JOB .. a.id
  local f = redis.call('HMGET', jkey, 'status', 'cancel_requested', 'retries_left', 'failure_ttl', 'ferry_limits',
                       'rate_limit_key')
  limits_release(a.id, a.exec, f[5])
  if not f[1] then return 'deleted' end
  if f[1] ~= 'started' then return f[1] end
  local task = task_of(jkey, a.task)
  local ttl = tonumber(f[4] or '') or a.failure_ttl
  histograms(a)
  if f[2] == '1' then
    redis.call('HSET', jkey, 'status', 'canceled', 'ended_at', a.now, 'ferry_error', 'canceled while running')
    redis.call('EXPIRE', jkey, ttl)
    redis.call('ZADD', CANCELED .. a.queue, a.now_unix + ttl, a.id)
    result_entry(a.id, ttl, 'type', '3', 'worker_name', a.worker)
    count(a.queue, task, 'canceled')
    rq_release(a.id, f[6], a.now, a.now_unix)
    idem_release(jkey, a.id)
    redis.call('PUBLISH', DONE, a.id)
    wf_final(a.id, a.now, a.now_unix, '')
    return 'canceled'
  end
  note_attempt_error(jkey, a)   -- lua_delays
  local left = tonumber(f[3] or '0') or 0
  if a.retryable == '1' and left > 0 then
    if retry_later(a, jkey, left, task) then return 'retried' end   -- a back-off (lua_delays)
    redis.call('HSET', jkey, 'status', 'queued', 'retries_left', left - 1, 'ferry_error', a.short,
               'enqueued_at', a.now, 'worker_name', '')
    redis.call('HINCRBY', jkey, 'number_of_retries', 1)
    if a.front == '1' then redis.call('LPUSH', QUEUE .. a.queue, a.id)
    else redis.call('RPUSH', QUEUE .. a.queue, a.id) end
    count(a.queue, task, 'retried')
    if a.reason ~= '' then redis.call('HINCRBY', METRICS, requeued_field(a.queue, task, a.reason), 1) end
    wake(a.queue)
    return 'retried'
  end
  redis.call('HSET', jkey, 'status', 'failed', 'ended_at', a.now, 'ferry_error', a.short, 'exc_info', a.exc_info)
  redis.call('EXPIRE', jkey, ttl)
  redis.call('ZADD', FAILED .. a.queue, a.now_unix + ttl, a.id)
  result_entry(a.id, ttl, 'type', '2', 'worker_name', a.worker, 'exc_string', a.exc_string)
  count(a.queue, task, 'failed')
  rq_release(a.id, f[6], a.now, a.now_unix)
  idem_release(jkey, a.id)
  redis.call('PUBLISH', DONE, a.id)
  wf_final(a.id, a.now, a.now_unix, '')
  return 'failed'
end

-- Give back a claimed job that never started running (prefetched): front of its queue, no retry used.
local function release(id, qname, exec)
  if redis.call('ZREM', WIP .. qname, id .. ':' .. exec) == 0 then return 'gone' end
  rq_exec_end(id, exec)
  local jkey = JOB .. id
  local f = redis.call('HMGET', jkey, 'status', 'ferry_limits')
  local status = f[1]
  limits_release(id, exec, f[2])
  if status ~= 'started' then return status or 'deleted' end
  redis.call('HSET', jkey, 'status', 'queued', 'worker_name', '', 'started_at', '')
  redis.call('LPUSH', QUEUE .. qname, id)
  wake(qname)
  return 'released'
end

-- Everything a dead worker held, from its claim record: the first job still registered was running (or
-- about to run) and is settled (a retry used, front of the queue); the ones behind it never started and
-- are released. Returns {{{{id, outcome}}, ...}}.
local function requeue_held(worker, exec_wanted, a)
  local rkey = CLAIM .. worker
  local held = entries(redis.call('HGET', rkey, 'ids'))
  local out = {{}}
  local first, wanted = nil, exec_wanted == ''
  for i, e in ipairs(held) do
    if e[3] == exec_wanted then wanted = true end
    if not first and redis.call('ZSCORE', WIP .. e[2], e[1] .. ':' .. e[3]) then first = i end
  end
  if not wanted then return out end
  if first then
    for i = #held, first, -1 do
      local id, qname, exec = held[i][1], held[i][2], held[i][3]
      local outcome
      if i == first then
        a.id, a.queue, a.exec = id, qname, exec
        outcome = settle(a)
      else
        outcome = release(id, qname, exec)
      end
      if outcome ~= 'gone' then out[#out + 1] = {{id, outcome}} end
    end
  end
  redis.call('DEL', rkey)
  set_busy(worker)
  return out
end

-- A job for queue q goes straight to ONE idle worker waiting on it: the enqueue claims it for that worker
-- (a fresh execution id starting with DISPATCH_PREFIX) and publishes the claimed job on the worker's
-- control channel, so the worker runs it without a claim round trip of its own. `now` is the enqueue's
-- time (RQ format). A worker that does not listen any more (PUBLISH counts no receiver) gets nothing:
-- the job is given back to the front of its queue and the next idle worker woken. A worker registered
-- idle without dispatch details is woken as before, and so is one for which the claim found nothing
-- (the job set aside by a limit, or offered to another node): it claims itself and learns why.
local function dispatch(q, now)
  local ikey = IDLE_ON .. q
  while true do
    local worker = redis.call('SPOP', ikey)
    if not worker then return end
    local qnames = set_busy(worker)
    local how = redis.call('HGET', CLAIM .. worker, 'dispatch')
    if redis.call('EXISTS', WORKER .. worker) == 1 then   -- else its node died: its record expired
      if not how or not now or now == '' then
        if redis.call('PUBLISH', CONTROL .. worker, 'wake') > 0 then return end
      else
        local offset, ttl, maxdata = string.match(how, '^(%S+) (%S+) (%S+)$')
        local t = redis.call('TIME')
        local exec = {_q(DISPATCH_PREFIX)} .. t[1] .. string.format('%06d', tonumber(t[2]))
        local out = claim(worker, now, js_time() + tonumber(offset), exec, 1, ttl, tonumber(maxdata), qnames, '')
        if #out == 0 then redis.call('PUBLISH', CONTROL .. worker, 'wake') return end
        local fields = {{{_q(DISPATCH_MESSAGE)}}}
        for _, value in ipairs(out[1]) do
          value = tostring(value)
          fields[#fields + 1] = #value .. ':' .. value
        end
        if redis.call('PUBLISH', CONTROL .. worker, table.concat(fields)) > 0 then return end
        release(out[1][1], out[1][2], exec)   -- front of its queue again; wakes the next idle worker
        return
      end
    end
  end
end

-- A stopping worker: off the idle sets (nothing is dispatched to it any more), and every job still claimed
-- in its name that it never started (dispatched while it stopped) back to the front of its queue.
local function retire(worker)
  set_busy(worker)
  local held = entries(redis.call('HGET', CLAIM .. worker, 'ids'))
  local out = {{}}
  for i = #held, 1, -1 do
    local outcome = release(held[i][1], held[i][2], held[i][3])
    if outcome ~= 'gone' then out[#out + 1] = {{held[i][1], outcome}} end
  end
  return out
end
"""

# The prelude's variables that hold state for one call (a cached TIME, a count of jobs set aside): a Redis
# function keeps the prelude's variables between calls, so every function body starts by resetting these
# (functions.py). tests/shared/test_lifecycle.py checks that no other prelude variable is assigned in a function.
PER_CALL_STATE = {"js_now": "nil", "asides": "0"}

# Arguments of a settle, in ARGV order after any script-specific ones (see `lifecycle.Failure`).
SETTLE_ARGS = ("id", "queue", "exec", "now", "now_unix", "short", "exc_string", "exc_info", "failure_ttl", "retryable",
               "worker", "task", "reason", "front", "run_field", "run_sum_field", "run_s", "wait_field",
               "wait_sum_field", "wait_s", "retry_due")


def _named(names: tuple[str, ...], first: int) -> str:
    """Lua: a table `a` of ARGV[first...] by name."""
    fields = ", ".join(f"{name} = ARGV[{first + i}]" for i, name in enumerate(names))
    return f"local a = {{{fields}}}\na.now_unix = tonumber(a.now_unix)\na.failure_ttl = tonumber(a.failure_ttl)"


ENQUEUE = PRELUDE + """
-- KEYS: job, queue, idempotency key ('' for none), RQ's scheduled registry ('' unless delayed), tag indexes...
-- ARGV: id, queue name, idempotency ttl, field, value, ...
if KEYS[3] ~= '' then
  local taken = idem_take(KEYS[3], ARGV[1], ARGV[3], ARGV)
  if taken then return taken end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ARGV[1]} end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if #KEYS > 4 then tag_job(ARGV[1], KEYS, ARGV[3]) end   -- tags (lua_jobsurface)
if KEYS[4] and KEYS[4] ~= '' then return schedule_new(KEYS, ARGV) end   -- a delayed job (lua_delays)
redis.call('SADD', QUEUES, KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
offer(KEYS[1], ARGV[1], ARGV[2])
dispatch(ARGV[2], js_field(ARGV, 4, 'enqueued_at'))
return {1, ARGV[1]}
"""

CLAIM_ARGS = ("worker", "now", "deadline", "exec", "n", "ttl", "maxdata")

CLAIM_SCRIPT = PRELUDE + """
-- ARGV: worker, now (RQ), deadline, execution id, how many, record ttl, max data bytes, queue names...
-- Reply: {claimed jobs, ms until another node's offer ends or -1}
local out, wait_ms = claim(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]),
                           {unpack(ARGV, 8)})
return {out, wait_ms}
"""

FINISH_ARGS = ("id", "queue", "exec", "now", "now_unix", "result_ttl", "payload", "worker", "started", "ended", "task",
               "run_field", "run_sum_field", "run_s", "wait_field", "wait_sum_field", "wait_s", "next_job",
               "stats_key", "stats", "claim_n", "next_exec", "deadline", "ttl", "maxdata", "result_objects")

FINISH = PRELUDE + f"""
-- Record a finished execution, then (claim_n > 0) claim the next jobs: one round trip per job.
-- Reply: {{outcome, claimed jobs, ms until another node's offer ends or -1}} (see claim)
-- ARGV: FINISH_ARGS, then queue names to claim from. stats = 'name=value,...' cache counters for stats_key.
{_named(FINISH_ARGS, 1)}
local jkey = JOB .. a.id
local wkey = WORKER .. a.worker
redis.call('ZREM', WIP .. a.queue, a.id .. ':' .. a.exec)
local f = redis.call('HMGET', jkey, 'status', 'origin', 'ferry_limits', 'rate_limit_key')
limits_release(a.id, a.exec, f[3])
local outcome
if not f[1] then
  outcome = 'deleted'
elseif FINAL[f[1]] then
  outcome = 'already'   -- a re-sent finish, or the job ended elsewhere: nothing is written twice
else
  -- started by us; or requeued (then taken back) after a late heartbeat: the body ran, keep its result
  if f[1] == 'queued' then redis.call('LREM', QUEUE .. (f[2] or a.queue), 0, a.id) end
  local ttl = tonumber(a.result_ttl)
  redis.call('HSET', jkey, 'status', 'finished', 'ended_at', a.now, 'ferry_error', '')
  if a.result_objects ~= '' then redis.call('HSET', jkey, 'ferry_result_objects', a.result_objects) end
  redis.call('EXPIRE', jkey, ttl)
  redis.call('ZADD', FINISHED .. a.queue, a.now_unix + ttl, a.id)
  result_entry(a.id, ttl, 'type', '1', 'worker_name', a.worker, 'return_value', a.payload,
               'execution_id', a.exec, 'execution_started_at', a.started, 'execution_ended_at', a.ended)
  redis.call('HINCRBY', wkey, 'successful_job_count', 1)
  rq_exec_end(a.id, a.exec, a.worker)
  count(a.queue, a.task, 'finished')
  rq_release(a.id, f[4], a.now, a.now_unix)
  histograms(a)
  if a.stats_key ~= '' then
    for name, value in string.gmatch(a.stats, '([^=,]+)=([^,]+)') do
      if name == 'resident_bytes' then redis.call('HSET', a.stats_key, name, value)
      else redis.call('HINCRBY', a.stats_key, name, value) end
    end
  end
  redis.call('PUBLISH', DONE, a.id)
  wf_final(a.id, a.now, a.now_unix, a.payload)
  outcome = 'finished'
end
local n = tonumber(a.claim_n)
if n > 0 then
  local out, wait_ms = claim(a.worker, a.now, a.deadline, a.next_exec, n, a.ttl, tonumber(a.maxdata),
                             {{unpack(ARGV, {len(FINISH_ARGS) + 1})}}, a.next_job)
  return {{outcome, out, wait_ms}}
end
if a.next_job ~= '' then
  redis.call('HSET', wkey, 'current_job', a.next_job, 'state', 'busy')
else
  redis.call('HSET', wkey, 'state', 'idle', 'current_job', '', 'current_execution', '', 'last_heartbeat', a.now)
end
return {{outcome, {{}}, -1}}
"""

SETTLE = PRELUDE + f"""
-- ARGV: SETTLE_ARGS
{_named(SETTLE_ARGS, 1)}
local outcome = settle(a)
return outcome
"""

REQUEUE_HELD = PRELUDE + f"""
-- A worker process died: settle what it held. ARGV: worker, execution id ('' any), SETTLE_ARGS (id/queue/exec unused)
{_named(SETTLE_ARGS, 3)}
return requeue_held(ARGV[1], ARGV[2], a)
"""

RELEASE = PRELUDE + """
-- A stopping worker gives back claimed jobs it never started. ARGV: worker, execution id, id@queue... (in claim order)
local out = {}
for i = #ARGV, 3, -1 do
  local id, qname = string.match(ARGV[i], '^([^@]+)@(.*)$')
  out[#out + 1] = {id, release(id, qname, ARGV[2])}
end
return out
"""

RETIRE = PRELUDE + """
-- ARGV: worker. Reply: {{id, outcome}, ...} for the jobs given back.
return retire(ARGV[1])
"""

REAP = PRELUDE + f"""
-- Started jobs whose heartbeat deadline passed (their node, or its supervisor, is gone). ARGV: limit, SETTLE_ARGS
{_named(SETTLE_ARGS, 2)}
local out = {{}}
local limit = tonumber(ARGV[1])
for _, qkey in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local qname = string.sub(qkey, string.len(QUEUE) + 1)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', WIP .. qname, '-inf', a.now_unix, 'LIMIT', 0, limit)) do
    local id, exec = string.match(member, '^([^:]+):(.*)$')
    if id then
      local worker = redis.call('HGET', JOB .. id, 'worker_name') or ''
      local held = {{}}
      if worker ~= '' then held = requeue_held(worker, exec, a) end
      if #held == 0 and redis.call('ZSCORE', WIP .. qname, member) then
        a.id, a.queue, a.exec, a.worker = id, qname, exec, ''
        held = {{{{id, settle(a)}}}}
      end
      for _, pair in ipairs(held) do out[#out + 1] = pair end
    else
      redis.call('ZREM', WIP .. qname, member)
    end
  end
  for _, prefix in ipairs({{FINISHED, FAILED, CANCELED}}) do
    redis.call('ZREMRANGEBYSCORE', prefix .. qname, '-inf', a.now_unix)   -- entries are scored by expiry
  end
end
-- idle workers whose record expired (their node died): else every enqueue would publish for nobody
for _, worker in ipairs(redis.call('HKEYS', IDLE)) do
  if redis.call('EXISTS', WORKER .. worker) == 0 then set_busy(worker) end
end
return out
"""

PROMOTE = PRELUDE + lua_limits.PROMOTE

CANCEL = PRELUDE + """
-- KEYS: job   ARGV: job id, now (RQ), failure ttl, now (unix)
local f = redis.call('HMGET', KEYS[1], 'status', 'origin', 'worker_name', 'ferry_waiting')
if not f[1] then return {'missing'} end
if f[1] == 'scheduled' then return cancel_scheduled(KEYS[1], ARGV, f[2]) end
if f[1] == 'queued' then
  if f[4] then limits_unwait(KEYS[1], f[2]) end
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'failure_ttl') or '') or tonumber(ARGV[3])
  redis.call('LREM', QUEUE .. f[2], 0, ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], 'ferry_error', 'canceled before it ran')
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZADD', CANCELED .. f[2], tonumber(ARGV[4]) + ttl, ARGV[1])
  result_entry(ARGV[1], ttl, 'type', '3', 'worker_name', '')
  count(f[2], task_of(KEYS[1], ''), 'canceled')
  idem_release(KEYS[1], ARGV[1])
  redis.call('PUBLISH', DONE, ARGV[1])
  wf_final(ARGV[1], ARGV[2], tonumber(ARGV[4]), '')
  return {'canceled'}
end
if f[1] == 'started' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', CONTROL .. (f[3] or ''), 'cancel ' .. ARGV[1])
  return {'canceling'}
end
if f[1] == 'deferred' then return wf_cancel_deferred(ARGV[1], f[2], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])) end
return {'already', f[1]}
"""

REQUEUE_FAILED = PRELUDE + """
-- `ferry requeue`: a failed job back on its queue for one more attempt. ARGV: job id, queue, now (RQ)
local jkey = JOB .. ARGV[1]
if redis.call('ZREM', FAILED .. ARGV[2], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', jkey, 'status') ~= 'failed' then return 0 end
redis.call('HSET', jkey, 'status', 'queued', 'enqueued_at', ARGV[3], 'ferry_error', '', 'ended_at', '')
redis.call('PERSIST', jkey)
redis.call('DEL', RESULTS .. ARGV[1])
redis.call('RPUSH', QUEUE .. ARGV[2], ARGV[1])
wake(ARGV[2])
return 1
"""

WF_SUBMIT = PRELUDE + lua_workflows.WF_SUBMIT_BODY
WF_CANCEL = PRELUDE + lua_workflows.WF_CANCEL_BODY
PURGE = PRELUDE + lua_purge.PURGE_BODY
