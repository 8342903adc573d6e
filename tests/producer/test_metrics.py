"""/metrics: Prometheus text read from Redis, parsed with prometheus_client's own parser.

The first tests write the `ferry:metrics` hash directly (its layout is shared/job_metrics.py) and check the
exporter's arithmetic; the others run jobs through a real node and check what the lifecycle recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import redis
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from shared import job_metrics as jm
from shared import keys
from shared.objects.cache import HEADER_BYTES
from shared.client import Client
from shared.metrics import collect, collect_async, metric_names
from shared.settings import Settings
from tests.support import REPO, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(api: httpx.Client) -> Samples:
    answer = api.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_job_counters_and_histograms_come_from_the_metrics_hash(api: httpx.Client, conn: redis.Redis) -> None:
    conn.hset(jm.METRICS_KEY, mapping={
        jm.jobs_field("default", "echo", "finished"): 5,
        jm.jobs_field("default", "echo", "failed"): 2,
        jm.requeued_field("default", "echo", "worker_died"): 1,
        jm.requeued_field("high", "sleep", "timeout"): 3,
    })
    for seconds in (0.002, 0.002, 0.3, 700.0):  # one beyond the last bound: only in +Inf
        conn.hincrby(jm.METRICS_KEY, jm.bucket_field("run", "echo", seconds), 1)
    conn.hincrbyfloat(jm.METRICS_KEY, jm.sum_field("run", "echo"), 700.604)
    conn.hincrby(jm.METRICS_KEY, jm.bucket_field("wait", "echo", 0.05), 4)

    samples = scrape(api)

    assert value(samples, "ferry_jobs_total", queue="default", task="echo", outcome="finished") == 5
    assert value(samples, "ferry_jobs_total", queue="default", task="echo", outcome="failed") == 2
    assert value(samples, "ferry_jobs_requeued_total", queue="default", task="echo", reason="worker_died") == 1
    assert value(samples, "ferry_jobs_requeued_total", queue="high", task="sleep", reason="timeout") == 3
    buckets = {le: value(samples, "ferry_job_run_seconds_bucket", task="echo", le=le)
               for le in ("0.001", "0.0025", "0.5", "600.0", "+Inf")}
    assert buckets == {"0.001": 0, "0.0025": 2, "0.5": 3, "600.0": 3, "+Inf": 4}  # cumulative, as Prometheus wants
    assert value(samples, "ferry_job_run_seconds_count", task="echo") == 4
    assert value(samples, "ferry_job_run_seconds_sum", task="echo") == pytest.approx(700.604)
    assert value(samples, "ferry_job_wait_seconds_count", task="echo") == 4


def test_queue_depth_oldest_job_age_and_objects(api: httpx.Client, client: Client, conn: redis.Redis) -> None:
    first = client.submit("echo", {"value": 1}, queue="low", allow_unserved=True)  # no node runs: they wait
    client.submit("echo", {"value": 2}, queue="low", allow_unserved=True)
    conn.hset(keys.job(first), "enqueued_at", "2000-01-01T00:00:00.000000Z")  # the head is very old
    ref = client.put(np.arange(1000, dtype=np.float64))
    client.put(b"x" * 300)

    samples = scrape(api)

    assert value(samples, "ferry_queue_jobs", queue="low", status="queued") == 2
    assert value(samples, "ferry_queue_jobs", queue="default", status="queued") == 0
    assert value(samples, "ferry_queue_oldest_job_age_seconds", queue="low") > 20 * 365 * 86_400
    assert value(samples, "ferry_queue_oldest_job_age_seconds", queue="high") == 0
    assert value(samples, "ferry_objects") == 2
    assert value(samples, "ferry_objects_bytes") == ref.nbytes + 300
    assert value(samples, "ferry_redis_memory_used_bytes") > 0


def test_the_async_collector_renders_what_the_sync_one_does(redis_url: str, conn: redis.Redis,
                                                            settings: Settings) -> None:
    conn.hset(jm.METRICS_KEY, jm.jobs_field("default", "echo", "finished"), 7)
    conn.rpush(keys.queue("default"), "nojob")

    async def scrape_async() -> str:
        aconn = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await collect_async(aconn, settings)
        finally:
            await aconn.aclose()

    memory = ("ferry_redis_memory_used_bytes", ())  # moves between two reads
    with ThreadPoolExecutor(1) as thread:  # a loop of its own: the browser tests' Playwright keeps one in this thread
        from_async = parse(thread.submit(asyncio.run, scrape_async()).result())
    from_sync = parse(collect(conn, settings))
    assert from_async.pop(memory) > 0 and from_sync.pop(memory) > 0
    assert from_async == from_sync
    assert value(from_async, "ferry_jobs_total", queue="default", task="echo", outcome="finished") == 7


def test_object_totals_over_a_big_index_are_summed_a_slice_per_scrape(conn: redis.Redis, client: Client,
                                                                     settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr("shared.metrics.OBJECT_SLICE", 5)
    refs = [client.put(np.full(10 + i, i, dtype=np.int8)) for i in range(12)]
    total = sum(r.nbytes for r in refs)

    first, second, third = (parse(collect(conn, settings)) for _ in range(3))

    assert ("ferry_objects", ()) not in first and ("ferry_objects", ()) not in second  # no complete pass yet
    assert (value(third, "ferry_objects"), value(third, "ferry_objects_bytes")) == (12, total)
    client.delete(refs[0])
    later = [parse(collect(conn, settings)) for _ in range(3)]
    assert (value(later[0], "ferry_objects"), value(later[-1], "ferry_objects")) == (12, 11)  # the last complete pass


def test_node_cache_counters_count_an_object_fetched_once_per_node(api: httpx.Client, client: Client,
                                                                   start_node) -> None:
    node = start_node(processes=2)
    data = np.random.default_rng(1).random(200_000)
    ref = client.put(data)
    jobs = [client.submit("array.stats", {"data": ref, "start": i * 1000, "stop": (i + 1) * 1000}) for i in range(6)]
    assert all(client.result(j, wait_s=60).status == "finished" for j in jobs)

    samples = scrape(api)

    labels = {"node": node.node_id}
    assert value(samples, "ferry_node_cache_bytes_from_redis_total", **labels) == ref.nbytes  # once, for 6 jobs
    assert value(samples, "ferry_node_cache_misses_total", **labels) == 1
    assert value(samples, "ferry_node_cache_hits_total", **labels) == 5
    assert value(samples, "ferry_node_cache_bytes_from_shm_total", **labels) == 5 * ref.nbytes
    # the segment holds the data after a one-page header (the stored metadata the worker checks a reference against)
    assert value(samples, "ferry_node_shm_resident_bytes", **labels) == ref.nbytes + HEADER_BYTES
    assert value(samples, "ferry_node_up", **labels) == 1
    assert value(samples, "ferry_node_processes", **labels) == 2
    assert value(samples, "ferry_node_shm_budget_bytes", **labels) > 0
    workers = sum(v for (name, lab), v in samples.items()
                  if name == "ferry_workers" and dict(lab)["node"] == node.node_id)
    assert workers == 2
    assert value(samples, "ferry_queue_jobs", queue="default", status="finished") == 6


# --- these read what the job lifecycle records (counters in shared/job_metrics.py' layout, per-job log lines with
# extra job_id/task/queue/node/worker/duration_s): written to that contract, expected to pass once the lifecycle
# branch is merged. The lead removes the marker then (strict=False: an early pass shows as XPASS, not an error).
def test_finished_jobs_counter_and_histogram_count_equal_the_jobs_run(api: httpx.Client, client: Client,
                                                                      start_node) -> None:
    start_node(processes=2)
    jobs = [client.submit("echo", {"value": i}) for i in range(8)]
    assert all(client.result(j, wait_s=60).status == "finished" for j in jobs)

    samples = scrape(api)

    assert value(samples, "ferry_jobs_total", queue="default", task="echo", outcome="finished") == 8
    assert value(samples, "ferry_job_run_seconds_count", task="echo") == 8
    assert value(samples, "ferry_job_wait_seconds_count", task="echo") == 8
    assert value(samples, "ferry_job_run_seconds_sum", task="echo") >= 0


def test_a_sigkilled_workers_job_counts_as_requeued_because_the_worker_died(api: httpx.Client, client: Client,
                                                                           start_node) -> None:
    start_node(processes=2)
    job = client.submit("test.pid", {"seconds": 1.0}, retries=1)
    info = wait_for(lambda: (i := client.status(job)).status == "started" and i, what="the job to start")
    os.kill(int(info.worker.rsplit(".", 1)[1]), signal.SIGKILL)
    assert client.result(job, wait_s=60).status == "finished"

    samples = scrape(api)

    assert value(samples, "ferry_jobs_requeued_total", queue="default", task="test.pid", reason="worker_died") == 1
    assert value(samples, "ferry_jobs_total", queue="default", task="test.pid", outcome="finished") == 1


def test_metrics_need_the_token_when_one_is_set(start_producer) -> None:
    producer = start_producer(FERRY_API_TOKEN="s3cret")

    assert httpx.get(f"{producer.url}/metrics").status_code == 401
    answer = httpx.get(f"{producer.url}/metrics", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200 and "ferry_queue_jobs" in answer.text


def test_every_metric_is_documented() -> None:
    doc = (REPO / "docs" / "metrics.md").read_text()
    missing = [name for name in metric_names() if f"`{name}`" not in doc]
    assert not missing, f"docs/metrics.md does not list {missing}"


def test_json_logs_are_one_object_per_line_and_the_access_log_never_holds_the_token(start_producer) -> None:
    producer = start_producer(token="s3cret-token", FERRY_API_TOKEN="s3cret-token", FERRY_LOG_FORMAT="json")
    job = producer.http.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "allow_unserved": True}).json()["id"]
    producer.http.get(f"/v1/jobs/{job}", params={"secret": "in-the-query"})
    httpx.get(f"{producer.url}/v1/queues", headers={"Authorization": "Bearer wrong-token"})

    # The access line is written once the response is sent: wait for the last request's.
    wait_for(lambda: "/v1/queues" in producer.output(), what="the access log line of the last request")
    lines = [json.loads(line) for line in producer.output().splitlines() if line.strip()]  # every line parses

    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys()
    access = [line for line in lines if line["logger"] == "ferry.access"]
    submit = next(line for line in access if line["method"] == "POST" and line["path"] == "/v1/jobs")
    assert submit["status"] == 202 and submit["duration_s"] > 0 and submit["client"].startswith("127.0.0.1:")
    assert next(line for line in access if line["path"] == "/v1/queues")["status"] == 401
    assert next(line for line in access if line["path"] == f"/v1/jobs/{job}")["status"] == 200
    output = producer.output()
    assert "s3cret-token" not in output and "wrong-token" not in output and "in-the-query" not in output


def test_text_access_log_lines_name_method_path_status_and_duration(start_producer) -> None:
    producer = start_producer()
    producer.http.get("/v1/queues")

    line = wait_for(lambda: next((line for line in producer.output().splitlines()
                                  if "ferry.access" in line and "/v1/queues" in line), None),
                    what="the access log line")

    assert " GET /v1/queues 200 " in line and "ms 127.0.0.1:" in line


def test_json_logs_carry_the_job_id_from_submit_to_finish(start_producer, start_node, env: dict[str, str]) -> None:
    producer = start_producer(FERRY_LOG_FORMAT="json", FERRY_LOG_LEVEL="DEBUG")
    node = start_node(processes=1, env={**env, "FERRY_LOG_FORMAT": "json", "FERRY_LOG_LEVEL": "DEBUG"})
    job = producer.http.post("/v1/jobs", json={"task": "echo", "args": {"value": 1}, "allow_unserved": True}).json()["id"]
    assert producer.http.get(f"/v1/jobs/{job}/result", params={"wait_s": 30}).json()["status"] == "finished"

    def lines_of(process) -> list[dict]:
        return [json.loads(line) for line in process.output().splitlines() if line.strip()]

    submitted = [line for line in lines_of(producer) if line.get("job_id") == job]
    assert submitted and submitted[0]["task"] == "echo" and submitted[0]["queue"] == "default"
    # the worker logs the finish after recording it: the result can be read before the line is written
    finished = wait_for(lambda: [line for line in lines_of(node)
                                 if line.get("job_id") == job and line.get("duration_s") is not None],
                        what="the node's log line for the finished job")
    assert finished[-1]["task"] == "echo" and finished[-1]["queue"] == "default"
    assert finished[-1]["node"] == node.node_id and finished[-1]["worker"].startswith(node.node_id)
