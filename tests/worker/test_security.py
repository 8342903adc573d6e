"""Nobody let in: only registered tasks run, and nothing is ever unpickled or pickled."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from shared.client import Client


class _Exploit:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_raw_rq_job_naming_an_unregistered_function_runs_nothing(client: Client, start_node, conn: redis.Redis, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    start_node(processes=1)
    job = Queue("default", connection=conn, serializer=JSONSerializer).enqueue("os.system", f"touch {marker}")
    result = client.result(job.id, wait_s=10)
    assert result.status == "failed"
    assert "no task named 'os.system' is registered" in result.error
    assert client.status(job.id).attempts == 1  # refused outright, not retried
    assert not marker.exists()


def test_a_pickled_rq_job_is_refused_without_unpickling(client: Client, start_node, conn: redis.Redis, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    start_node(processes=1)
    job = Queue("default", connection=conn).enqueue(print, _Exploit(marker))  # RQ's default: pickle
    result = client.result(job.id, wait_s=10)
    assert result.status == "failed"
    assert "not Ferry's JSON format" in result.error
    assert not marker.exists()


def test_no_pickle_reaches_redis(client: Client, start_node, conn: redis.Redis) -> None:
    import numpy as np

    start_node(processes=1)
    ref = client.put(np.arange(100_000, dtype=np.float64))
    jobs = [client.submit("echo", {"value": {"a": [1, 2]}}), client.submit("test.fail", retries=0),
            client.submit("array.scale", {"data": ref, "factor": 2.0})]
    for job in jobs:
        assert client.result(job, wait_s=20).ready
    for key in conn.scan_iter(count=1000):
        kind = conn.type(key)
        if kind == b"string":
            values = [conn.get(key)]
        elif kind == b"hash":
            values = list(conn.hgetall(key).values())
        elif kind == b"stream":
            values = [v for _, entry in conn.xrange(key) for v in entry.values()]
        else:
            continue
        for value in values:
            for candidate in (value, _inflate(value)):
                assert not _is_pickle(candidate), f"{key!r} holds a pickle"


def _inflate(value: bytes) -> bytes:
    try:
        return zlib.decompress(value)
    except zlib.error:
        return b""


def _is_pickle(data: bytes) -> bool:
    if len(data) < 3 or data[0] != 0x80 or data[1] > pickle.HIGHEST_PROTOCOL:
        return False
    try:
        import pickletools

        pickletools.dis(data, out=open("/dev/null", "w"))  # parses opcodes; executes nothing
        return True
    except Exception:
        return False
