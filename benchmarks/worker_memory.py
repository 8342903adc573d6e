"""Idle workers' memory: what a node's two idle worker processes cost, next to the floor of forked CPython.

Issue 7 asks that a node's workers' PSS stay within 1.2 x the array at the end of `benchmarks.shared_input`
(100 MB). The array itself costs ~1.04 x there (PSS end - idle), so two idle workers may cost ~16 MB.

Node: `ferry worker --processes 2` on an embedded Redis; once both workers have registered and sat idle for
`--settle-s`, each process's PSS and USS (psutil). Workers are counted as in shared_input: the supervisor's
children except multiprocessing's resource tracker.
Floors: a parent `python -c` that imports only the listed modules, calls `gc.freeze()` and forks two children
that sleep; their PSS summed, read from this process (nothing else imported in the parent, no psutil).
"numpy + redis" imports redis-py as Ferry does (without the OpenTelemetry SDK: shared/lean_imports.py).
PSS divides file-backed pages (libpython, .so files) among every process mapping them, so figures move by
~1 MB with what else runs on the machine: compare runs from the same session.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from benchmarks.common import REPO, Workers, connect, json_line, machine, registered_workers, table, tool, wait_until
from shared.embedded import EmbeddedRedis

FLOORS = {  # label -> the parent's imports before it forks
    "nothing (python itself)": "",
    "numpy": "import numpy",
    "numpy + redis": "import numpy; from shared.lean_imports import import_redis_lean; import_redis_lean()",
    "the node's imports (services.worker.entry)": "import services.worker.entry",
}
FORK_TWO = """
import gc, os, sys, time
{imports}
gc.freeze()
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    children.append(pid)
print(" ".join(map(str, children)), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def memory(pid: int) -> tuple[int, int]:
    info = psutil.Process(pid).memory_full_info()
    return info.pss, info.uss


def node_sample(url: str, settle_s: float) -> dict[str, Any]:
    env = dict(os.environ, FERRY_REDIS_URL=url, FERRY_NODE_ID=f"memory-{os.getpid()}")
    node = Workers("worker-memory", [[tool("ferry"), "worker", "--processes", "2"]], env, count_children_only=True)
    conn = connect(url)
    try:
        wait_until(lambda: registered_workers(conn) >= 2 and len(node.pids()) >= 2, 30, "two registered workers",
                   check=node.check_alive)
        time.sleep(settle_s)  # let start-up finish its writes: an idle worker's memory, not a starting one's
        workers = [memory(pid) for pid in node.pids()]
        supervisor = memory(node.procs[0].pid)
        return {"workers_pss": sum(p for p, _ in workers), "workers_uss": [u for _, u in workers],
                "supervisor_pss": supervisor[0]}
    finally:
        node.stop()
        conn.flushall()
        conn.close()


def floor_sample(imports: str, settle_s: float) -> int:
    parent = subprocess.Popen([sys.executable, "-c", FORK_TWO.format(imports=imports)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert parent.stdout is not None
        children = [int(pid) for pid in parent.stdout.readline().split()]
        if len(children) != 2:
            raise RuntimeError(f"the parent importing {imports!r} did not fork (exit {parent.poll()})")
        time.sleep(settle_s)
        return sum(memory(pid)[0] for pid in children)
    finally:
        parent.communicate("", timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="samples of each; the median is reported")
    parser.add_argument("--settle-s", type=float, default=3.0, help="idle time before sampling")
    args = parser.parse_args()

    server = EmbeddedRedis().start()
    try:
        nodes = [node_sample(server.url, args.settle_s) for _ in range(args.repeat)]
    finally:
        server.cleanup()
    floors = {label: statistics.median(floor_sample(imports, args.settle_s / 2) for _ in range(args.repeat))
              for label, imports in FLOORS.items()}
    node = sorted(nodes, key=lambda n: n["workers_pss"])[len(nodes) // 2]

    def mb(nbytes: float) -> str:
        return f"{nbytes / 1e6:.1f} MB"

    print("\nA node's two idle worker processes (`ferry worker --processes 2`):")
    print(table(["workers' PSS", "each worker's USS (private)", "supervisor's PSS"],
                [[mb(node["workers_pss"]), " / ".join(mb(u) for u in node["workers_uss"]),
                  mb(node["supervisor_pss"])]]))
    print("\nTwo do-nothing children forked (after gc.freeze()) from a parent that imported only:")
    print(table(["parent's imports", "children's PSS"], [[label, mb(pss)] for label, pss in floors.items()]))
    print(json_line({"benchmark": "worker_memory", "repeat": args.repeat, "settle_s": args.settle_s,
                     "machine": machine(), "node": node, "floors_pss": floors,
                     "workers_pss_all_repeats": [n["workers_pss"] for n in nodes]}))


if __name__ == "__main__":
    main()
