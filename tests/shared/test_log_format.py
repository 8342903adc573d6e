"""The text log format keeps its time stamp right while formatting it once per second."""

from __future__ import annotations

import logging
import time

from shared.logs import FORMAT, TextFormatter


def test_each_line_shows_the_second_it_was_logged_in() -> None:
    formatter = TextFormatter(FORMAT, datefmt="%H:%M:%S")
    record = logging.LogRecord("ferry.access", logging.INFO, __file__, 0, "GET /x", None, None)
    lines = []
    for created in (1_000_000.1, 1_000_000.9, 1_000_001.2, 1_000_000.5):
        record.created = created
        lines.append(formatter.format(record))

    expected = [time.strftime("%H:%M:%S", time.localtime(t)) for t in (1_000_000, 1_000_000, 1_000_001, 1_000_000)]
    assert [line.split()[0] for line in lines] == expected
    assert lines[0].endswith("INFO    ferry.access: GET /x")
