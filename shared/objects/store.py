"""Objects in Redis: chunked writes and reads, so a 1 GB array needs no huge command and no long socket wait.

Layout: `ferry:obj:<id>:chunk:<n>` strings of `chunk_bytes` each, then the meta hash `ferry:obj:<id>`.
The meta hash is written last and deleted first: its presence means the object is complete.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from shared import keys
from shared.errors import ObjectNotFound, RedisFull
from shared.objects.ref import ObjectKind, ObjectRef, normalize, ref_for
from shared.timeutil import unix_now

log = logging.getLogger("ferry.objects")

# Bytes of requests (writes) or replies (reads) in flight per round trip: enough to keep the socket busy.
# More is slower: with 32 MiB of 8 MiB replies in flight a 100 MB read took 79 ms on Redis 7.0 instead
# of 26 (docs/benchmarks.md; most likely a freshly allocated server buffer per large reply).
IN_FLIGHT_BYTES = 8 * 1024 * 1024


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
        try:
            self._write(ref, array, nchunks, ttl)
        except redis.ResponseError as exc:
            if not _is_oom(exc):
                raise
            if not self.conn.exists(keys.object_meta(ref.id)):  # chunks of an incomplete copy would pin memory until their TTL
                self.conn.delete(*(keys.object_chunk(ref.id, i) for i in range(nchunks)))
            raise RedisFull(
                f"Redis is out of memory and refused an object of {ref.nbytes} bytes ({exc}); delete objects you no "
                "longer need (`ferry objects rm`), shorten FERRY_OBJECT_TTL_S, or raise the server's maxmemory"
            ) from exc
        log.info("object %s: stored %d bytes in %d chunks, ttl %ds", ref.id, ref.nbytes, nchunks, ttl)

    def _write(self, ref: ObjectRef, array: np.ndarray, nchunks: int, ttl: int) -> None:
        """Chunks first, the meta hash last: a reader never sees an incomplete object."""
        self._write_chunks(ref.id, memoryview(array).cast("B") if ref.nbytes else memoryview(b""), nchunks, ttl)
        meta = ref.model_dump(mode="json")
        pipe = self.conn.pipeline(transaction=False)
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

    def _write_chunks(self, object_id: str, raw: memoryview, nchunks: int, ttl: int) -> None:
        """SET every chunk, sending the caller's memory as it is.

        redis-py would copy each chunk twice (to bytes, then into the packed command); here the command
        header and the memoryview slice go to `sendall` separately, which doubled write throughput.
        """
        pool = self.conn.connection_pool
        connection = pool.get_connection()
        try:
            connection.connect()
            per_trip = chunks_per_round_trip(self.chunk_bytes)
            for first in range(0, nchunks, per_trip):
                batch = range(first, min(first + per_trip, nchunks))
                parts: list[bytes | memoryview] = []
                for index in batch:
                    key = keys.object_chunk(object_id, index).encode()
                    data = raw[index * self.chunk_bytes : (index + 1) * self.chunk_bytes]
                    parts += [b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(data)), data,
                              b"\r\n$2\r\nEX\r\n$%d\r\n%d\r\n" % (len(str(ttl)), ttl)]
                connection.send_packed_command(parts, check_health=False)
                for _ in batch:
                    connection.read_response()  # raises ResponseError (e.g. OOM) for a refused SET
        except BaseException:
            connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(connection)

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

    def read_into(self, ref: ObjectRef, buffer: memoryview, before_chunk: Callable[[int], None] | None = None) -> int:
        """Copy the object's bytes straight into `buffer` (e.g. a shared-memory segment); returns bytes read.

        The chunks are received with `recv_into` directly into the buffer: no intermediate bytes object,
        one copy from the socket to their final place. `before_chunk(end)` is called before bytes below
        `end` are written (the node cache waits there for those pages to be reserved).
        """
        meta = self._meta(ref.id)
        nchunks, chunk_bytes = int(meta["chunks"]), int(meta["chunk_bytes"])
        pool = self.conn.connection_pool
        connection = pool.get_connection()
        try:
            connection.connect()
            reader = _BulkReader(connection._sock)  # type: ignore[attr-defined]
            offset = 0
            per_trip = chunks_per_round_trip(chunk_bytes)
            for first in range(0, nchunks, per_trip):
                batch = range(first, min(first + per_trip, nchunks))
                connection.send_packed_command(connection.pack_commands([("GET", keys.object_chunk(ref.id, i)) for i in batch]))
                missing = None
                for index in batch:
                    if before_chunk is not None:
                        before_chunk(min(offset + chunk_bytes, ref.nbytes))
                    got = reader.read_bulk_into(buffer[offset:])
                    if got < 0:
                        missing = index
                    else:
                        offset += got
                if missing is not None:
                    raise ObjectNotFound(f"object {ref.id}: chunk {missing} has expired or was deleted; put it again")
        except BaseException:
            connection.disconnect()  # its stream position is unknown now
            raise
        finally:
            pool.release(connection)
        if offset != ref.nbytes:
            raise ObjectNotFound(f"object {ref.id} is incomplete in Redis ({offset} of {ref.nbytes} bytes); put it again")
        return offset

    def get(self, ref_or_id: ObjectRef | str) -> np.ndarray | bytes:
        """The object as a new numpy array (arrays) or bytes (blobs), read from Redis."""
        ref = self.ref(ref_or_id) if isinstance(ref_or_id, str) else ref_or_id
        out = np.empty(ref.nbytes, dtype=np.uint8)
        self.read_into(ref, memoryview(out).cast("B") if ref.nbytes else memoryview(bytearray()))
        if ref.kind is ObjectKind.BYTES:
            return out.tobytes()
        return out.view(np.dtype(ref.dtype)).reshape(ref.shape)

    def delete(self, object_id: str) -> bool:
        """Remove an object; False if it did not exist. Running nodes keep their copies until they evict them or stop."""
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


class _BulkReader:
    """Reads RESP bulk replies ($<n>\\r\\n<data>\\r\\n) from a socket, the data straight into a caller's buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def read_bulk_into(self, dest: memoryview) -> int:
        """Read one reply into `dest`; its length, or -1 for a nil (missing key)."""
        header = self._line()
        if header[:1] == b"-":
            raise redis.ResponseError(header[1:].decode(errors="replace"))
        size = int(header[1:])
        if size < 0:
            return -1
        if size > len(dest):
            raise ObjectNotFound(f"a chunk is larger than the object's declared size ({size} > {len(dest)} bytes left)")
        taken = min(len(self.pending), size)
        dest[:taken] = self.pending[:taken]
        del self.pending[:taken]
        while taken < size:
            received = self.sock.recv_into(dest[taken:size])
            if received == 0:
                raise redis.ConnectionError("Redis closed the connection mid-reply")
            taken += received
        self._take(2)  # the CRLF after the data
        return size

    def _line(self) -> bytes:
        while (end := self.pending.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.pending[:end])
        del self.pending[: end + 2]
        return line

    def _take(self, count: int) -> None:
        while len(self.pending) < count:
            self._fill()
        del self.pending[:count]

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise redis.ConnectionError("Redis closed the connection mid-reply")
        self.pending += data


def chunks_per_round_trip(chunk_bytes: int) -> int:
    """How many chunks to pipeline per round trip: IN_FLIGHT_BYTES' worth, at least one."""
    return max(1, IN_FLIGHT_BYTES // chunk_bytes)


def _is_oom(exc: BaseException) -> bool:
    """Redis's refusal of a write over maxmemory (redis-py strips the "OOM" prefix when it maps the class)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM")
