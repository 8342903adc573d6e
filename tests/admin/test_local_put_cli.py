"""`ferry objects put --durable`: the same word as `Client.put(durable=)` and `POST /v1/objects?durable=`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from shared import keys
from shared.objects.shm import deployment_id
from shared.settings import get_settings
from tests.support import shm_files


def test_objects_put_durable_returns_once_in_redis_and_fills_the_local_nodes_memory(
    cli, start_node, conn: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_PUT_LOCAL_COPY", "1")  # the suite turns the same-host copy off
    get_settings.cache_clear()
    node = start_node(processes=1)
    np.save(tmp_path / "big.npy", np.random.default_rng(21).random(1024 * 1024))  # 8 MB
    put = cli("objects", "put", str(tmp_path / "big.npy"), "--durable", "--json")
    assert put.exit_code == 0, put.stderr
    object_id = json.loads(put.stdout)["id"]
    assert conn.exists(keys.object_meta(object_id)) and not conn.exists(keys.object_pending(object_id))
    assert shm_files(node.node_id) == [keys.segment(deployment_id(conn), node.node_id, object_id)]
    assert "--durable" in cli("objects", "put", "--help").stdout
