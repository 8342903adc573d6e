"""A faster hand-off between steps: a task's large result is written to Redis *behind* the job's finish.

Without it, a large array result is hashed, written to Redis and copied into the node's shared memory
before its job reports done, so the next step waits for all three. With it (FERRY_RESULT_WRITE_BEHIND,
on by default), the worker process:

1. names the result after its job (`result_id(job, n)`: no content hash to compute; a re-run of the job
   names it the same), copies it into the node's shared memory (`NodeCache.adopt`, published as held);
2. writes a marker `ferry:obj:<id>:pending` (job, queue, worker, node and the reference's fields) and
   indexes it in `ferry:objects:pending`; only then does the job report done, with the reference;
3. writes the chunks and the meta on a background thread, then deletes the marker.

So the next step on the same node reads the result from memory at once. Anyone else sees the marker:
`REFERENCE` accepts a reference that matches it, and a reader that finds no meta waits while the marker
exists (`shared.objects.pending`), so the object is in Redis before any other node or client reads it. If the
writer dies first (its worker process dies, or its whole node), the reaper's `recover_lost_results`
runs the finished job again (front of its queue): its result gets the same id, and the waiting readers
get it when that run has written it. A graceful stop waits for every write. Results that do not fit in
shared memory are written before the finish, as before.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import threading
import time

import numpy as np
import redis

from shared import keys
from shared.lifecycle import Claimed
from shared.lifecycle.lua import PRELUDE
from shared.lifecycle.lua_locality import RECOVER_BODY
from shared.objects.cache import NodeCache
from shared.objects.lifetime import shape_field
from shared.objects.ref import ObjectKind, ObjectRef
from shared.objects.store import ObjectStore
from shared.settings import Settings
from shared.timeutil import rq_now, unix_now

log = logging.getLogger("ferry.handoff")

RECOVER = PRELUDE + RECOVER_BODY
WRITE_ATTEMPTS = 5
WRITER_NICENESS = 10  # the writer thread's scheduling priority, relative to the worker (Linux: per thread)


def result_id(job_id: str, index: int) -> str:
    """The id of the `index`-th object in a job's result: the same for every run of that job."""
    return hashlib.sha256(f"ferry-result|{job_id}|{index}".encode()).hexdigest()[:32]


def result_ref(job_id: str, index: int, kind: ObjectKind, array: np.ndarray) -> ObjectRef:
    shape = tuple(int(n) for n in array.shape)
    assert int(array.nbytes) == math.prod(shape) * array.dtype.itemsize
    return ObjectRef(id=result_id(job_id, index), kind=kind, dtype=array.dtype.str, shape=shape,
                     nbytes=int(array.nbytes))


class WriteBehind:
    """One worker process's background writer of results already in the node's shared memory."""

    def __init__(self, store: ObjectStore, cache: NodeCache, worker: str, node_id: str) -> None:
        self.store, self.cache, self.worker, self.node_id = store, cache, worker, node_id
        self.conn = store.conn
        self._queue: queue.Queue[tuple[ObjectRef, np.ndarray]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def keep(self, job: Claimed, index: int, kind: ObjectKind, array: np.ndarray) -> ObjectRef:
        """The reference to return for this result; in shared memory now, in Redis soon (or now, if it did not fit)."""
        ref = result_ref(job.id, index, kind, array)
        segment = self.cache.shm_dir / self.cache.space.segment(ref.id)
        rerun = segment.exists()  # a run again on a node that kept the first run's copy
        self.cache.adopt(ref, array)
        if not segment.exists():
            self.store.put_prepared(ref, array)  # not kept in memory: nobody could read it before it is written
            return ref
        if rerun:
            array = self.cache.array(ref)  # Redis gets the very bytes this node's readers see
        marker = keys.object_pending(ref.id)
        pipe = self.conn.pipeline(transaction=True)
        pipe.delete(marker)
        pipe.hset(marker, mapping={"job": job.id, "queue": job.queue, "worker": self.worker, "node": self.node_id,
                                   "kind": ref.kind.value, "dtype": ref.dtype, "shape": shape_field(ref.shape),
                                   "nbytes": ref.nbytes})
        pipe.zadd(keys.PENDING_OBJECTS, {ref.id: unix_now()})
        pipe.execute()
        self._queue.put((ref, array))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ferry-write-behind", daemon=True)
            self._thread.start()
        return ref

    def drain(self) -> None:
        """Wait until every result handed to the writer is in Redis (a graceful stop calls this)."""
        if self._thread is not None:
            self._queue.join()

    def _run(self) -> None:
        try:  # below the worker's own jobs: the next step on this node runs first, the write fills idle time
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        except OSError:
            pass
        while True:
            ref, array = self._queue.get()
            try:
                self._write(ref, array)
            finally:
                del array
                self._queue.task_done()

    def _write(self, ref: ObjectRef, array: np.ndarray) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                self.store.put_prepared(ref, array)
                pipe = self.conn.pipeline(transaction=True)
                pipe.delete(keys.object_pending(ref.id))
                pipe.zrem(keys.PENDING_OBJECTS, ref.id)
                pipe.execute()
                return
            except redis.ConnectionError as exc:
                log.warning("object %s: writing a result to Redis failed (%s); trying again", ref.id, exc)
                time.sleep(min(2.0, 0.1 * 2**attempt))
            except Exception as exc:  # noqa: BLE001 - the result cannot be stored: say why to whoever waits for it
                reason = f"the result could not be written to Redis ({exc})"
                log.error("object %s: %s", ref.id, reason)
                try:
                    pipe = self.conn.pipeline(transaction=True)
                    pipe.set(keys.object_tombstone(ref.id), reason, ex=7 * 86_400)
                    pipe.delete(keys.object_pending(ref.id))
                    pipe.zrem(keys.PENDING_OBJECTS, ref.id)
                    pipe.execute()
                except redis.RedisError:
                    pass
                return
        log.error("object %s: Redis unreachable; the reaper will run its job again", ref.id)


def recover_lost_results(conn: redis.Redis, settings: Settings) -> list[str]:
    """Run again the finished jobs whose result writer died before the result reached Redis (every reaper)."""
    try:
        jobs = conn.register_script(RECOVER)(args=[unix_now() - settings.abandoned_after_s, rq_now()])
    except redis.RedisError as exc:
        log.warning("results written behind: recovery check failed (%s)", exc)
        return []
    names = [j.decode() if isinstance(j, bytes) else str(j) for j in jobs]
    for job_id in names:
        log.warning("job %s: its result was lost with its worker before it reached Redis; running it again", job_id,
                    extra={"job_id": job_id})
    return names
