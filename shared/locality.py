"""Locality-aware placement: nodes publish which objects they hold; a job goes first to the node holding its inputs.

Holdings. `ferry:holders:<object>` is the set of nodes whose shared memory holds the object, and
`ferry:node:<id>:holds` the node's own list (so its entries can be dropped). A worker process publishes
an object when it fetches it or adopts a result, and drops the ones it evicted in the same call; the
supervisor drops all of its node's entries at start and at stop; any reaper drops those of nodes whose
heartbeat is older than FERRY_ABANDONED_AFTER_S (a killed node). An entry that is briefly wrong only
costs an offer to the wrong node, never a wrong result: the job still reads its input from Redis there.

Placement. A submitter whose FERRY_PLACEMENT_DELAY_S is above 0 writes the job's inputs
(`ferry_input_objects` = `id:nbytes,...`) and the delay into its hash; ENQUEUE offers the job to the live node
holding the most of those bytes, for that long (lua_locality.py). The job stays in `rq:queue:<name>`
the whole time, so queue counts are exact; the preferred node's claims take it first, other nodes' claims
pass over it until the offer ends, and an idle worker that passed over offers sleeps only until the first
one ends (`idle_wait_s`), so no job waits longer than the delay on a busy, slow or dead node.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from shared.lifecycle import lua_locality
from shared.objects.ref import ObjectRef
from shared.settings import Settings
from shared.timeutil import unix_now

log = logging.getLogger("ferry.locality")

MIN_WAIT_S = 0.005


class Holdings:
    """Publishes what one node's shared memory holds (best effort: placement is an optimisation)."""

    def __init__(self, conn: redis.Redis, node_id: str) -> None:
        self.conn = conn
        self.node_id = node_id
        self._hold = conn.register_script(lua_locality.HOLD)

    def publish(self, held: list[str], dropped: list[str]) -> None:
        """Record objects now held and objects evicted, in one round trip."""
        entries = [f"+{oid}" for oid in held] + [f"-{oid}" for oid in dropped if oid not in held]
        if not entries:
            return
        try:
            self._hold(args=[self.node_id, *entries])
        except redis.RedisError as exc:
            log.debug("node %s: could not publish its holdings (%s)", self.node_id, exc)


def forget_node(conn: redis.Redis, node_id: str) -> None:
    """Drop everything the node published (its holdings, the jobs offered to it): at its start and stop."""
    conn.eval(lua_locality.FORGET, 0, node_id, 0)


def forget_dead_nodes(conn: redis.Redis, settings: Settings) -> list[str]:
    """Drop the holdings of nodes whose heartbeat is older than FERRY_ABANDONED_AFTER_S (run by every reaper)."""
    try:
        dropped = conn.eval(lua_locality.FORGET, 0, "", unix_now() - settings.abandoned_after_s)
    except redis.RedisError as exc:
        log.warning("locality: could not drop dead nodes' holdings (%s)", exc)
        return []
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in dropped]
    for name in names:
        log.info("node %s: no heartbeat for %ds; its object holdings are dropped", name, settings.abandoned_after_s)
    return names


def placement_fields(named: list[tuple[str, ObjectRef]], settings: Settings) -> list[Any]:
    """The job-hash fields that make ENQUEUE offer the job to the node holding its inputs (none if off or no input)."""
    if not named or settings.placement_delay_s <= 0:
        return []
    inputs = ",".join(f"{ref.id}:{ref.nbytes}" for _name, ref in named)
    return ["ferry_input_objects", inputs, "ferry_placement_delay_s", settings.placement_delay_s]


def idle_wait_s(offer_wait_s: float | None, poll_s: float) -> float:
    """How long an idle worker may sleep: its poll period, or less when an offer to another node ends sooner.

    Offers to this node would have been claimed; any left belong to other nodes, and their jobs are open
    to this worker once the offer ends. The claim that found nothing says when (`Claims.offer_wait_s`).
    """
    if offer_wait_s is None:
        return poll_s
    return max(MIN_WAIT_S, min(poll_s, offer_wait_s + MIN_WAIT_S))
