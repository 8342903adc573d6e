"""What keeps a forked worker process's private memory small (gaps item 1: workers' PSS)."""

from __future__ import annotations

import importlib.metadata

import pytest

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
