"""The dashboard in a real browser: it loads with nothing leaving the machine, shows what Redis holds,
filters jobs, cancels a running job, and updates without a reload. Screenshots of every page are saved."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from shared.client import Client
from tests.support import REPO, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "dashboard-s3cret"


@pytest.fixture()
def stack(start_producer, start_node, client: Client):
    """A producer with a token, a node with 2 processes, an object read by 4 jobs, echo jobs, one failed job."""
    producer = start_producer(token=TOKEN, FERRY_API_TOKEN=TOKEN)
    node = start_node(processes=2)
    ref = client.put(np.arange(50_000, dtype=np.float64))
    jobs = [client.submit("array.stats", {"data": ref, "start": i * 100, "stop": (i + 1) * 100}) for i in range(4)]
    jobs += [client.submit("echo", {"value": i}, queue="high") for i in range(3)]
    failed = client.submit("test.fail", {"message": "on purpose"}, retries=0).id
    for job in [*jobs, failed]:
        assert client.result(job, wait_s=60).ready
    return producer, node, ref, failed


def open_dashboard(offline_page, producer, hash_route: str = "", **size: int):
    view = offline_page(**size)
    page = view.page
    page.goto(f"{producer.url}/ui/{hash_route}")
    page.fill("#token", TOKEN)  # the producer has a token: the page asks for it first
    page.click("#login button")
    page.wait_for_selector("#login", state="hidden")
    return page


def ferry_info_json(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "services.admin.cli", "info", "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cell(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


def test_every_page_shows_what_redis_holds_with_no_request_leaving_the_machine(stack, offline_page, screenshots,
                                                                                client: Client, env) -> None:
    producer, node, ref, failed = stack
    page = open_dashboard(offline_page, producer)

    page.wait_for_selector('[data-testid=queues] tr[data-queue="default"]')
    page.wait_for_function("document.querySelector('[data-testid=throughput-chart]')?.dataset.finished >= 6")
    queues = {q.name: q for q in client.admin.queues()}
    for name in ("default", "high"):
        row = f'[data-testid=queues] tr[data-queue="{name}"]'
        assert cell(page, f"{row} [data-field=finished]") == str(queues[name].finished)
        assert cell(page, f"{row} [data-field=failed]") == str(queues[name].failed)
    assert queues["default"].finished == 4 and queues["default"].failed == 1 and queues["high"].finished == 3
    assert node.node_id in page.inner_text("#node-health")
    page.screenshot(path=screenshots / "overview.png", full_page=True)

    page.click("nav a[data-page=jobs]")
    page.wait_for_selector("[data-testid=jobs] tr[data-job]")
    assert page.locator("[data-testid=jobs] tr[data-job]").count() == 8
    page.screenshot(path=screenshots / "jobs.png", full_page=True)

    page.click(f'[data-testid=jobs] tr[data-job="{failed}"] a')
    page.wait_for_selector("[data-testid=job-traceback]")
    assert "on purpose" in page.inner_text("[data-testid=job-traceback]")
    assert json.loads(page.inner_text("[data-testid=job-args]")) == {"message": "on purpose"}
    assert page.is_enabled("[data-testid=requeue]") and not page.is_enabled("[data-testid=cancel]")
    page.screenshot(path=screenshots / "job-failed.png", full_page=True)

    page.click("nav a[data-page=nodes]")
    card = f'section[data-node="{node.node_id}"]'
    page.wait_for_selector(card)
    info = next(n for n in ferry_info_json(env)["nodes"] if n["id"] == node.node_id)
    for stat in ("bytes_from_redis", "bytes_from_shm", "hits", "misses", "evictions", "resident_bytes"):
        assert page.get_attribute(f"{card} [data-stat={stat}]", "data-value") == str(info["stats"][stat]), stat
    assert cell(page, f"{card} [data-stat=hits]") == str(info["stats"]["hits"]) == "3"
    assert cell(page, f"{card} [data-stat=misses]") == "1"
    assert info["stats"]["bytes_from_redis"] == ref.nbytes
    assert page.get_attribute(f"{card} [data-stat=shm_budget_bytes]", "data-value") == str(info["shm_budget_bytes"])
    page.screenshot(path=screenshots / "nodes.png", full_page=True)

    page.click("nav a[data-page=objects]")
    row = f'[data-testid=objects] tr[data-object="{ref.id}"]'
    page.wait_for_selector(row)
    assert node.node_id in page.inner_text(row)  # the node holds it in this machine's /dev/shm
    page.screenshot(path=screenshots / "objects.png", full_page=True)


def test_jobs_filter_by_status_queue_and_task(stack, offline_page, screenshots) -> None:
    producer, _node, _ref, failed = stack
    page = open_dashboard(offline_page, producer, "#/jobs")
    page.wait_for_selector("[data-testid=jobs] tr[data-job]")

    page.select_option("[data-testid=filter-status]", "failed")
    page.wait_for_function("location.hash === '#/jobs?status=failed' && "
                           "[...document.querySelectorAll('[data-testid=jobs] tr[data-job]')].length === 1")
    assert page.get_attribute("[data-testid=jobs] tr[data-job]", "data-job") == failed

    page.select_option("[data-testid=filter-status]", "")
    page.wait_for_function("document.querySelector('[data-testid=filter-queue] option[value=high]') !== null")
    page.select_option("[data-testid=filter-queue]", "high")
    page.wait_for_function("location.hash === '#/jobs?queue=high' && [...document.querySelectorAll("
                           "'[data-testid=jobs] tr[data-job] td:nth-child(3)')].map(td => td.textContent).join() "
                           "=== 'high,high,high'")
    assert set(page.locator("[data-testid=jobs] tr[data-job] td:nth-child(2)").all_inner_texts()) == {"echo"}

    page.goto(f"{producer.url}/ui/#/jobs?task=array.stats")
    page.wait_for_function("[...document.querySelectorAll('[data-testid=jobs] tr[data-job] td:nth-child(2)')]"
                           ".map(td => td.textContent).join() === 'array.stats,array.stats,array.stats,array.stats'")
    page.fill("[data-testid=filter-task]", "no.such.task")
    page.press("[data-testid=filter-task]", "Enter")
    page.wait_for_selector("[data-testid=no-jobs]")
    page.screenshot(path=screenshots / "jobs-filtered-empty.png", full_page=True)


def test_a_running_job_is_canceled_from_its_page(start_producer, start_node, client: Client, offline_page,
                                                 screenshots) -> None:
    producer = start_producer(token=TOKEN, FERRY_API_TOKEN=TOKEN)
    start_node(processes=1)
    job = client.submit("sleep", {"seconds": 60}, retries=0)
    wait_for(lambda: client.status(job).status == "started", what="the job to start")
    page = open_dashboard(offline_page, producer, f"#/job/{job}")
    page.wait_for_function("document.querySelector('[data-testid=job-status]')?.textContent === 'started'")
    page.screenshot(path=screenshots / "job-running.png", full_page=True)

    page.click("[data-testid=cancel]")

    wait_for(lambda: client.status(job).status == "canceled", timeout=30, what="the job to be canceled")
    page.wait_for_function("document.querySelector('[data-testid=job-status]')?.textContent === 'canceled'")
    assert not page.is_enabled("[data-testid=cancel]")
    page.screenshot(path=screenshots / "job-canceled.png", full_page=True)


def test_the_overview_updates_live_when_a_job_finishes(start_producer, start_node, client: Client, offline_page,
                                                       screenshots) -> None:
    producer = start_producer(token=TOKEN, FERRY_API_TOKEN=TOKEN)
    start_node(processes=1, queues="low")
    page = open_dashboard(offline_page, producer, width=390, height=844)  # a phone's width
    finished = '[data-testid=queues] tr[data-queue="low"] [data-field=finished]'
    page.wait_for_selector(finished)
    assert cell(page, finished) == "0"
    page.evaluate("window.sameDocument = true")

    job = client.submit("echo", {"value": "live"}, queue="low")
    assert client.result(job, wait_s=30).status == "finished"

    page.wait_for_function(f"document.querySelector('{finished}').textContent === '1'")
    assert page.evaluate("window.sameDocument === true")  # updated in place, not reloaded
    page.screenshot(path=screenshots / "overview-phone.png", full_page=True)
    for name, ready in (("jobs", "[data-testid=jobs] tr[data-job]"), ("nodes", "section[data-node]"),
                        ("objects", "#objects p, #objects table")):
        page.click(f"nav a[data-page={name}]")
        page.wait_for_selector(ready)
        # nothing wider than a phone: wide tables scroll inside their card, the page itself does not
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
        page.screenshot(path=screenshots / f"{name}-phone.png", full_page=True)


def test_a_wrong_token_is_refused_and_asked_again(start_producer, offline_page) -> None:
    producer = start_producer(token=TOKEN, FERRY_API_TOKEN=TOKEN)
    page = offline_page().page
    page.goto(f"{producer.url}/ui/")
    page.wait_for_selector("#login", state="visible")  # asked before anything is shown
    assert page.inner_text("#main") == ""
    page.fill("#token", "wrong")
    page.click("#login button")
    page.wait_for_function("document.querySelector('#login-error').textContent.includes('refused')")
    assert page.is_visible("#login") and page.inner_text("#main") == ""
