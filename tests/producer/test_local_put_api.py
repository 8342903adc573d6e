"""`POST /v1/objects?durable=true`: the same word as `Client.put(durable=)` and `ferry objects put --durable`."""

from __future__ import annotations

import numpy as np
import redis

from shared import keys
from shared.objects.shm import deployment_id
from tests.support import shm_files


def test_an_upload_with_durable_is_in_redis_when_answered_and_in_the_local_nodes_memory(
    start_producer, start_node, conn: redis.Redis
) -> None:
    node = start_node(processes=1)
    producer = start_producer(FERRY_PUT_LOCAL_COPY="1")  # the suite turns the same-host copy off
    data = np.random.default_rng(22).random(1024 * 1024)  # 8 MB
    reply = producer.http.post("/v1/objects", params={"dtype": "float64", "durable": "true"}, content=data.tobytes(),
                               headers={"Content-Type": "application/octet-stream"})
    assert reply.status_code == 201, reply.text
    object_id = reply.json()["id"]
    assert conn.exists(keys.object_meta(object_id)) and not conn.exists(keys.object_pending(object_id))
    assert shm_files(node.node_id) == [keys.segment(deployment_id(conn), node.node_id, object_id)]
