"""The dashboard's files: served under /ui without the token (they hold no data), with a policy that keeps
every request on the producer's origin, and nothing in them that points off the machine."""

from __future__ import annotations

import re

import httpx

from services.producer.dashboard import STATIC


def test_the_page_and_its_assets_are_served_with_a_same_origin_policy(start_producer) -> None:
    producer = start_producer(FERRY_API_TOKEN="s3cret")  # the page loads without it; its data does not

    root = httpx.get(f"{producer.url}/ui")
    page = httpx.get(f"{producer.url}/ui/")
    script = httpx.get(f"{producer.url}/ui/app.js")
    data = httpx.get(f"{producer.url}/v1/jobs")

    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    assert page.status_code == 200 and "<script src=\"app.js\">" in page.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert data.status_code == 401


def test_no_asset_refers_to_another_host() -> None:
    files = sorted(STATIC.iterdir())

    assert {f.name for f in files} >= {"index.html", "app.js", "style.css"}
    for path in files:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path.name
