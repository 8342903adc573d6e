"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, with every request off this machine blocked.

Playwright's own browser download does not work here (and is not needed): it drives the system Chromium
through `executable_path`. Each page records any request to a host other than 127.0.0.1/localhost
and aborts it; `offline_page` fails the test at teardown if one was attempted. Screenshots go to
FERRY_SCREENSHOT_DIR (default: a pytest temporary directory).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.producer.conftest import start_producer  # noqa: F401  (a fixture, shared with the producer tests)

CHROMIUM = os.environ.get("FERRY_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
# Read at import: the `env` fixture clears FERRY_* variables before each test.
SCREENSHOT_DIR = os.environ.get("FERRY_SCREENSHOT_DIR")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra: pip install -e '.[test]'")


@pytest.fixture(scope="package")  # closed after tests/browser: its event loop must not outlive them
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def screenshots(tmp_path: Path) -> Path:
    directory = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class OfflinePage:
    """A page in a fresh context whose requests may only reach this machine."""

    def __init__(self, browser: object, width: int = 1280, height: int = 900) -> None:
        # bypass_csp: the dashboard's CSP forbids eval, which Playwright's wait_for_function needs for the
        # test's own probes; the page's own requests are still checked below (and the header in a test).
        self.context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.attempted_outside: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._only_local)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _only_local(self, route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:", "about:")) or host in LOCAL_HOSTS:
            route.continue_()  # type: ignore[attr-defined]
        else:
            self.attempted_outside.append(url)
            route.abort()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def offline_page(browser: object) -> Iterator[OfflinePage]:
    pages: list[OfflinePage] = []

    def open_page(**size: int) -> OfflinePage:
        page = OfflinePage(browser, **size)
        pages.append(page)
        return page

    yield open_page  # type: ignore[misc]
    for page in pages:
        page.close()
    for page in pages:
        assert page.attempted_outside == [], f"the dashboard tried to leave the machine: {page.attempted_outside}"
        assert page.errors == [], f"JavaScript errors: {page.errors}"
