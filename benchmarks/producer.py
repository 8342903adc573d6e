"""The producer under load: submit rate against a minimal async FastAPI app, and long-poll wake-up delay.

Part 1 (wrk, 32 connections, 20 s each, one run): `POST /v1/jobs` on
  (a) a minimal async FastAPI app on the same uvicorn (the ceiling: parse a JSON body, answer 202),
  (b) Ferry's producer with 1 process, (c) with 2 processes (`ferry producer --workers 2`).
No worker node runs: a task catalog is published for the test tasks (as a node would), so every
submit is validated against it and enqueued; the jobs pile up in Redis.

Part 1b (in-process, no HTTP server, ~10 s): CPU time per `POST /v1/jobs` in the minimal app and in Ferry's
app, driven through ASGI by 32 concurrent callers. CPU time, unlike a rate, hardly moves when the machine
is shared: it shows what each app costs per request, which is what limits one GIL-bound process.

Part 2: with 1,000 HTTP long-polls waiting (`GET /v1/jobs/{id}/result?wait_s=`), a node runs the
1,000 jobs; the delay is from each job's `ended_at` (written by its worker) to its waiter's answer.
Next to it, the same 1,000 waits made by a direct AsyncClient, and 50 sequential waits of the sync Client.

    python benchmarks/producer.py [--duration-s 20] [--connections 32] [--waiters 1000]
                                  [--skip-wrk] [--skip-cpu] [--skip-wait] [--cpu-requests 6400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, percentile, table  # noqa: E402
from shared import catalog, keys  # noqa: E402
from shared.async_client import AsyncClient  # noqa: E402
from shared.client import Client  # noqa: E402
from shared.embedded import EmbeddedRedis, free_port  # noqa: E402
from shared.processes import terminate  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.tasks import load_tasks  # noqa: E402
from shared.timeutil import rq_parse, unix_now  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BODY = {"task": "echo", "args": {"value": "hello"}}
PACED = {"task": "sleep", "args": {"seconds": 0.01}}

MINIMAL_APP = """
from typing import Any
from fastapi import FastAPI
app = FastAPI()

@app.post("/v1/jobs", status_code=202)
async def submit(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": "0" * 32, "status": "queued", "queue": "default", "duplicate": False}
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


def serve(command: list[str], env: dict[str, str], probe: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(probe)
    return proc


def wrk(url: str, connections: int, duration_s: int, script: Path) -> dict[str, float]:
    """wrk's requests/s and latency percentiles (ms), with --latency."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    return {"rate": rate, "p50_ms": lat["50"], "p99_ms": lat["99"], "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def publish_catalog(conn, settings: Settings) -> None:
    conn.zadd(keys.NODES, {"bench-catalog": unix_now()})
    catalog.publish(conn, "bench-catalog", settings.queues, load_tasks(settings.task_modules), ttl_s=3600)


def submit_rates(
    env: dict[str, str], redis_url: str, args: argparse.Namespace, script: Path
) -> dict[str, dict[str, float]]:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        app_file = Path(tmp) / "minimal_app.py"
        app_file.write_text(MINIMAL_APP)
        port = free_port()
        proc = serve(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "minimal_app:app",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--app-dir",
                tmp,
            ],
            env,
            f"http://127.0.0.1:{port}/docs",
        )
        try:
            rows["minimal async FastAPI (1 process)"] = wrk(
                f"http://127.0.0.1:{port}/v1/jobs", args.connections, args.duration_s, script
            )
        finally:
            terminate(proc, grace_s=5)
    for workers in (1, 2):
        port = free_port()
        proc = serve(
            [sys.executable, "-m", "services.producer", "--port", str(port), "--workers", str(workers)],
            env,
            f"http://127.0.0.1:{port}/healthz",
        )
        try:
            rows[f"Ferry producer ({workers} process{'es' if workers > 1 else ''})"] = wrk(
                f"http://127.0.0.1:{port}/v1/jobs", args.connections, args.duration_s, script
            )
        finally:
            terminate(proc, grace_s=10)
    return rows


async def asgi_cpu_us(app, requests: int, concurrency: int = 32) -> float:
    """CPU µs per `POST /v1/jobs` through the ASGI `app` (no server, no sockets but Redis); best of 3 rounds."""
    body = json.dumps(BODY).encode()
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    statuses: dict[int, int] = {}

    async def one() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/jobs", "raw_path": b"/v1/jobs", "root_path": "", "query_string": b"", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("bench", 80), "state": {}}
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def caller(n: int) -> None:
        for _ in range(n):
            await one()

    await asyncio.gather(*(caller(20) for _ in range(concurrency)))  # warm-up
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        await asyncio.gather(*(caller(requests // concurrency) for _ in range(concurrency)))
        best = min(best, (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6)
    if set(statuses) != {202}:
        raise SystemExit(f"in-process submits answered {statuses}")
    return best


def cpu_per_submit(settings: Settings, requests: int) -> dict[str, float]:
    """Part 1b: the minimal app's and Ferry's CPU per request, in this process (uvloop, as uvicorn runs them)."""
    import logging

    import uvloop

    from services.producer.app import create_app
    from shared.logs import configure

    namespace: dict[str, object] = {}
    exec(MINIMAL_APP, namespace)  # noqa: S102 - our own constant, the same app part 1 serves
    rows = {"minimal async FastAPI": uvloop.run(asgi_cpu_us(namespace["app"], requests))}

    async def ferry(log_level: str) -> float:
        configure(log_level)
        logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            return await asgi_cpu_us(app, requests)

    rows["Ferry (log level WARNING, as part 1)"] = uvloop.run(ferry("WARNING"))
    rows["Ferry (INFO: one access log line per request)"] = uvloop.run(ferry("INFO"))
    configure("WARNING")
    return rows


async def http_waits(url: str, ids: list[str]) -> list[float]:
    """One raw HTTP/1.1 connection per waiter.

    httpx's pool slows down with a thousand connections: it would measure itself.
    """
    host, port = urlsplit(url).hostname, urlsplit(url).port

    async def one(job_id: str) -> float:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /v1/jobs/{job_id}/result?wait_s=250 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
        body = await reader.readexactly(length)
        answered = time.time()
        writer.close()
        assert json.loads(body)["ready"], body
        return answered

    return await asyncio.gather(*(one(i) for i in ids))


async def direct_waits(settings: Settings, ids: list[str]) -> list[float]:
    async with AsyncClient(settings=settings) as client:

        async def one(job_id: str) -> float:
            assert (await client.result(job_id, wait_s=250)).ready
            return time.time()

        return await asyncio.gather(*(one(i) for i in ids))


def delays(client: Client, ids: list[str], answered: list[float]) -> tuple[float, float]:
    ended = [rq_parse(client.conn.hget(keys.job(i), "ended_at")).timestamp() for i in ids]
    lags = [(a - e) * 1000 for a, e in zip(answered, ended, strict=True)]
    return percentile(lags, 50), percentile(lags, 99)


def start_node(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.admin.cli", "worker", "--processes", "1"],
        env={**env, "FERRY_NODE_ID": f"bench{os.getpid()}"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wake_delays(env: dict[str, str], settings: Settings, waiters: int) -> dict[str, tuple[float, float]]:
    client = Client(settings=settings)
    rows = {}
    port = free_port()
    producer = serve(
        [sys.executable, "-m", "services.producer", "--port", str(port)], env, f"http://127.0.0.1:{port}/healthz"
    )
    try:
        ways = (
            ("HTTP long-poll via the producer", lambda ids: http_waits(f"http://127.0.0.1:{port}", ids)),
            ("direct AsyncClient", lambda ids: direct_waits(settings, ids)),
        )
        # A burst (1,000 echo jobs end within about a second: the producer's answering rate shows), then a
        # steady trickle (sleep jobs of 10 ms on one process: about 100 ends a second, all 1,000 still waiting).
        for pace, job in (("all end at once", BODY), ("~100 end per second", PACED)):
            for label, waits in ways:
                client.conn.flushall()
                ids = [j.id for j in client.submit_many([{**job, "allow_unserved": True} for _ in range(waiters)])]

                async def run(ids: list[str] = ids, waits=waits) -> list[float]:
                    pending = asyncio.ensure_future(waits(ids))
                    await asyncio.sleep(3)  # every waiter is waiting
                    node = start_node(env)
                    try:
                        return await pending
                    finally:
                        terminate(node, grace_s=10)

                rows[f"{label}, {waiters} waiting, {pace}"] = delays(client, ids, asyncio.run(run()))
        client.conn.flushall()
        node = start_node(env)
        try:
            ids, answered = [], []
            for _ in range(50):
                job = client.submit("echo", {"value": 1}, allow_unserved=True)
                client.result(job, wait_s=30)
                ids.append(job.id)
                answered.append(time.time())
            rows["direct sync Client, one at a time"] = delays(client, ids, answered)
        finally:
            terminate(node, grace_s=10)
    finally:
        terminate(producer, grace_s=10)
        client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--skip-wrk", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true", help="skip part 1b (CPU per request, in-process)")
    parser.add_argument("--skip-wait", action="store_true", help="skip part 2 (long-poll wake-up delays)")
    parser.add_argument("--cpu-requests", type=int, default=6400, help="requests per round in part 1b")
    args = parser.parse_args()

    server = EmbeddedRedis().start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        env.update(
            FERRY_REDIS_URL=server.url,
            FERRY_LOG_LEVEL="WARNING",
            FERRY_RESULT_RECHECK_S="600",
            FERRY_STATE_DIR=tempfile.mkdtemp(),
            PYTHONPATH=str(REPO),
        )
        settings = Settings(redis_url=server.url, result_recheck_s=600)
        conn = Client(settings=settings).conn
        record: dict[str, object] = {"benchmark": "producer", "machine": machine()}
        if not args.skip_wrk:
            publish_catalog(conn, settings)
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(WRK_SCRIPT.format(body=json.dumps(BODY)))
            rates = submit_rates(env, server.url, args, Path(script.name))
            ceiling = rates["minimal async FastAPI (1 process)"]["rate"]
            one = rates["Ferry producer (1 process)"]["rate"]
            print(f"\n`POST /v1/jobs`, `wrk -t2 -c{args.connections} -d{args.duration_s}s`\n")
            rows = [
                [
                    name,
                    f"{r['rate']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    r["non_2xx"],
                    f"{r['rate'] / ceiling:.0%}",
                ]
                for name, r in rates.items()
            ]
            print(table(["server", "requests/s", "p50 ms", "p99 ms", "non-2xx", "of the ceiling"], rows))
            two = rates["Ferry producer (2 processes)"]["rate"] / one
            print(f"\n2 processes / 1 process: {two:.2f}x")
            record["submit"] = rates
        if not args.skip_cpu:
            publish_catalog(conn, settings)
            cpu = cpu_per_submit(settings, args.cpu_requests)
            print("\nCPU per `POST /v1/jobs`, in-process through ASGI (32 concurrent callers, best of 3 rounds)\n")
            print(table(["app", "CPU us/request"], [[n, f"{us:.0f}"] for n, us in cpu.items()]))
            record["cpu_us_per_submit"] = {n: round(us, 1) for n, us in cpu.items()}
        if not args.skip_wait:
            conn.flushall()
            wakes = wake_delays(env, settings, args.waiters)
            print(f"\nDelay from a job's end to its waiter's answer ({args.waiters} waiting; re-check every 600 s)\n")
            print(table(["waiter", "p50 ms", "p99 ms"],
                        [[n, f"{p50:.2f}", f"{p99:.2f}"] for n, (p50, p99) in wakes.items()]))
            record["wake_ms"] = wakes
        record["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        print(json.dumps(record))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
