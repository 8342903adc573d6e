"""What a put costs on a node's host: written behind, durable with the copy into the node's memory, Redis only.

    python -m benchmarks.local_put [--size-mb 400] [--repeat 3]

One process, a private Redis, and a stand-in for a live node on this host (a NodeSpace holding its alive
byte, as a node's supervisor does; no worker runs, so nothing is written behind during the clock). Per
size, best and median of --repeat, each put on fresh data (no dedup):
  behind   `put()` with a live local node: hash (BLAKE3, every core) while the bytes are copied into the
           node's segment (`pwrite` into tmpfs), then the marker: what a client waits for by default
  durable  `put(durable=True)`: the same copy, while the chunks go to Redis too
  redis    `put()` with no local node: the chunks to Redis while hashing (before this branch: what every put
           was, and the node then fetched the bytes back out of Redis)
  hash     `ref_for` alone;  copy  the `pwrite` of the bytes into a fresh /dev/shm file alone
Ferry's code is not changed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import json_line, machine, table
from shared.embedded import EmbeddedRedis
from shared.objects.local_put import WRITE_PIECE_BYTES, LocalPut
from shared.objects.ref import ObjectKind, ref_for
from shared.objects.segments import SHM_DIR
from shared.objects.shm import NodeSpace, deployment_id
from shared.objects.store import ObjectStore
from shared.redis_conn import connect
from shared.settings import Settings

CHUNK = Settings.model_fields["object_chunk_bytes"].default
NODE = "benchlocalput"


def _copy_alone(array: np.ndarray) -> None:
    path = SHM_DIR / f"ferry-bench-copy-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = array.data.cast("B")
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, data[offset : offset + WRITE_PIECE_BYTES], offset)
    finally:
        os.close(fd)
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items = args.size_mb * 1_000_000 // 8
    server = EmbeddedRedis().start()
    conn = connect(server.url)
    node = NodeSpace(SHM_DIR, NODE, deployment_id(conn), 64 * 1024**3)
    node.hold_alive()
    local = ObjectStore(conn, CHUNK, 3600, LocalPut(conn, SHM_DIR, None, write_behind=True))
    plain = ObjectStore(conn, CHUNK, 3600)
    seed = [0]

    def fresh() -> np.ndarray:
        seed[0] += 1
        return np.random.default_rng(seed[0]).random(items)

    cases: dict[str, Callable[[np.ndarray], object]] = {
        "behind": local.put,
        "durable": lambda a: local.put(a, durable=True),
        "redis": plain.put,
        "hash": lambda a: ref_for(ObjectKind.ARRAY, a),
        "copy": _copy_alone,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(args.repeat):
            for name, run in cases.items():
                array = fresh()
                start = time.perf_counter()
                run(array)
                times[name].append(time.perf_counter() - start)
                conn.flushall()  # Redis memory back for the next case (the node's segments stay: swept below)
                node.sweep()
    finally:
        node.sweep(keep_lock=False)
        node.close()
        conn.close()
        server.cleanup()
    rows = [[name, f"{min(t):.3f}", f"{statistics.median(t):.3f}", f"{args.size_mb / min(t) / 1000:.2f}"]
            for name, t in times.items()]
    print(f"put of {args.size_mb} MB (float64), best and median of {args.repeat}:")
    print(table(["case", "best s", "median s", "GB/s (best)"], rows))
    print(json_line({"benchmark": "local_put", "size_mb": args.size_mb, "machine": machine(),
                     "seconds": times}))


if __name__ == "__main__":
    main()
