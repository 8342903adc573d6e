"""Fault suite: a raw RQ job hash whose `data` is a zlib bomb (4 MB inflating to 4 GiB), written straight into Redis.

Anyone with write access to Redis (or a plain RQ producer) can write such a hash. The job must fail with an error
that names the bound, and no process may inflate it: RSS of the node's processes (and of `ferry status`) is
sampled while they handle it. Every process this test starts runs under an address-space limit well below the
inflated size, so a product without the bound fails the test instead of exhausting the shared machine's memory.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable

import httpx
import psutil
import pytest
import redis

from shared import keys
from shared.embedded import free_port
from shared.processes import terminate
from shared.settings import Settings
from shared.timeutil import rq_now
from tests.faults.conftest import node_processes, wait_until_final
from tests.support import REPO, shm_files, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

MiB = 1024 * 1024
CHUNK = b" " * (16 * MiB)
CHUNKS = 256  # 4 GiB of trailing spaces: valid JSON padding, so an unbounded reader would even accept it
INFLATED = 40 + CHUNKS * len(CHUNK)
ADDRESS_SPACE_LIMIT = 1536 * MiB  # per process (a node process maps ~300 MB): a safety net for the shared machine
BOUND_SETTING = "max_job_data_bytes"
TEST_BOUND = 16 * MiB


def zlib_bomb() -> bytes:
    """A valid zlib stream of a small JSON job padded with 4 GiB of spaces (about 4 MB compressed).

    Built from one compressed 16 MiB block repeated: after a full flush the compressor's output for the same
    input is the same bytes, so only the checksum needs the whole inflated stream.
    """
    prefix = b'["test.ledger",null,[],{"token":"bomb"}]'
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(CHUNK) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    checksum = zlib.adler32(prefix)
    for _ in range(CHUNKS):
        checksum = zlib.adler32(CHUNK, checksum)
    bomb = b"\x78\xda" + head + block * CHUNKS + end + checksum.to_bytes(4, "big")
    assert len(prefix) + CHUNKS * len(CHUNK) == INFLATED
    return bomb


def write_raw_job(conn: redis.Redis, data: bytes, queue: str = "default") -> str:
    """An RQ job hash written directly, as a plain RQ producer (or anyone with write access) would."""
    job_id = uuid.uuid4().hex
    now = rq_now()
    pipe = conn.pipeline(transaction=True)
    pipe.hset(keys.job(job_id), mapping={
        "created_at": now, "enqueued_at": now, "data": data, "origin": queue, "description": "bomb",
        "status": "queued", "timeout": 60, "result_ttl": 600, "failure_ttl": 600, "retries_left": 0,
        "number_of_retries": 0, "started_at": "", "ended_at": "", "last_heartbeat": "", "worker_name": "",
    })
    pipe.sadd(keys.RQ_QUEUES, keys.queue(queue))
    pipe.rpush(keys.queue(queue), job_id)
    pipe.publish(keys.WAKE_CHANNEL, queue)
    pipe.execute()
    return job_id


class RssSampler(threading.Thread):
    """Samples the RSS of some processes (found anew each round) every 10 ms: the largest growth over a minimum."""

    def __init__(self, find: Callable[[], list[psutil.Process]]) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.find = find
        self.low: dict[int, int] = {}
        self.high: dict[int, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for process in self.find():
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.low[process.pid] = min(self.low.get(process.pid, rss), rss)
                self.high[process.pid] = max(self.high.get(process.pid, rss), rss)
            self.halt.wait(0.01)

    def stop(self) -> int:
        self.halt.set()
        self.join(10)
        return max((self.high[p] - self.low[p] for p in self.high), default=0)


def _bound_for_test(settings_fields: dict) -> tuple[int | None, str | None]:
    if BOUND_SETTING in settings_fields:
        return TEST_BOUND, f"FERRY_{BOUND_SETTING.upper()}"
    return None, None


def _names_the_bound(error: str, bound: int | None) -> bool:
    if bound is None:  # no setting yet: at least a FERRY_ setting must be named, not a MemoryError
        return "FERRY_" in error and "MemoryError" not in error
    return any(form in error for form in (str(bound), f"{bound:,}", f"{bound // MiB} MiB"))


def _limited(command: list[str]) -> list[str]:
    """`command` under RLIMIT_AS (set, then exec'd in place: same pid, so the node's registration still matches)."""
    setup = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]),) * 2); "
             "os.execv(sys.argv[2], sys.argv[2:])")
    return [sys.executable, "-c", setup, str(ADDRESS_SPACE_LIMIT)] + command


@pytest.mark.timeout(180)
def test_a_zlib_bomb_in_a_raw_job_hash_fails_the_job_with_the_bound_and_no_process_inflates_it(
    env: dict[str, str], start_node, conn: redis.Redis, figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound, setting = _bound_for_test(Settings.model_fields)
    if setting:
        env[setting] = str(bound)
        monkeypatch.setenv(setting, str(bound))
    bomb = zlib_bomb()
    command = [sys.executable, "-m", "services.admin.cli", "worker", "--processes", "2"]
    node = start_node(processes=2, command=_limited(command))
    sampler = RssSampler(lambda: [psutil.Process(node.proc.pid)] + node_processes(node.proc.pid))
    sampler.start()
    began = time.monotonic()
    pids_before = sorted(p.pid for p in node_processes(node.proc.pid))
    try:
        job_id = write_raw_job(conn, bomb)
        states, _ = wait_until_final(conn, [job_id], timeout=60)
        # The node goes on working after it: an ordinary job still runs.
        follow = write_raw_job(conn, zlib.compress(b'["test.ledger",null,[],{"token":"after"}]'))
        follow_states, _ = wait_until_final(conn, [follow], timeout=30)
    finally:
        growth = sampler.stop()
    elapsed = time.monotonic() - began
    error = (conn.hget(keys.job(job_id), "ferry_error") or b"").decode(errors="replace")
    pids_after = sorted(p.pid for p in node_processes(node.proc.pid))
    output = node.output()
    node.terminate()
    figures(submitted=2, bomb_compressed_mb=f"{len(bomb) / 1e6:.1f}", bomb_inflated_gib=f"{INFLATED / 1024**3:.1f}",
            bound=bound or "none", bomb_status=states[job_id], follow_up_status=follow_states[follow],
            max_rss_growth_mib=f"{growth / MiB:.0f}", worker_pids_unchanged=pids_after == pids_before,
            leaked_segments=len(shm_files(node.node_id)), elapsed_s=f"{elapsed:.1f}", error=repr(error[:160]))

    assert setting, f"no bound setting ({BOUND_SETTING}) in Settings"
    assert states[job_id] == "failed", (states, output[-2000:])
    assert _names_the_bound(error, bound), f"the job's error does not name the bound {bound}: {error!r}"
    assert "Traceback" not in error
    limit = min(2 * (bound or 0) + 64 * MiB if bound else INFLATED, INFLATED // 8)
    assert growth < limit, f"a node process grew {growth / MiB:.0f} MiB handling the bomb (limit {limit / MiB:.0f} MiB)"
    assert follow_states[follow] == "finished", follow_states
    assert pids_after == pids_before, "a worker process died handling the bomb"


def _peak_rss_of_status(env: dict[str, str], job_id: str) -> tuple[int, str, str, int]:
    """Run `ferry status JOB_ID --json` (under the address-space limit); exit code, stdout, stderr, peak RSS."""
    process = subprocess.Popen(_limited([sys.executable, "-m", "services.admin.cli", "status", job_id, "--json"]),
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    sampler = RssSampler(lambda: [psutil.Process(process.pid)] if process.poll() is None else [])
    sampler.start()
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sampler.stop()
    peak = max(sampler.high.values(), default=0)
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace"), peak


@pytest.mark.timeout(120)
def test_ferry_status_of_a_zlib_bomb_job_does_not_inflate_it(
    env: dict[str, str], conn: redis.Redis, figures
) -> None:
    bound, setting = _bound_for_test(Settings.model_fields)
    if setting:
        env[setting] = str(bound)
    plain = write_raw_job(conn, zlib.compress(b'["test.ledger",null,[],{"token":"plain"}]'), queue="nobody")
    bomb = write_raw_job(conn, zlib_bomb(), queue="nobody")  # no node serves this queue: both stay queued
    began = time.monotonic()
    _, _, _, baseline = _peak_rss_of_status(env, plain)
    code, out, err, peak = _peak_rss_of_status(env, bomb)
    growth = peak - baseline
    elapsed = time.monotonic() - began
    figures(exit_code=code, peak_rss_plain_mib=f"{baseline / MiB:.0f}", peak_rss_bomb_mib=f"{peak / MiB:.0f}",
            max_rss_growth_mib=f"{growth / MiB:.0f}", elapsed_s=f"{elapsed:.1f}", stderr=repr(err[-160:]))

    assert code == 0, err[-2000:]
    assert bomb in out
    limit = min(2 * (bound or 0) + 64 * MiB if bound else INFLATED, INFLATED // 8)
    assert growth < limit, f"`ferry status` peaked {growth / MiB:.0f} MiB higher (limit {limit / MiB:.0f} MiB)"


@pytest.mark.timeout(120)
def test_the_api_reading_a_zlib_bomb_job_does_not_inflate_it(
    env: dict[str, str], conn: redis.Redis, tmp_path, figures
) -> None:
    bound, setting = _bound_for_test(Settings.model_fields)
    if setting:
        env[setting] = str(bound)
    plain = write_raw_job(conn, zlib.compress(b'["test.ledger",null,[],{"token":"plain"}]'), queue="nobody")
    bomb = write_raw_job(conn, zlib_bomb(), queue="nobody")  # no node serves this queue: both stay queued
    port = free_port()
    with open(tmp_path / "producer.log", "wb") as log:
        server = subprocess.Popen(_limited([sys.executable, "-m", "services.producer", "--host", "127.0.0.1",
                                            "--port", str(port)]),
                                  env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            def answers() -> bool:
                assert server.poll() is None, (tmp_path / "producer.log").read_text()[-2000:]
                try:
                    return http.get("/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(answers, timeout=30, what="the producer to answer /healthz")
            sampler = RssSampler(lambda: [psutil.Process(server.pid)] if server.poll() is None else [])
            sampler.start()
            try:
                assert http.get(f"/v1/jobs/{plain}").status_code == 200
                baseline = max(sampler.high.values(), default=0)
                reply = http.get(f"/v1/jobs/{bomb}")
                health = http.get("/healthz")
            finally:
                sampler.stop()
            peak = max(sampler.high.values(), default=0)
    finally:
        terminate(server, grace_s=10)
    growth = peak - baseline
    figures(status_code=reply.status_code, health=health.status_code, peak_rss_plain_mib=f"{baseline / MiB:.0f}",
            peak_rss_bomb_mib=f"{peak / MiB:.0f}", max_rss_growth_mib=f"{growth / MiB:.0f}",
            body=repr(reply.text[:120]))

    assert reply.status_code == 200, reply.text[:2000]
    assert reply.json()["id"] == bomb
    assert health.status_code == 200
    limit = min(2 * (bound or 0) + 64 * MiB if bound else INFLATED, INFLATED // 8)
    assert growth < limit, f"the producer peaked {growth / MiB:.0f} MiB higher (limit {limit / MiB:.0f} MiB)"
