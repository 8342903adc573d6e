"""The node cache's counters: every read is one hit or one miss, whichever way it found the segment."""

from __future__ import annotations

import numpy as np

from shared.client import Client
from shared.objects import segments
from shared.objects.cache import NodeCache, sweep_node
from tests.support import shm_files


def test_each_read_counts_once_whether_fetched_attached_or_already_mapped(client: Client, node_id: str) -> None:
    data = np.arange(200_000, dtype=np.float64)
    ref = client.put(data)
    # Two caches of one node stand for two of its worker processes.
    fetcher, reader = (NodeCache(node_id, segments.SHM_DIR, 1 << 30, client.objects) for _ in range(2))
    try:
        assert fetcher.array(ref).sum() == data.sum()  # a miss: fetched from Redis
        assert reader.array(ref).sum() == data.sum()  # the segment exists: attached without the object's lock
        assert reader.array(ref).sum() == data.sum()  # already mapped in this process
        assert dict(fetcher.counters) == {"misses": 1, "bytes_from_redis": ref.nbytes}
        assert dict(reader.counters) == {"hits": 2, "bytes_from_shm": 2 * ref.nbytes}
    finally:
        fetcher.close()
        reader.close()
        sweep_node(segments.SHM_DIR, node_id)
    assert shm_files(node_id, locks=True) == []
