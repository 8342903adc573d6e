"""The token is checked before the body is read; /docs and /redoc come from packaged assets, behind the token."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

TOKEN = "s3cret"


def test_a_request_without_the_token_is_401_before_its_body_is_parsed(start_producer) -> None:
    producer = start_producer(FERRY_API_TOKEN=TOKEN, FERRY_MAX_REQUEST_BYTES="2000")

    malformed = httpx.post(
        f"{producer.url}/v1/jobs", content=b'{"task": ', headers={"Content-Type": "application/json"}
    )
    oversized = httpx.post(f"{producer.url}/v1/jobs", content=b"x" * 5000, headers={"Content-Type": "application/json"})
    with_token = httpx.post(
        f"{producer.url}/v1/jobs",
        content=b'{"task": ',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )

    assert (malformed.status_code, oversized.status_code) == (401, 401)
    assert malformed.json()["error"]["type"] == "Unauthorized"
    assert with_token.status_code == 400  # with the token, the body is read and judged


def test_docs_pages_openapi_and_assets_need_the_token_and_take_it_as_basic_auth_too(start_producer) -> None:
    producer = start_producer(FERRY_API_TOKEN=TOKEN)
    basic = "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()

    for path in ("/docs", "/redoc", "/openapi.json", "/static-docs/swagger-ui-bundle.js"):
        refused = httpx.get(producer.url + path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Basic")  # the browser asks for the password
        assert httpx.get(producer.url + path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        assert httpx.get(producer.url + path, headers={"Authorization": basic}).status_code == 200, path
    assert (
        httpx.get(f"{producer.url}/v1/queues", headers={"Authorization": basic}).status_code == 401
    )  # the API: Bearer only
    assert httpx.get(f"{producer.url}/healthz").status_code == 200


def test_the_docs_pages_load_no_asset_from_another_host(api: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = api.get(page).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html, page
        assert "/static-docs/" in html
    assert api.get("/static-docs/redoc.standalone.js").status_code == 200


@pytest.mark.browser
@pytest.mark.slow
def test_docs_render_the_operations_in_headless_chromium_with_no_network(start_producer, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    producer = start_producer(FERRY_API_TOKEN=TOKEN)
    local = urlsplit(producer.url).netloc
    elsewhere: list[tuple[str, str]] = []

    def only_local(route) -> None:  # the network: nothing but the producer answers
        if urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            elsewhere.append((route.request.resource_type, route.request.url))
            route.abort()

    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=chromium,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
            http_credentials={"username": "docs", "password": TOKEN},
        )
        try:
            page = context.new_page()
            page.route("**/*", only_local)
            page.goto(f"{producer.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = {el.inner_text().replace("\u200b", "") for el in page.query_selector_all(".opblock-summary-path")}
            page.goto(f"{producer.url}/redoc")
            page.wait_for_function("document.body.innerText.includes('Submit a job')", timeout=20_000)
        finally:
            context.close()

    assert {"/v1/jobs", "/v1/jobs/{job_id}/result", "/v1/objects", "/healthz"} <= paths
    # Only ReDoc's "API docs by Redocly" footer logo is fetched from its CDN; blocked, it leaves an empty image.
    assert [kind for kind, _ in elsewhere] in ([], ["image"]), elsewhere
