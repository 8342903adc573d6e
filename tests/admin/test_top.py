"""`ferry top`: the picture of `ferry info`, refreshed; piped, each refresh is printed after the last."""

from __future__ import annotations

import re

from shared.client import Client


def test_top_refreshes_the_picture_the_number_of_times_asked(ferry, client: Client, start_node) -> None:
    node = start_node(processes=1)
    jobs = [client.submit("echo", {"value": i}) for i in range(3)]
    assert all(client.result(j, wait_s=30).status == "finished" for j in jobs)

    done = ferry("top", "--iterations", "2", "--interval-s", "0.2", env_overrides={"COLUMNS": "160"})

    assert done.returncode == 0, done.stderr
    frames = done.stdout.split("Ferry  ")[1:]
    assert len(frames) == 2
    for frame in frames:
        # queued, started, finished, failed, canceled
        assert re.search(r"^default\s+0\s+0\s+3\s+0\s+0\s+0\s*$", frame, re.M), frame  # ... canceled, scheduled
        assert "Last 5 min" in frame
        assert re.search(r"finished [ ▁▂▃▄▅▆▇█]{30} 3 ", frame)  # 30 marks of 10 s, then the sum
        assert node.node_id in frame and "Node caches" in frame
        assert f"{node.node_id}.0." in frame  # its worker process


def test_top_without_nodes_says_how_to_start_one(ferry) -> None:
    done = ferry("top", "-n", "1")

    assert done.returncode == 0, done.stderr
    assert "no worker node has registered; start one with `ferry worker`" in done.stdout
