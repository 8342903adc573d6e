"""The same job, three ways in and three ways out: curl (HTTP), the Python client, and `ferry`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest

from shared.client import Client
from tests.support import REPO


def _ferry(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "services.admin.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _curl_submit(base_url: str, body: dict) -> str:
    """POST /v1/jobs with curl when the machine has it (what a non-Python app does), else httpx."""
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sf", "-X", "POST", f"{base_url}/v1/jobs", "-H", "Content-Type: application/json",
                              "-d", json.dumps(body)], capture_output=True, text=True, timeout=30, check=True).stdout
        return json.loads(out)["id"]
    return httpx.post(f"{base_url}/v1/jobs", json=body, timeout=30).json()["id"]


@pytest.mark.parametrize("way_in", ["curl", "client", "ferry"])
def test_a_job_submitted_any_way_comes_back_through_every_way(way_in: str, api: httpx.Client, client: Client,
                                                               env: dict[str, str], start_node) -> None:
    start_node(processes=1)
    text = f"submitted by {way_in} and by {way_in}"
    expected = client.tasks.get("text.word_count").func(text=text)
    if way_in == "curl":
        job = _curl_submit(str(api.base_url).rstrip("/"), {"task": "text.word_count", "args": {"text": text}})
    elif way_in == "client":
        job = client.submit("text.word_count", {"text": text}).id
    else:
        job = _ferry(env, "submit", "text.word_count", "--arg", f"text={text}")

    over_http = api.get(f"/v1/jobs/{job}/result", params={"wait_s": 10}).json()
    assert over_http["ready"] is True and over_http["value"] == json.loads(json.dumps(expected))
    assert client.result(job, wait_s=10).value == over_http["value"]
    assert json.loads(_ferry(env, "result", job, "--wait", "10")) == over_http["value"]
