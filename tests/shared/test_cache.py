"""The node cache: every read is one hit or one miss, and a failed fetch leaves nothing behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from shared import keys
from shared.client import Client
from shared.errors import ObjectNotFound
from shared.objects import segments
from shared.objects.cache import NodeCache
from shared.objects.ref import ObjectRef
from tests.support import shm_files


@pytest.fixture()
def caches(client: Client, node_id: str):
    made: list[NodeCache] = []

    def make(budget: int = 1 << 30) -> NodeCache:
        made.append(NodeCache(node_id, segments.SHM_DIR, budget, client.objects))
        return made[-1]

    yield make
    for cache in made:
        cache.close()
    for name in shm_files(node_id, locks=True):  # what a node's stop would sweep
        os.unlink(f"/dev/shm/{name}")


def test_each_read_counts_once_whether_fetched_attached_or_already_mapped(client: Client, caches) -> None:
    data = np.arange(200_000, dtype=np.float64)
    ref = client.put(data)
    fetcher, reader = caches(), caches()  # two caches of one node stand for two of its worker processes
    assert fetcher.array(ref).sum() == data.sum()  # a miss: fetched from Redis
    assert reader.array(ref).sum() == data.sum()  # the segment exists: attached without the object's lock
    assert reader.array(ref).sum() == data.sum()  # already mapped in this process
    assert dict(fetcher.counters) == {"misses": 1, "bytes_from_redis": ref.nbytes}
    assert dict(reader.counters) == {"hits": 2, "bytes_from_shm": 2 * ref.nbytes}
    assert fetcher.resident_bytes() == sum(os.stat(f"/dev/shm/{n}").st_size for n in shm_files(fetcher.node_id))


def test_a_failed_fetch_leaves_no_segment_charges_nothing_and_the_same_process_fetches_later(
    client: Client, caches, node_id: str
) -> None:
    data = np.arange(1_000_000, dtype=np.float64)
    ref = client.objects.put(data)
    client.objects.delete(ref.id)  # gone from Redis, as if it had expired before the job ran
    claimed_big = ObjectRef(id="0" * 32, kind="array", dtype="<f8", shape=(50_000_000,), nbytes=400_000_000)
    cache = caches(budget=300_000_000)
    for missing in (ref, claimed_big):
        with pytest.raises(ObjectNotFound, match=f"object {missing.id} does not exist .* put the data again"):
            cache.array(missing)
        assert shm_files(node_id) == []  # no .part left in /dev/shm
        assert cache.resident_bytes() == 0  # and nothing charged to the budget
    assert client.put(data) == ref
    assert cache.array(ref).sum() == data.sum()  # the same process, the same object: fetched fine now
    [segment] = shm_files(node_id)
    assert segment.endswith(ref.id)


def test_a_stored_object_shorter_than_its_metadata_fails_naming_both_sizes(
    client: Client, conn, caches, node_id: str
) -> None:
    data = np.ones(300_000)
    ref = client.put(data)
    conn.set(keys.object_chunk(ref.id, 1), b"")  # Redis lost most of the bytes
    cache = caches()
    with pytest.raises(ObjectNotFound, match=f"incomplete in Redis \\(2097152 of {ref.nbytes} bytes\\)"):
        cache.array(ref)
    assert shm_files(node_id) == [] and cache.resident_bytes() == 0
