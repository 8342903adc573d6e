"""`ferry schedules`: listing (table and --json), add/pause/resume/delete, and one-line errors with exit codes."""

from __future__ import annotations

import re

import redis

from shared import keys
from shared.client import Client
from tests.admin.conftest import Cli, Ferry
from tests.admin.helpers import one_line, parse_json


def test_schedules_list_add_pause_delete(cli: Cli, served: str, conn: redis.Redis) -> None:
    empty = cli("schedules")
    assert (empty.exit_code, empty.stdout.startswith("no schedules")) == (0, True), empty.stderr
    assert parse_json(cli("schedules", "--json").stdout) == []

    added = cli("schedules", "add", "nightly", "echo", "--cron", "0 3 * * *", "--tz", "Europe/Paris",
                  "--arg", "value=7", "--catch-up", "skip")
    assert (added.exit_code, added.stdout.strip()) == (0, "nightly"), added.stderr
    assert "next run" in added.stderr
    table = cli("schedules")
    row = next(line for line in table.stdout.splitlines() if line.startswith("nightly"))
    assert "echo" in row and "0 3 * * * (Europe/Paris)" in row and ("T01:00:00Z" in row or "T02:00:00Z" in row)
    [item] = parse_json(cli("schedules", "list", "--json").stdout)
    assert (item["schedule"]["args"], item["schedule"]["catch_up"], item["source"]) == ({"value": 7}, "skip", "api")
    assert item["next_run"].endswith("Z") or item["next_run"].endswith("+00:00")

    assert cli("schedules", "pause", "nightly").exit_code == 0
    assert "paused" in next(line for line in cli("schedules").stdout.splitlines() if line.startswith("nightly"))
    assert parse_json(cli("schedules", "resume", "nightly", "--json").stdout)["paused"] is False
    assert cli("schedules", "delete", "nightly").exit_code == 0
    assert not conn.hexists(keys.SCHEDULES, "nightly")


def test_schedule_mistakes_are_one_line_and_an_exit_code(ferry: Ferry, cli: Cli, served: str) -> None:
    real = ferry("schedules", "add", "s", "echo", "--cron", "61 * * * *")  # a real process: no traceback
    assert real.returncode == 2 and "bad cron expression '61 * * * *'" in one_line(real.stderr)
    cases = [
        (("--cron", "0 3 * * *", "--tz", "Mars/Base"), 2, "unknown time zone 'Mars/Base'"),
        (("--cron", "0 3 * * *", "--catch-up", "sometimes"), 2, "catch_up"),
        ((), 2, "give exactly one of cron"),
        (("--every-s", "5", "--queue", "no such"), 2, "queue"),
    ]
    for options, code, message in cases:
        result = cli("schedules", "add", "s", "echo", *options)
        assert result.exit_code == code, result.stderr
        assert message in one_line(result.stderr)
    unknown = cli("schedules", "add", "s", "nope", "--every-s", "5")
    assert unknown.exit_code == 4 and "no task named 'nope'" in one_line(unknown.stderr)
    missing = cli("schedules", "delete", "nope")
    assert missing.exit_code == 4 and "no schedule 'nope'" in one_line(missing.stderr)


def test_top_shows_the_schedules_when_there_are_any(ferry: Ferry, client: Client, served: str) -> None:
    client.add_schedule("every-minute", "echo", cron="* * * * *")

    done = ferry("top", "-n", "1", env_overrides={"COLUMNS": "160"})

    assert done.returncode == 0, done.stderr
    assert "Schedules" in done.stdout
    assert re.search(r"^every-minute\s+echo\s+\* \* \* \* \*\s+\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", done.stdout, re.M)
