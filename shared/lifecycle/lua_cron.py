"""Cron ticks: FIRE (one tick becomes one job, once, whichever node fires it) and SKIP (a missed tick not run).

FIRE is the lifecycle's ENQUEUE script behind a gate: the schedule's state hash must hold a `last_tick`
older than this tick. The gate, the record of the tick and the enqueue are one atomic script, so of any
number of nodes firing the same tick exactly one enqueues, and a node dying before or after it leaves
the tick either untouched (another node fires it) or done. ENQUEUE's own text is reused, unchanged: its
keys and arguments come first, the cron ones are taken off the END of KEYS and ARGV before it runs.
"""

from __future__ import annotations

from shared.lifecycle import lua

LUA = ""  # no prelude functions: nothing is appended to lua.PRELUDE

_GATE = """
-- FIRE: ENQUEUE's KEYS then the schedule's state key; ENQUEUE's ARGV then the tick (unix s). Returns ENQUEUE's
-- {created, id}, or {0, '', 'already'} when this tick (or a later one) was fired or skipped.
local cron_state = table.remove(KEYS)
local cron_tick = table.remove(ARGV)
local cron_last = tonumber(redis.call('HGET', cron_state, 'last_tick') or '-1')
if cron_last >= tonumber(cron_tick) then return {0, '', 'already'} end
redis.call('HSET', cron_state, 'last_tick', cron_tick, 'last_job', ARGV[1])
redis.call('HINCRBY', cron_state, 'fired', 1)
"""

assert lua.ENQUEUE.startswith(lua.PRELUDE), "lua_cron reuses ENQUEUE's body after the prelude"
FIRE = lua.PRELUDE + _GATE + lua.ENQUEUE[len(lua.PRELUDE):]

SKIP = """
-- KEYS: the schedule's state   ARGV: the latest missed tick, how many ticks it stands for
-- Move last_tick forward without a job (a missed tick the catch-up policy does not run); 0 if already past.
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick') or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'last_tick', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[2])
return 1
"""
