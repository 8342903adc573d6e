"""Objects in Redis: chunked writes and reads, so a 1 GB array needs no huge command and no long socket wait.

Layout: `ferry:obj:<id>:chunk:<n>` strings of `chunk_bytes` each, and the meta hash `ferry:obj:<id>`.
The meta hash is written last (in the same script that publishes the chunks) and deleted first: its
presence means the object is complete. No key carries a Redis TTL: `lifetime` decides when an object
goes (its logical expiry, and no job still needing it).
"""

from __future__ import annotations

import builtins
import logging
import math
import socket
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from shared import keys
from shared.errors import InvalidArgs, ObjectNotFound, RedisFull
from shared.objects.lifetime import Lifetime, missing_message, parse_shape_field, shape_field
from shared.objects.pending import wait_written
from shared.objects.ref import ObjectKind, ObjectRef, mismatch, normalize, ref_for
from shared.replies import optional_text, text, texts
from shared.timeutil import unix_now

if TYPE_CHECKING:
    from shared.objects.local_put import LocalCopy, LocalPut

log = logging.getLogger("ferry.objects")

# Bytes of requests (writes) or replies (reads) in flight per round trip: enough to keep the socket busy.
# More is slower: with 32 MiB of 8 MiB replies in flight a 100 MB read took 79 ms on Redis 7.0 instead
# of 26 (docs/benchmarks.md; most likely a freshly allocated server buffer per large reply).
IN_FLIGHT_BYTES = 8 * 1024 * 1024


PUBLISH = """
-- Publish chunks written under an upload id as the object (RENAME is O(1)); if the object is already
-- stored, drop the upload instead and extend the expiry.
-- KEYS: meta, objects index, expiry index
-- ARGV: upload chunk prefix, object chunk prefix, chunks, expiry, created, field, value, ...
local id = string.sub(KEYS[1], 11)
local n = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  for c = 0, n - 1 do redis.call('DEL', ARGV[1] .. c) end
  redis.call('ZADD', KEYS[3], 'GT', ARGV[4], id)
  return 0
end
for c = 0, n - 1 do  -- all or nothing: a refused or lost chunk publishes nothing
  if redis.call('EXISTS', ARGV[1] .. c) == 0 then return redis.error_reply('upload chunk ' .. c .. ' is missing') end
end
for c = 0, n - 1 do
  redis.call('RENAME', ARGV[1] .. c, ARGV[2] .. c)
  redis.call('PERSIST', ARGV[2] .. c)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('ZADD', KEYS[2], ARGV[5], id)
redis.call('ZADD', KEYS[3], ARGV[4], id)
return 1
"""

UPLOAD_TTL_S = 3600  # chunks of an upload whose writer died expire on their own
SMALL_OBJECT_BYTES = 4 * 1024 * 1024  # up to this, the hash comes first (a thread would cost more than it saves)


@dataclass(frozen=True)
class Stored:
    """What Redis says an object is (the truth a reference is checked against) and how it is chunked."""

    ref: ObjectRef
    chunks: int
    chunk_bytes: int


class ObjectStore:
    """Puts, fetches, lists and deletes objects in Redis."""

    def __init__(self, conn: redis.Redis, chunk_bytes: int, default_ttl_s: int, local: LocalPut | None = None) -> None:
        self.conn = conn
        self.local = local  # a same-host put also fills a local node's memory (local_put.py)
        self.chunk_bytes = chunk_bytes
        self.default_ttl_s = default_ttl_s
        self.lifetime = Lifetime(conn)
        self._publish = conn.register_script(PUBLISH)

    def put(self, data: Any, ttl_s: int | None = None, durable: bool | None = None) -> ObjectRef:
        """Store a numpy array or bytes once; a second put of equal data only extends its expiry.

        Large objects are hashed (on every core) while their chunks are already being written under a
        temporary upload id; the chunks are then renamed to the content id. Hashing and writing overlap
        instead of adding up; the hash stays cryptographic (BLAKE3), so nobody can craft a collision to
        make dedup hand out someone else's data. On a host with a live node of this deployment, the bytes
        also go into its memory, and unless `durable` (default: not FERRY_PUT_WRITE_BEHIND) that node
        writes them to Redis behind the put (local_put.py).
        """
        kind, array = normalize(data)
        copy = self.local.begin(int(array.nbytes)) if self.local is not None else None
        if copy is not None:
            return self._put_local(copy, kind, array, ttl_s, durable)
        if array.nbytes <= SMALL_OBJECT_BYTES:
            ref = ref_for(kind, array)
            self.put_prepared(ref, array, ttl_s)
            return ref
        with ThreadPoolExecutor(max_workers=1) as pool:
            return self._upload(pool.submit(ref_for, kind, array), array, ttl_s)

    def _put_local(
        self, copy: LocalCopy, kind: ObjectKind, array: np.ndarray, ttl_s: int | None, durable: bool | None
    ) -> ObjectRef:
        """Hash, copy into the local node's segment and (durable) write the chunks, all at once; then publish."""
        assert self.local is not None
        behind = self.local.write_behind if durable is None else not durable
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                hashing = pool.submit(ref_for, kind, array)
                copy.start(array)
                ref = hashing.result() if behind else self._upload(hashing, array, ttl_s)
        except BaseException:
            copy.abort()  # nothing left in /dev/shm, nothing charged
            raise
        held = copy.finish(ref)
        if behind and held:  # marked for the node to write (or already stored, or an equal put is being written)
            try:
                with self._oom_is_redis_full(ref, []):
                    marked = self.local.mark(ref, copy.node, ttl_s or self.default_ttl_s)
            except BaseException:
                copy.withdraw(ref)  # a failed put leaves nothing in the node's memory
                raise
            if marked == 1:
                log.info("object %s: %d bytes in node %s's memory; it writes them to Redis", ref.id, ref.nbytes,
                         copy.node)
            return ref
        if behind:  # not in the node's memory after all: the plain way
            self.put_prepared(ref, array, ttl_s)
        return ref

    def put_prepared(
        self, ref: ObjectRef, array: np.ndarray, ttl_s: int | None = None, pace: Callable[[], None] | None = None
    ) -> None:
        """Store data whose reference is already computed (a task's result)."""
        done: Future[ObjectRef] = Future()
        done.set_result(ref)
        self._upload(done, array, ttl_s, pace)

    def _upload(
        self, hashing: Future[ObjectRef], array: np.ndarray, ttl_s: int | None, pace: Callable[[], None] | None = None
    ) -> ObjectRef:
        """Write the chunks under a fresh upload id (zero-copy sends), then publish them as the object.

        Publishing is one script: it renames the chunks to the content id and writes the meta hash, or,
        when the object is already stored, drops the upload and only extends the expiry (dedup).
        """
        upload = uuid.uuid4().hex
        nbytes = int(array.nbytes)
        nchunks = self._chunk_count(nbytes)
        upload_keys = [keys.upload_chunk(upload, i) for i in range(nchunks)]
        try:
            with self._oom_is_redis_full(None, upload_keys):

                def publish_args() -> tuple[list[str], list[Any]]:
                    ref = hashing.result()
                    return (
                        [keys.object_meta(ref.id), keys.OBJECTS, keys.OBJECT_EXPIRY],
                        [
                            keys.upload_chunk(upload, 0)[:-1],
                            keys.object_chunk(ref.id, 0)[:-1],
                            nchunks,
                            unix_now() + (ttl_s or self.default_ttl_s),
                            unix_now(),
                            *self._meta_fields(ref, nchunks),
                        ],
                    )

                created = self._write_chunks(
                    upload_keys,
                    _bytes_of(array),
                    _DuplicateCheck(self.conn, hashing),
                    publish_args if hashing.done() else None,
                    pace,
                )
                ref = hashing.result()
                if created is None:  # the hash came last, or the server had to load the script
                    script_keys, script_args = publish_args()
                    created = self._publish(keys=script_keys, args=script_args)
        except redis.ResponseError as exc:
            self.conn.delete(*upload_keys)
            if "upload chunk" in str(exc):  # stopped early as a duplicate, and the original was deleted meanwhile
                raise ObjectNotFound("the object was deleted while an equal copy was being put; put it again") from exc
            raise
        except BaseException:
            self.conn.delete(*upload_keys)
            raise
        log.info(
            "object %s: %s %d bytes in %d chunks", ref.id, "stored" if created else "already stored", nbytes, nchunks
        )
        return ref

    def _meta_fields(self, ref: ObjectRef, nchunks: int) -> list[Any]:
        return [
            "kind",
            ref.kind.value,
            "dtype",
            ref.dtype,
            "shape",
            shape_field(ref.shape),
            "nbytes",
            ref.nbytes,
            "chunk_bytes",
            self.chunk_bytes,
            "chunks",
            nchunks,
            "created_at",
            unix_now(),
        ]

    @contextmanager
    def _oom_is_redis_full(self, ref: ObjectRef | None, cleanup: list[str]) -> Iterator[None]:
        try:
            yield
        except redis.ResponseError as exc:
            if not _is_oom(exc):
                raise
            if cleanup:
                self.conn.delete(*cleanup)  # chunks of an incomplete copy would pin memory
            size = f"{ref.nbytes} bytes" if ref else "an object"
            raise RedisFull(
                f"Redis is out of memory and refused {size} ({exc}); delete objects you no longer need "
                "(`ferry objects delete`), shorten FERRY_OBJECT_TTL_S, or raise the server's maxmemory"
            ) from exc

    def _write_chunks(
        self,
        chunk_keys: list[str],
        raw: memoryview,
        stop: Callable[[], bool],
        publish: Callable[[], tuple[list[str], list[Any]]] | None = None,
        pace: Callable[[], None] | None = None,
    ) -> Any:
        """SET every chunk (with UPLOAD_TTL_S), sending the caller's memory as it is.

        redis-py would copy each chunk twice (to bytes, then into the packed command); here the command
        header and the memoryview slice go to `sendall` separately, which doubled write throughput.
        Stops early (between round trips) when `stop()` says the rest is not needed. With `publish`
        (the hash is already known), the PUBLISH script rides in the last round trip; its reply is
        returned (None when it was not sent or the server must load the script first).
        """
        pool = self.conn.connection_pool
        connection = pool.get_connection()
        ttl = str(UPLOAD_TTL_S).encode()
        published = None
        try:
            connection.connect()
            per_trip = chunks_per_round_trip(self.chunk_bytes)
            for first in range(0, len(chunk_keys), per_trip):
                if first and stop():
                    break
                if pace is not None:
                    pace()  # a write behind yields to the node's jobs (put_writer.py)
                batch = range(first, min(first + per_trip, len(chunk_keys)))
                parts: list[bytes | memoryview] = []
                for index in batch:
                    key = chunk_keys[index].encode()
                    data = raw[index * self.chunk_bytes : (index + 1) * self.chunk_bytes]
                    parts += [
                        b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(data)),
                        data,
                        b"\r\n$2\r\nEX\r\n$%d\r\n%s\r\n" % (len(ttl), ttl),
                    ]
                last = batch.stop == len(chunk_keys) and publish is not None
                if last and publish is not None:
                    script_keys, script_args = publish()
                    parts += connection.pack_command(
                        "EVALSHA", self._publish.sha, len(script_keys), *script_keys, *script_args
                    )
                connection.send_packed_command(parts, check_health=False)
                for _ in batch:
                    connection.read_response()  # raises ResponseError (e.g. OOM) for a refused SET
                if last:
                    try:
                        published = connection.read_response()
                    except redis.exceptions.NoScriptError:
                        published = None
        except BaseException:
            connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(connection)
        return published

    def _chunk_count(self, nbytes: int) -> int:
        return max(1, math.ceil(nbytes / self.chunk_bytes))

    def ref(self, object_id: str) -> ObjectRef:
        """The reference for a stored object id."""
        return self.stored(object_id).ref

    def stored(self, object_id: str) -> Stored:
        """The stored metadata; ObjectNotFound naming the id and what to do when the object is gone."""
        raw = self.conn.hgetall(keys.object_meta(object_id))
        if not raw:
            raw = wait_written(self.conn, object_id)  # a result still being written behind its job (handoff.py)
        if not raw:
            tombstone = self.conn.get(keys.object_tombstone(object_id))
            raise ObjectNotFound(missing_message(object_id, optional_text(tombstone) if tombstone else None))
        meta = {text(k): text(v) for k, v in raw.items()}
        return Stored(self._ref_from_meta(object_id, meta), int(meta["chunks"]), int(meta["chunk_bytes"]))

    def check(self, ref: ObjectRef) -> Stored:
        """The stored object `ref` names, if `ref` describes it exactly; InvalidArgs (never a wrong result) if not."""
        stored = self.stored(ref.id)
        problem = mismatch(ref, stored.ref)
        if problem:
            raise InvalidArgs(problem)
        return stored

    @staticmethod
    def _ref_from_meta(object_id: str, meta: dict[str, str]) -> ObjectRef:
        return ObjectRef(
            id=object_id,
            kind=ObjectKind(meta["kind"]),
            dtype=meta["dtype"],
            shape=parse_shape_field(meta["shape"]),
            nbytes=int(meta["nbytes"]),
        )

    def fetch(self, ref: ObjectRef, place: Place) -> Stored:
        """Check `ref` against the stored object and read it into the memory `place(stored)` returns.

        The meta hash and the first round trip of chunks (guessed from the reference's size) travel
        together: a small object costs one round trip. `place` is called only once the meta is known and
        matches `ref`; it returns (buffer, start offset, before_chunk). ObjectNotFound or InvalidArgs
        otherwise, before `place` is called.
        """
        try:
            return self._receive(ref.id, place, claimed=ref)
        except _Missing:  # it was being written behind its job and `stored` waited for it: read it now
            return self.fetch(ref, place)
        except _Mispredicted as guess:  # stored with another chunk size: read it the plain way
            self._receive(ref.id, place, known=guess.stored)
            return guess.stored

    def read_into(
        self, stored: Stored, buffer: memoryview, before_chunk: Callable[[int], None] | None = None, start: int = 0
    ) -> int:
        """Copy the object's bytes straight into `buffer` from offset `start` (e.g. a shared-memory segment).

        Returns the bytes read.
        """
        self._receive(stored.ref.id, lambda _stored: (buffer, start, before_chunk), known=stored)
        return stored.ref.nbytes

    def _receive(
        self, object_id: str, place: Place, claimed: ObjectRef | None = None, known: Stored | None = None
    ) -> Stored:
        """Receive the chunks with `recv_into` directly into the placed buffer: one copy from the socket.

        `before_chunk(end)` is called before bytes below `end` are written (the node cache waits there for
        those pages to be reserved). No slice of the buffer outlives the call, even when it raises (the
        caller may close the memory at once).
        """
        pool = self.conn.connection_pool
        connection = pool.get_connection()
        failure: BaseException | None = None
        stored = known
        offset = end = start = 0
        try:
            connection.connect()
            sock: socket.socket | None = getattr(connection, "_sock", None)  # redis-py annotates it as always None
            if sock is None:
                raise redis.ConnectionError(f"no socket after connecting to {pool.connection_kwargs.get('host')}")
            reader = _BulkReader(sock)
            guess_bytes = known.chunk_bytes if known else self.chunk_bytes
            # `claimed` is given whenever `known` is not (both callers); mypy cannot see that across the two arguments
            guess_chunks = known.chunks if known else self._chunk_count(claimed.nbytes)  # type: ignore[union-attr]
            per_trip = chunks_per_round_trip(guess_bytes)
            commands = [] if known else [("HGETALL", keys.object_meta(object_id))]
            commands += [("GET", keys.object_chunk(object_id, i)) for i in range(min(per_trip, guess_chunks))]
            connection.send_packed_command(connection.pack_commands(commands))
            if stored is None:
                fields = reader.read_map()
                if not fields:
                    raise _Missing()
                stored = Stored(
                    self._ref_from_meta(object_id, fields), int(fields["chunks"]), int(fields["chunk_bytes"])
                )
                problem = mismatch(claimed, stored.ref)  # type: ignore[arg-type]  # given: see guess_chunks
                if problem:
                    raise InvalidArgs(problem)
                if (stored.chunk_bytes, stored.chunks) != (guess_bytes, guess_chunks):
                    raise _Mispredicted(stored)
            buffer, start, before_chunk = place(stored)
            offset, end = start, start + stored.ref.nbytes
            for first in range(0, stored.chunks, per_trip):
                batch = range(first, min(first + per_trip, stored.chunks))
                if first:
                    connection.send_packed_command(
                        connection.pack_commands([("GET", keys.object_chunk(object_id, i)) for i in batch])
                    )
                missing = None
                for index in batch:
                    if before_chunk is not None:
                        before_chunk(min(offset + stored.chunk_bytes, end))
                    got = reader.read_bulk_into(buffer, offset, end)
                    if got < 0:
                        missing = index
                    else:
                        offset += got
                if missing is not None:
                    raise ObjectNotFound(
                        f"object {object_id}: chunk {missing} is gone (deleted meanwhile); put it again"
                    )
            del buffer
        except BaseException as exc:
            connection.disconnect()  # its stream position is unknown now
            failure = exc
        finally:
            pool.release(connection)
        if isinstance(failure, _Missing):
            self.stored(object_id)  # raises ObjectNotFound with the reason (a forced delete's tombstone, or none)
        if failure is not None:
            traceback.clear_frames(failure.__traceback__)  # frames would keep slices of the buffer alive
            raise failure
        assert stored is not None
        if offset != end:
            raise ObjectNotFound(
                f"object {object_id} is incomplete in Redis ({offset - start} of {stored.ref.nbytes} bytes); "
                "put it again"
            )
        return stored

    def get(self, ref_or_id: ObjectRef | str) -> np.ndarray | bytes:
        """The object as a new numpy array (arrays) or bytes (blobs), read from Redis."""
        stored = self.stored(ref_or_id) if isinstance(ref_or_id, str) else self.check(ref_or_id)
        ref = stored.ref
        out = np.empty(ref.nbytes, dtype=np.uint8)
        self.read_into(stored, out.data.cast("B") if ref.nbytes else memoryview(bytearray()))
        if ref.kind is ObjectKind.BYTES:
            return out.tobytes()
        return out.view(np.dtype(ref.dtype)).reshape(ref.shape)

    def delete(self, object_id: str, force: bool = False) -> bool:
        """Remove an object; False if it did not exist; Conflict while jobs not yet done need it (unless `force`).

        Running nodes keep their copies until they evict them or stop.
        """
        wait_written(self.conn, object_id)  # a put or result still being written behind: delete what it writes
        return self.lifetime.delete(object_id, force).existed

    def list(self) -> builtins.list[tuple[ObjectRef, float, int]]:  # the object verb everywhere
        """Every stored object with its creation time and seconds to its expiry (negative: kept for a job)."""
        ids = texts(self.conn.zrange(keys.OBJECTS, 0, -1))
        pipe = self.conn.pipeline(transaction=False)
        for object_id in ids:
            pipe.hgetall(keys.object_meta(object_id))
            pipe.zscore(keys.OBJECT_EXPIRY, object_id)
        replies = pipe.execute()
        now = unix_now()
        found = []
        for object_id, raw, expiry in zip(ids, replies[::2], replies[1::2], strict=True):
            if raw:
                meta = {k.decode(): v.decode() for k, v in raw.items()}
                left = int(expiry - now) if expiry is not None else -1
                found.append((self._ref_from_meta(object_id, meta), float(meta.get("created_at", 0)), left))
        return found

    def gc(self) -> builtins.list[str]:
        """Delete objects past their expiry that no job still needs; returns their ids."""
        return self.lifetime.sweep()


class _DuplicateCheck:
    """Asked between round trips of a write: True once the hash is known and that object is already stored."""

    def __init__(self, conn: redis.Redis, hashing: Future[ObjectRef]) -> None:
        self.conn, self.hashing = conn, hashing
        self.answer: bool | None = None

    def __call__(self) -> bool:
        if self.answer is None and self.hashing.done() and self.hashing.exception() is None:
            self.answer = bool(self.conn.exists(keys.object_meta(self.hashing.result().id)))
        return bool(self.answer)


def _bytes_of(array: np.ndarray) -> memoryview:
    return array.data.cast("B") if array.nbytes else memoryview(b"")


Place = Callable[[Stored], tuple[memoryview, int, Callable[[int], None] | None]]


class _Missing(Exception):
    """The meta hash is gone (the caller looks up why)."""


class _Mispredicted(Exception):
    """The object is chunked differently than guessed; the speculative replies are dropped."""

    def __init__(self, stored: Stored) -> None:
        super().__init__("chunked differently")
        self.stored = stored


class _BulkReader:
    """Reads RESP bulk replies ($<n>\\r\\n<data>\\r\\n) from a socket, the data straight into a caller's buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def read_bulk_into(self, buffer: memoryview, offset: int, limit: int) -> int:
        """Read one reply into `buffer` at `offset` (never past `limit`); its length, or -1 for a nil (missing key)."""
        header = self._line()
        if header[:1] == b"-":
            raise redis.ResponseError(header[1:].decode(errors="replace"))
        size = int(header[1:])
        if size < 0:
            return -1
        room = limit - offset
        if size > room:
            raise ObjectNotFound(f"a chunk is larger than the object's stored size ({size} bytes, {room} bytes left)")
        taken = min(len(self.pending), size)
        with buffer[offset : offset + size] as dest:  # released on the way out, even on an error
            dest[:taken] = self.pending[:taken]
            del self.pending[:taken]
            while taken < size:
                with dest[taken:] as rest:
                    received = self.sock.recv_into(rest)
                if received == 0:
                    raise redis.ConnectionError("Redis closed the connection mid-reply")
                taken += received
        self._take(2)  # the CRLF after the data
        return size

    def read_map(self) -> dict[str, str]:
        """Read an HGETALL reply (RESP2 array or RESP3 map) as text."""
        header = self._line()
        if header[:1] == b"-":
            raise redis.ResponseError(header[1:].decode(errors="replace"))
        count = int(header[1:]) * (2 if header[:1] == b"%" else 1)
        items = []
        for _ in range(max(count, 0)):
            size = int(self._line()[1:])
            while len(self.pending) < size + 2:
                self._fill()
            items.append(bytes(self.pending[:size]).decode())
            del self.pending[: size + 2]
        return dict(zip(items[::2], items[1::2], strict=True))

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
