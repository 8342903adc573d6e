"""The promoter's scripts bound to one connection: the lease, moving due jobs, and the next due time.

See shared/delays.py for the data model and lua_delays.py for the scripts' gates.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from shared.lifecycle import lua, lua_delays
from shared.timeutil import rq_now, unix_now


class DueJobs:
    """Promote due jobs of RQ's scheduled registries to their queues; only the lease holder may."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn
        self._promote = conn.register_script(lua.PRELUDE + lua_delays.PROMOTE)
        self._next_due = conn.register_script(lua.PRELUDE + lua_delays.NEXT_DUE)
        self._lease = conn.register_script(lua_delays.LEASE)

    def hold_lease(self, holder: str, lease_s: float) -> bool:
        """Take the promoter lease if it is free, or extend it if `holder` has it; True when `holder` holds it."""
        return bool(self._lease(args=[holder, max(1, int(lease_s * 1000)), "hold"]))

    def release_lease(self, holder: str) -> None:
        """Give the lease up (a clean stop), so another node takes over at once rather than when it lapses."""
        self._lease(args=[holder, 0, "release"])

    def promote(self, holder: str, queues: Sequence[str], limit: int) -> tuple[int, bool]:
        """(jobs moved to their queues, whether more may be due); (-1, False) when `holder` lost the lease."""
        promoted, more = self._promote(args=[holder, repr(unix_now()), rq_now(), limit, *queues])
        return int(promoted), bool(more)

    def next_due(self, queues: Sequence[str], longest_sleep_s: float) -> float | None:
        """The earliest due time over `queues` (unix s), after recording when the promoter looks again."""
        expiry_ms = max(1000, int(longest_sleep_s * 3000))
        raw = self._next_due(args=[repr(unix_now()), longest_sleep_s, expiry_ms, *queues])
        return float(raw) if raw else None
