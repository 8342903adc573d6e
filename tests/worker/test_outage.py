"""Riding out a Redis outage: the same call retried until it works, one log line when it starts and one at its end."""

from __future__ import annotations

import logging

import pytest
import redis

from services.worker.outage import GaveUp, Outage


def test_an_outage_is_logged_once_and_the_call_retried_until_it_works(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise redis.ConnectionError("Connection refused")
        return "recorded"

    outage = Outage("worker w", "redis://:secret@host:6379/0", logging.getLogger("test.outage"))
    with caplog.at_level(logging.INFO, logger="test.outage"):
        assert outage.call(flaky, "recording a result", sleep=lambda s: None) == "recorded"
    assert len(calls) == 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable while recording a result" in lines[0] and "secret" not in lines[0]
    assert "is back after" in lines[1]
    assert not any(r.exc_info for r in caplog.records)  # no traceback


def test_a_stopping_process_gives_up_when_told() -> None:
    def down() -> None:
        raise redis.TimeoutError("Timeout reading from socket")

    outage = Outage("worker w", "redis://host:6379/0", logging.getLogger("test.outage"))
    with pytest.raises(GaveUp):
        outage.call(down, "claiming", sleep=lambda s: None, give_up=lambda: True)
