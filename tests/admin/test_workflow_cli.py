"""`ferry workflow submit | status | cancel` and `ferry submit --depends-on`, against a real node."""

from __future__ import annotations

import json


def test_workflow_submit_status_cancel(cli, start_node, tmp_path) -> None:
    start_node(processes=1)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"workflow": {"chain": [
        {"group": [{"task": "echo", "args": {"value": 1}}, {"task": "echo", "args": {"value": 2}}]},
        {"task": "test.collect"},
    ]}}))
    submitted = cli("workflow", "submit", str(path), "--wait-s", "20", "--json")
    assert submitted.exit_code == 0, submitted.output
    info = json.loads(submitted.stdout)
    assert info["status"] == "finished" and info["result"]["input"] == [1, 2]
    status = cli("workflow", "status", info["id"])
    assert status.exit_code == 0 and "finished" in status.stdout
    assert cli("workflow", "cancel", info["id"]).exit_code == 5  # everything had ended


def test_submit_depends_on_and_bad_file(cli, served, tmp_path) -> None:
    first = cli("submit", "echo", "--arg", "value=1").stdout.strip()
    second = cli("submit", "echo", "--depends-on", f"{first}:run", "--json")
    assert second.exit_code == 0 and json.loads(second.stdout)["status"] == "deferred"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = cli("workflow", "submit", str(bad))
    assert result.exit_code == 2 and "not valid JSON" in result.output
