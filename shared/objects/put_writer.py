"""A node's side of a put written behind (local_put.py): it writes the objects put into its memory to Redis.

Who writes, and why it survives anything but the loss of the host: the client's put leaves the bytes in
a segment of a live node's /dev/shm space and a marker `ferry:obj:<id>:pending` naming that node (and
host), indexed in `ferry:objects:puts`; so the client may exit as soon as `put` returns. Every node runs a
`PutWriter` thread in its supervisor (niced, like the result writer):
- it writes its own node's marked objects from their segments (zero-copy: the chunks are sent from the
  mapped segment), then deletes the marker (the meta is published first: readers never see neither);
- it takes over a marked object of ANOTHER node of this deployment on the same host that is no longer
  alive (its alive byte is free) while that node's segment is still here;
- at a node's start, before its old files are swept, `finish_own` writes what the previous run of that
  node id left unwritten (its segments are still in /dev/shm);
- a graceful stop writes everything still pending before the node's files are swept.
Only when the host is lost (the segment is gone with it) is the object lost: a marker whose node has sent
no heartbeat for LOST_AFTER_FACTOR x FERRY_ABANDONED_AFTER_S, and that nobody took over, is replaced by a
tombstone, so readers and jobs fail with an error naming the object and what to do.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from shared import keys
from shared.errors import FerryError
from shared.objects import segments
from shared.objects.lifetime import parse_shape_field
from shared.objects.local_put import node_alive_here
from shared.objects.ref import ObjectKind, ObjectRef, mismatch
from shared.objects.shm import deployment_id
from shared.objects.store import ObjectStore
from shared.redis_conn import connect
from shared.replies import text, texts
from shared.settings import Settings
from shared.timeutil import unix_now

log = logging.getLogger("ferry.put_writer")

BATCH = 200  # markers looked at per pass
LOST_AFTER_FACTOR = 3  # x FERRY_ABANDONED_AFTER_S without a heartbeat from the marker's node: the object is lost
TOMBSTONE_TTL_S = 7 * 86_400
WRITER_NICENESS = 10  # below the node's jobs (Linux: per thread)
RETRY_S = 1.0
YIELD_MAX_S = 1.0  # per object: the most a write waits, in total, for the node's workers to be idle
START_AFTER_S = 0.25  # ... of which the first: the jobs submitted right after a put start before the write
YIELD_STEP_S = 0.01


class PutWriter:
    """Writes puts marked for this node (or for a dead node of this host) from /dev/shm to Redis."""

    def __init__(self, settings: Settings, redis_url: str, node_id: str, shm_dir: os.PathLike[str] | str,
                 processes: int = 0) -> None:
        self.settings, self.node_id, self.processes = settings, node_id, processes
        self.shm_dir = Path(shm_dir)
        self.conn = connect(redis_url)
        self.store = ObjectStore(self.conn, settings.object_chunk_bytes, settings.object_ttl_s)
        self.deployment = deployment_id(self.conn)
        self._wake = connect(redis_url)  # its own connection: the doorbell BLPOP blocks it
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PutWriter:
        self._thread = threading.Thread(target=self._run, name="ferry-put-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write everything still pending for this node (a graceful stop), then stop the thread."""
        self._stopping.set()
        if self._thread is not None:
            try:
                self.conn.rpush(keys.node_puts(self.node_id), "")  # wakes the BLPOP at once
            except redis.RedisError:
                pass
            self._thread.join()
        try:
            self.write_pending(own_only=True)
        except Exception as exc:  # noqa: BLE001 - a stop must go on; the segments stay for a restart
            log.error("node %s: stopping with puts not yet written to Redis (%s); the stop's sweep removes their "
                      "only copy, so readers will be told to put them again", self.node_id, exc)
        self.conn.close()
        self._wake.close()

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        except OSError:
            pass
        while not self._stopping.is_set():
            try:
                self.write_pending()
                self._wake.blpop([keys.node_puts(self.node_id)], timeout=1)
            except redis.RedisError as exc:
                log.debug("node %s: put writer: %s", self.node_id, exc)
                self._stopping.wait(RETRY_S)
            except Exception:  # never let the thread die: pending puts would wait for a restart
                log.exception("node %s: put writer failed; trying again", self.node_id)
                self._stopping.wait(RETRY_S)

    def write_pending(self, own_only: bool = False) -> list[str]:
        """One pass over the marked puts; returns the ids written to Redis."""
        written = []
        for object_id in texts(self.conn.zrange(keys.PUTS_PENDING, 0, BATCH - 1)):
            marker = {text(k): text(v) for k, v in self.conn.hgetall(keys.object_pending(object_id)).items()}
            if marker.get("put") != "1":  # written (marker gone) or never a put's marker
                self.conn.zrem(keys.PUTS_PENDING, object_id)
                continue
            node = marker["node"]
            if node != self.node_id:
                if own_only:
                    continue
                here = (self.shm_dir / keys.segment(self.deployment, node, object_id)).exists()
                if not here or node_alive_here(self.shm_dir, self.deployment, node):
                    self._maybe_lost(object_id, marker)
                    continue
                log.warning("object %s: node %s died before writing it to Redis; node %s writes it from its memory",
                            object_id, node, self.node_id)
            if self._write(object_id, marker, node):
                written.append(object_id)
        return written

    def _write(self, object_id: str, marker: dict[str, str], node: str) -> bool:
        ref = ObjectRef(id=object_id, kind=ObjectKind(marker["kind"]), dtype=marker["dtype"],
                        shape=parse_shape_field(marker["shape"]), nbytes=int(marker["nbytes"]))
        try:
            shm = segments.attach(keys.segment(self.deployment, node, object_id))
        except FileNotFoundError:
            self._lose(object_id, f"its copy in node {node}'s shared memory is gone (evicted or swept) before it "
                                  "was written to Redis")
            return False
        buffer = segments.buffer(shm)
        try:
            header = ObjectRef.model_validate_json(bytes(buffer[:segments.HEADER_BYTES]).rstrip(b" "))
            problem = mismatch(ref, header)
            if problem:
                self._lose(object_id, f"node {node}'s copy does not match the put ({problem})", node)
                return False
            data = np.frombuffer(buffer, dtype=np.uint8, count=ref.nbytes, offset=segments.HEADER_BYTES)
            ttl_s = max(1, int(float(marker.get("expiry", 0)) - unix_now()))
            pace = self._pacer(float(marker.get("since", 0))) if self.processes else None
            try:
                self.store.put_prepared(ref, data, ttl_s, pace)
            except FerryError as exc:  # Redis is full, say: the object cannot be stored; readers must hear why
                self._lose(object_id, f"it could not be written to Redis ({exc.message})", node)
                return False
            finally:
                del data
            pipe = self.conn.pipeline(transaction=True)
            pipe.delete(keys.object_pending(object_id))
            pipe.zrem(keys.PUTS_PENDING, object_id)
            pipe.execute()
            segments.mark_written(self.shm_dir / keys.segment(self.deployment, node, object_id))
            log.debug("object %s: written to Redis behind its put (%d bytes)", object_id, ref.nbytes)
            return True
        except BaseException as exc:
            traceback.clear_frames(exc.__traceback__)  # frames would keep views of the segment alive
            raise
        finally:
            del buffer
            shm.close()

    def _pacer(self, put_at: float) -> Callable[[], None]:
        """Between round trips: wait (at most YIELD_MAX_S per object) while every worker of this node runs a job.

        Niceness alone is not enough: Redis, receiving the chunks, is not niced, and on a small host its
        work competes with the jobs that read the object from memory meanwhile (map-reduce over 400 MB on 2
        cores: about 0.1 s of its 0.4). The write also starts START_AFTER_S after the put at the earliest,
        when the jobs that usually follow a put have started. A stop writes at once.
        """
        budget = [YIELD_MAX_S]
        prefix = f"{self.node_id}."
        start_at = time.monotonic() + (put_at + START_AFTER_S - unix_now())  # a backlog's older puts: at once

        def pace() -> None:
            wait_s = start_at - time.monotonic()
            if wait_s > 0 and self._stopping.wait(min(wait_s, budget[0])) is False:
                budget[0] -= wait_s
            while budget[0] > 0 and not self._stopping.is_set():
                idle = sum(1 for w in texts(self.conn.hkeys(keys.IDLE_WORKERS)) if w.startswith(prefix))
                if idle:
                    return
                time.sleep(YIELD_STEP_S)
                budget[0] -= YIELD_STEP_S

        return pace

    def _maybe_lost(self, object_id: str, marker: dict[str, str]) -> None:
        """Tombstone a marker whose node has been gone too long for a restart or a takeover to come."""
        lost_after = LOST_AFTER_FACTOR * self.settings.abandoned_after_s
        beat = self.conn.zscore(keys.NODES, marker["node"]) or 0
        now = unix_now()
        if now - beat > lost_after and now - float(marker.get("since", now)) > lost_after:
            self._lose(object_id, f"node {marker['node']} on host {marker.get('host', '?')} held its only copy and "
                                  f"has been gone for over {lost_after:.0f}s before writing it to Redis")

    def _lose(self, object_id: str, why: str, node: str | None = None) -> None:
        reason = f"object {object_id} was put written-behind and is lost: {why}; put it again"
        if node is not None:  # its segment (if any) is no longer anyone's only copy of something needed
            segments.mark_written(self.shm_dir / keys.segment(self.deployment, node, object_id))
        log.error("%s", reason)
        pipe = self.conn.pipeline(transaction=True)
        pipe.set(keys.object_tombstone(object_id), reason, ex=TOMBSTONE_TTL_S)
        pipe.delete(keys.object_pending(object_id))
        pipe.zrem(keys.PUTS_PENDING, object_id)
        pipe.execute()


def finish_own(settings: Settings, redis_url: str, node_id: str, shm_dir: os.PathLike[str] | str) -> None:
    """At a node's start, before its old files are swept: write what an earlier run of this node left unwritten."""
    started = time.monotonic()
    writer = PutWriter(settings, redis_url, node_id, shm_dir)
    try:
        written = writer.write_pending(own_only=True)
    except redis.RedisError as exc:
        log.warning("node %s: could not write puts left by its previous run (%s)", node_id, exc)
        written = []
    finally:
        writer.conn.close()
        writer._wake.close()
    if written:
        log.warning("node %s: wrote %d object(s) its previous run left unwritten (%.1fs)", node_id, len(written),
                    time.monotonic() - started)
