"""Objects in Redis: the chunk size is recorded with each object, so any reader gets the bytes back."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from shared.client import Client
from shared.objects.store import IN_FLIGHT_BYTES, ObjectStore


@pytest.mark.parametrize("chunk_bytes", [1_000_003, IN_FLIGHT_BYTES, 3 * IN_FLIGHT_BYTES])
def test_an_object_written_with_any_chunk_size_reads_back_equal(client: Client, conn: redis.Redis, chunk_bytes: int) -> None:
    data = np.random.default_rng(chunk_bytes).random(4_000_000)  # 32 MB: several round trips for every size
    writer = ObjectStore(conn, chunk_bytes, 600)  # e.g. a client configured with another FERRY_OBJECT_CHUNK_BYTES
    ref = writer.put(data)
    assert len(conn.keys(f"ferry:obj:{ref.id}:chunk:*")) == -(-data.nbytes // chunk_bytes)
    assert client.objects.chunk_bytes != chunk_bytes
    np.testing.assert_array_equal(client.get(ref), data)
