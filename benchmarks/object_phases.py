"""Where the time of a shared input goes: Ferry's object path, phase by phase, in one process.

    python -m benchmarks.object_phases [--size-mb 100] [--repeat 3]

Phases (best of --repeat, against a private Redis): hashing the array for its id (`ref_for`), writing it
with the id known (`ObjectStore.put_prepared`), a whole `put` (the hash overlapped with the write),
fetching it into a fresh node segment (`NodeCache.array` on a miss:
reserve + posix_fallocate + `read_into` + publish), attaching it from a second cache (what another worker
process does) and reducing it the first time (page faults included), reducing it again, and reducing a
private numpy copy, and, for comparison, the same chunk writes through a plain redis-py pipeline (which
copies every argument twice when hiredis is installed: `bytes(memoryview)`, then `hiredis.pack_command`;
Ferry sends the chunk's memoryview as it is). Last, one process writes a second object while another
reads the first: what streaming a fetch behind its upload could gain at best (if the pair takes as
long as a write plus a read, the server is the bottleneck and overlapping them gains nothing).
Ferry's code is not changed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import json_line, machine, table
from benchmarks.rq_tasks import stats
from shared import keys
from shared.embedded import EmbeddedRedis
from shared.objects.cache import NodeCache
from shared.objects.ref import ObjectRef, normalize, ref_for
from shared.objects.segments import SHM_DIR
from shared.objects.shm import NodeSpace, deployment_id
from shared.objects.store import ObjectStore, chunks_per_round_trip
from shared.redis_conn import connect
from shared.settings import Settings

CHUNK = Settings.model_fields["object_chunk_bytes"].default  # Ferry's default FERRY_OBJECT_CHUNK_BYTES


def best_of(repeat: int, action: Callable[[], object], before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def pipeline_put(conn, ref: ObjectRef, array: np.ndarray) -> None:
    """The chunk SETs as redis-py pipelines them, as many per round trip as Ferry sends (Ferry's old write)."""
    raw = memoryview(array).cast("B")
    nchunks = max(1, -(-ref.nbytes // CHUNK))
    per_trip = chunks_per_round_trip(CHUNK)
    for first in range(0, nchunks, per_trip):
        pipe = conn.pipeline(transaction=False)
        for index in range(first, min(first + per_trip, nchunks)):
            pipe.set(keys.object_chunk(ref.id, index), raw[index * CHUNK : (index + 1) * CHUNK], ex=86_400)
        pipe.execute()


def write_and_read_at_once(url: str, ref: ObjectRef, other: np.ndarray) -> float:
    """Wall time of putting `other` in this process while a forked process reads `ref` into a warm buffer."""
    context = multiprocessing.get_context("fork")
    ready, go = context.Barrier(2), context.Event()
    reader = context.Process(target=_read_when_told, args=(url, ref, ready, go))
    reader.start()
    store = ObjectStore(connect(url), CHUNK, 86_400)
    other_ref = ref_for(*normalize(other))
    ready.wait()
    start = time.perf_counter()
    go.set()
    store.put_prepared(other_ref, other)
    reader.join()
    elapsed = time.perf_counter() - start
    store.delete(other_ref.id)
    if reader.exitcode != 0:
        raise RuntimeError(f"the reader process exited with {reader.exitcode}")
    return elapsed


def _read_when_told(url: str, ref: ObjectRef, ready, go) -> None:
    store = ObjectStore(connect(url), CHUNK, 86_400)
    warm = np.ones(ref.nbytes, np.uint8)
    ready.wait()
    go.wait()
    store.read_into(store.stored(ref.id), memoryview(warm))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    array = np.random.default_rng(args.size_mb).random(args.size_mb * 1_000_000 // 8)
    node = f"phases-{os.getpid()}"
    server = EmbeddedRedis().start()
    try:
        conn = connect(server.url)
        store = ObjectStore(conn, CHUNK, 86_400)
        ref = ref_for(*normalize(array))
        phases: dict[str, float] = {}
        phases["hash (ref_for, sha256)"] = best_of(args.repeat, lambda: ref_for(*normalize(array)))
        phases["write (put_prepared: hash known)"] = best_of(
            args.repeat, lambda: store.put_prepared(ref, array), conn.flushall
        )
        phases["put (hash overlapped with the write)"] = best_of(args.repeat, lambda: store.put(array), conn.flushall)
        phases["write, plain redis-py pipeline"] = best_of(
            args.repeat, lambda: pipeline_put(conn, ref, array), conn.flushall
        )
        conn.flushall()
        store.put_prepared(ref, array)  # the real layout, for the fetch

        def fresh_cache() -> NodeCache:
            return NodeCache(node, SHM_DIR, 4 * array.nbytes, store)

        def sweep() -> None:
            NodeSpace(SHM_DIR, node, deployment_id(conn), 1).sweep(keep_lock=False)

        def use(reduce: bool, repeat: int = 0) -> float:
            """Map the object through a new cache (fetching it if missing); reduce once, or time `repeat` reductions."""
            cache = fresh_cache()
            try:
                return reduce_view(cache.array(ref), reduce, repeat)
            finally:
                cache.close()  # the view is gone by now, so the segment can be unmapped

        def reduce_view(view: np.ndarray, reduce: bool, repeat: int) -> float:
            if reduce:
                stats(view)
            return best_of(repeat, lambda: stats(view)) if repeat else 0.0

        phases["fetch into fresh segment (miss)"] = best_of(args.repeat, lambda: use(False), sweep)
        use(False)  # leave one resident segment for the phases below
        warm = np.ones(ref.nbytes, np.uint8)  # pages already touched: the socket-to-memory speed alone
        stored = store.stored(ref.id)
        phases["read_into a warm buffer"] = best_of(args.repeat, lambda: store.read_into(stored, memoryview(warm)))
        phases["attach + first stats (2nd process)"] = best_of(args.repeat, lambda: use(True))
        phases["stats on the shared segment"] = use(True, args.repeat)
        phases["stats on a private numpy array"] = best_of(args.repeat, lambda: stats(array))
        other = array + 1.0
        phases["write one + read another, 2 processes at once"] = min(
            write_and_read_at_once(server.url, ref, other) for _ in range(args.repeat)
        )
        sweep()
    finally:
        server.cleanup()
    rows = [[name, f"{s * 1000:.1f}", f"{array.nbytes / s / 1e6:,.0f}"] for name, s in phases.items()]
    print(f"{args.size_mb} MB float64 array, best of {args.repeat}:")
    print(table(["phase", "ms", "MB/s"], rows))
    print(
        json_line(
            {
                "benchmark": "object_phases",
                "size_mb": args.size_mb,
                "machine": machine(),
                "ms": {k: round(v * 1000, 2) for k, v in phases.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
