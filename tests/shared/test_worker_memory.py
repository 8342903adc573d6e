"""What keeps a forked worker process's private memory small (gaps item 1: workers' PSS)."""

from __future__ import annotations

import importlib.metadata
import io
import logging
import sys
from collections.abc import Iterator

import pytest

from shared.logs import JsonFormatter, configure
from shared.redis_conn import connect


def test_a_new_client_never_walks_package_metadata(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py reads its version (for CLIENT SETINFO) per client unless told: in a worker process right after
    the fork, that walk writes ~1.5 MB of the supervisor's shared pages (copy-on-write). Ours is resolved once."""

    def walked(name: str) -> str:
        raise AssertionError(f"importlib.metadata.version({name!r}) called while building a client")

    monkeypatch.setattr(importlib.metadata, "version", walked)
    conn = connect(redis_url)
    try:
        assert conn.ping()
        driver = conn.connection_pool.connection_kwargs.get("driver_info")  # what CLIENT SETINFO sends (Redis 7.2+)
        version = driver.lib_version if driver else conn.connection_pool.connection_kwargs["lib_version"]
        assert version == importlib.metadata.distribution("redis").version
    finally:
        conn.close()


@pytest.fixture()
def root_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were, whatever the test configured."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configuring_logging_again_the_same_way_changes_nothing(root_logging: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked worker process configures logging as its supervisor did: that second call keeps the handler (redoing
    it would write to every logger object, copying ~0.9 MB of the supervisor's pages), any difference redoes it."""
    configure("INFO", "text")
    first = logging.getLogger().handlers[0]
    configure("INFO", "text")
    assert logging.getLogger().handlers == [first]

    configure("DEBUG", "text")
    assert logging.getLogger().handlers[0] is not first and logging.getLogger().level == logging.DEBUG
    configure("DEBUG", "json")
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    json_handler = logging.getLogger().handlers[0]
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a new stderr (pytest's capture does this): log there
    configure("DEBUG", "json")
    assert logging.getLogger().handlers[0] is not json_handler
    logging.getLogger("ferry.test").debug("to the new stderr")
    assert "to the new stderr" in sys.stderr.getvalue()
