"""The promoter: moves delayed jobs whose due time has come onto their queues, on one node at a time.

Every node runs this thread; only the holder of the promoter lease (`ferry:promoter`, SET NX PX of
FERRY_PROMOTER_LEASE_S, renewed every third of it) promotes, and the promote script itself refuses a
caller that is not the holder, so a node that lost the lease (stalled, cut off) moves nothing. When the
holder dies its lease lapses and another node takes over within FERRY_PROMOTER_LEASE_S plus a third.

Precision: the holder sleeps until the earliest due time (capped by FERRY_SCHEDULED_POLL_S, which also
bounds how late a plain-RQ `enqueue_at` job is seen, since RQ publishes nothing), and is woken on
`ferry:delays:wake` when a job due sooner is scheduled. Due jobs move FERRY_PROMOTE_BATCH_JOBS per call.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis

from services.worker.outage import Outage
from shared import keys
from shared.lifecycle.scheduled import DueJobs
from shared.redis_conn import connect
from shared.replies import texts
from shared.settings import Settings
from shared.timeutil import unix_now

log = logging.getLogger("ferry.promoter")

QUEUES_REFRESH_S = 1.0  # how often the set of queues that live nodes serve is read again
OUTAGE_PAUSE_S = 0.5


class Promoter(threading.Thread):
    """One per node, a daemon thread of the supervisor with its own connections."""

    def __init__(self, settings: Settings, redis_url: str, node_id: str, queues: list[str]) -> None:
        super().__init__(name="ferry-promoter", daemon=True)
        self.settings = settings
        self.redis_url = redis_url
        self.node_id = node_id
        self.own_queues = list(queues)
        self.stopping = threading.Event()
        self.holding = False
        self.promoted = 0  # jobs this node moved (for logs and tests)
        self._queues: list[str] = list(queues)
        self._queues_read = 0.0

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop and give the lease up, so another node takes over at once."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        conn = connect(self.redis_url)
        due_jobs = DueJobs(conn)
        outage = Outage(f"promoter {self.node_id}", self.redis_url, log)
        pubsub = conn.pubsub(ignore_subscribe_messages=True)
        try:
            while not self.stopping.is_set():
                try:
                    if not pubsub.subscribed:
                        pubsub.subscribe(keys.DELAYS_WAKE_CHANNEL)
                    self._wait(pubsub, self._step(conn, due_jobs))
                    outage.ok()
                except redis.RedisError as exc:
                    outage.failed(exc, "promoting due jobs")
                    self._drop(pubsub)
                    pubsub = conn.pubsub(ignore_subscribe_messages=True)
                    self.stopping.wait(OUTAGE_PAUSE_S)
            if self.holding:
                due_jobs.release_lease(self.node_id)
        except redis.RedisError:
            pass  # stopping during an outage: the lease lapses by itself
        finally:
            self._drop(pubsub)
            conn.close()

    def _step(self, conn: redis.Redis, due_jobs: DueJobs) -> float:
        """Renew or take the lease, promote what is due; the seconds to sleep before the next step."""
        lease_s = self.settings.promoter_lease_s
        renew_s = lease_s / 3
        started = time.monotonic()
        holding = due_jobs.hold_lease(self.node_id, lease_s)
        self._note_lease(holding)
        if not holding:
            return renew_s
        queues = self._served_queues(conn)
        while True:
            moved, more = due_jobs.promote(self.node_id, queues, self.settings.promote_batch_jobs)
            if moved < 0:
                self._note_lease(False)
                return renew_s
            self.promoted += moved
            if moved:
                log.debug("promoter %s: %d due jobs queued", self.node_id, moved)
            if not more:
                break
            if time.monotonic() - started > renew_s:
                return 0.0  # a long backlog: renew the lease before going on
        poll = self.settings.scheduled_poll_s
        earliest = due_jobs.next_due(queues, poll)
        sleep = poll if earliest is None else min(poll, max(0.0, earliest - unix_now()))
        return min(sleep, max(0.0, renew_s - (time.monotonic() - started)))

    def _wait(self, pubsub: redis.client.PubSub, seconds: float) -> None:
        """Sleep up to `seconds`, ending early on a wake-up (a job due sooner) or a stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if pubsub.get_message(timeout=min(remaining, 0.25)) is not None:
                while pubsub.get_message(timeout=0) is not None:
                    pass  # several wake-ups ask for the same thing: one look at the registries
                return

    def _note_lease(self, holding: bool) -> None:
        if holding != self.holding:
            if holding:
                log.info("promoter %s: holding the promoter lease; this node moves due delayed jobs", self.node_id)
            else:
                log.info("promoter %s: not (or no longer) the promoter; another node moves due jobs", self.node_id)
        self.holding = holding

    def _served_queues(self, conn: redis.Redis) -> list[str]:
        """The queues live nodes serve (this node's first): a queue nobody serves keeps its delayed jobs."""
        now = time.monotonic()
        if now - self._queues_read < QUEUES_REFRESH_S:
            return self._queues
        alive_since = unix_now() - self.settings.abandoned_after_s
        nodes = texts(conn.zrangebyscore(keys.NODES, alive_since, "+inf"))
        pipe = conn.pipeline(transaction=False)
        for node in nodes:
            pipe.hmget(keys.node(node), "queues", "state")
        queues = list(self.own_queues)
        for raw, state in pipe.execute() if nodes else []:
            if state == b"stopped" or not raw:
                continue
            try:
                queues += [q for q in json.loads(raw) if isinstance(q, str) and q not in queues]
            except ValueError:
                continue
        self._queues, self._queues_read = queues, now
        return queues

    @staticmethod
    def _drop(pubsub: redis.client.PubSub) -> None:
        try:
            pubsub.close()
        except (redis.RedisError, OSError):
            pass
