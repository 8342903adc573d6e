"""Objects in Redis: chunked writes and reads, so a 1 GB array needs no huge command and no long socket wait.

Layout: `ferry:obj:<id>:chunk:<n>` strings of `chunk_bytes` each, then the meta hash `ferry:obj:<id>`.
The meta hash is written last and deleted first: its presence means the object is complete.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import redis

from shared import keys
from shared.errors import ObjectNotFound
from shared.objects.ref import ObjectKind, ObjectRef, normalize, ref_for
from shared.timeutil import unix_now

log = logging.getLogger("ferry.objects")

CHUNKS_PER_ROUND_TRIP = 4  # 4 × 8 MiB in flight: enough to keep the socket busy, little extra memory


class ObjectStore:
    """Puts, fetches, lists and deletes objects in Redis."""

    def __init__(self, conn: redis.Redis, chunk_bytes: int, default_ttl_s: int) -> None:
        self.conn = conn
        self.chunk_bytes = chunk_bytes
        self.default_ttl_s = default_ttl_s

    def put(self, data: Any, ttl_s: int | None = None) -> ObjectRef:
        """Store a numpy array or bytes once; a second put of equal data only refreshes the TTL."""
        kind, array = normalize(data)
        ref = ref_for(kind, array)
        self.put_prepared(ref, array, ttl_s)
        return ref

    def put_prepared(self, ref: ObjectRef, array: np.ndarray, ttl_s: int | None = None) -> None:
        ttl = ttl_s or self.default_ttl_s
        nchunks = self._chunk_count(ref.nbytes)
        if self.conn.exists(keys.object_meta(ref.id)) and self._refresh_ttl(ref.id, nchunks, ttl):
            log.debug("object %s: already stored, TTL refreshed", ref.id)
            return
        raw = memoryview(array).cast("B") if ref.nbytes else memoryview(b"")
        pipe = self.conn.pipeline(transaction=False)
        for index in range(nchunks):
            start = index * self.chunk_bytes
            pipe.set(keys.object_chunk(ref.id, index), raw[start : start + self.chunk_bytes], ex=ttl)
            if (index + 1) % CHUNKS_PER_ROUND_TRIP == 0:
                pipe.execute()
        meta = ref.model_dump(mode="json")
        pipe.hset(
            keys.object_meta(ref.id),
            mapping={
                "kind": meta["kind"],
                "dtype": meta["dtype"],
                "shape": ",".join(str(n) for n in ref.shape),
                "nbytes": ref.nbytes,
                "chunk_bytes": self.chunk_bytes,
                "chunks": nchunks,
                "created_at": unix_now(),
            },
        )
        pipe.expire(keys.object_meta(ref.id), ttl)
        pipe.zadd(keys.OBJECTS, {ref.id: unix_now()})
        pipe.execute()
        log.info("object %s: stored %d bytes in %d chunks, ttl %ds", ref.id, ref.nbytes, nchunks, ttl)

    def _refresh_ttl(self, object_id: str, nchunks: int, ttl: int) -> bool:
        """Extend every key of a stored object; False when a chunk is already gone (then rewrite it)."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.expire(keys.object_meta(object_id), ttl)
        for index in range(nchunks):
            pipe.expire(keys.object_chunk(object_id, index), ttl)
        return all(pipe.execute())

    def _chunk_count(self, nbytes: int) -> int:
        return max(1, math.ceil(nbytes / self.chunk_bytes))

    def ref(self, object_id: str) -> ObjectRef:
        """The reference for a stored object id."""
        return self._ref_from_meta(object_id, self._meta(object_id))

    def _meta(self, object_id: str) -> dict[str, str]:
        raw = self.conn.hgetall(keys.object_meta(object_id))
        if not raw:
            raise ObjectNotFound(f"object {object_id} does not exist (it expired, was deleted, or was never put)")
        return {k.decode(): v.decode() for k, v in raw.items()}

    @staticmethod
    def _ref_from_meta(object_id: str, meta: dict[str, str]) -> ObjectRef:
        shape = tuple(int(n) for n in meta["shape"].split(",") if n != "")
        return ObjectRef(
            id=object_id, kind=ObjectKind(meta["kind"]), dtype=meta["dtype"], shape=shape, nbytes=int(meta["nbytes"])
        )

    def read_into(self, ref: ObjectRef, buffer: memoryview) -> int:
        """Copy the object's bytes into `buffer` (e.g. a shared-memory segment); returns bytes read."""
        meta = self._meta(ref.id)
        chunk_bytes, nchunks = int(meta["chunk_bytes"]), int(meta["chunks"])
        offset = 0
        for chunk in self._chunks(ref.id, nchunks, chunk_bytes):
            buffer[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        if offset != ref.nbytes:
            raise ObjectNotFound(f"object {ref.id} is incomplete in Redis ({offset} of {ref.nbytes} bytes); put it again")
        return offset

    def _chunks(self, object_id: str, nchunks: int, chunk_bytes: int) -> Iterator[bytes]:
        for first in range(0, nchunks, CHUNKS_PER_ROUND_TRIP):
            pipe = self.conn.pipeline(transaction=False)
            for index in range(first, min(first + CHUNKS_PER_ROUND_TRIP, nchunks)):
                pipe.get(keys.object_chunk(object_id, index))
            for index, chunk in enumerate(pipe.execute(), start=first):
                if chunk is None:
                    raise ObjectNotFound(f"object {object_id}: chunk {index} has expired or was deleted; put it again")
                yield chunk

    def get(self, ref_or_id: ObjectRef | str) -> np.ndarray | bytes:
        """The object as a new numpy array (arrays) or bytes (blobs), read from Redis."""
        ref = self.ref(ref_or_id) if isinstance(ref_or_id, str) else ref_or_id
        out = np.empty(ref.nbytes, dtype=np.uint8)
        self.read_into(ref, memoryview(out).cast("B") if ref.nbytes else memoryview(bytearray()))
        if ref.kind is ObjectKind.BYTES:
            return out.tobytes()
        return out.view(np.dtype(ref.dtype)).reshape(ref.shape)

    def delete(self, object_id: str) -> bool:
        """Remove an object; False if it did not exist. Nodes drop their copies at their next eviction or gc."""
        raw = self.conn.hget(keys.object_meta(object_id), "chunks")
        pipe = self.conn.pipeline(transaction=True)
        pipe.delete(keys.object_meta(object_id))  # first: the object stops being complete at once
        for index in range(int(raw) if raw else 0):
            pipe.delete(keys.object_chunk(object_id, index))
        pipe.zrem(keys.OBJECTS, object_id)
        pipe.execute()
        return raw is not None

    def list(self) -> list[tuple[ObjectRef, float, int]]:
        """Every stored object with its creation time and remaining TTL (seconds)."""
        ids = [i.decode() for i in self.conn.zrange(keys.OBJECTS, 0, -1)]
        pipe = self.conn.pipeline(transaction=False)
        for object_id in ids:
            pipe.hgetall(keys.object_meta(object_id))
            pipe.ttl(keys.object_meta(object_id))
        replies = pipe.execute()
        found = []
        for object_id, raw, ttl in zip(ids, replies[::2], replies[1::2]):
            if raw:
                meta = {k.decode(): v.decode() for k, v in raw.items()}
                found.append((self._ref_from_meta(object_id, meta), float(meta.get("created_at", 0)), int(ttl)))
        return found

    def gc(self) -> list[str]:
        """Forget index entries of objects that expired; returns their ids (chunks expire on their own)."""
        ids = [i.decode() for i in self.conn.zrange(keys.OBJECTS, 0, -1)]
        pipe = self.conn.pipeline(transaction=False)
        for object_id in ids:
            pipe.exists(keys.object_meta(object_id))
        gone = [object_id for object_id, alive in zip(ids, pipe.execute()) if not alive]
        if gone:
            self.conn.zrem(keys.OBJECTS, *gone)
        return gone
