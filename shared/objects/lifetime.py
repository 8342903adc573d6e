"""How long an object lives: as long as its logical expiry, and as long as any job that needs it is not done.

Every object has a logical expiry (`ferry:objects:expiry`, id -> unix seconds) instead of a Redis TTL: a
TTL cannot know that a queued job still needs the data. Submitting a job that takes objects runs
`REFERENCE`, which, in one atomic step, checks each reference against the stored metadata (the truth)
and records the job id in the object's `ferry:obj:<id>:jobs` zset. `SWEEP` (run by every node's reaper
and by `ferry objects gc`) deletes objects past their expiry only when none of their jobs is in a
non-final state, reading each job's status from its `rq:job:<id>` hash. So a job that is canceled,
fails, finishes, or expires needs no extra hook: its status (or its missing hash) releases the object;
a job requeued after its node died is `queued` again and keeps it. A reference whose job hash does not
exist yet is honoured for REFERENCE_GRACE_S, the time between the check and the enqueue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys
from shared.errors import Conflict, InvalidArgs, ObjectNotFound
from shared.objects.ref import ObjectKind, ObjectRef, mismatch
from shared.replies import optional_bytes, scored_texts, texts
from shared.timeutil import unix_now

log = logging.getLogger("ferry.objects")

REFERENCE_GRACE_S = 600  # a reference taken this recently counts even before its job hash exists
SWEEP_BATCH = 200
LIVE_STATUSES = ("queued", "started", "scheduled", "deferred")

# Shared Lua: is job `id` (referenced at `score`) still live? Prunes references of ended jobs.
_LIVE = """
local function live_jobs(jobs_key, job_prefix, grace_before)
  local found = {}
  local refs = redis.call('ZRANGE', jobs_key, 0, -1, 'WITHSCORES')
  for i = 1, #refs, 2 do
    local job, score = refs[i], tonumber(refs[i + 1])
    local status = redis.call('HGET', job_prefix .. job, 'status')
    if status == 'queued' or status == 'started' or status == 'scheduled' or status == 'deferred'
       or (not status and score > grace_before) then
      table.insert(found, job)
    else
      redis.call('ZREM', jobs_key, job)
    end
  end
  return found
end
local function drop_object(obj_prefix, id)
  local meta = obj_prefix .. id
  local chunks = tonumber(redis.call('HGET', meta, 'chunks') or '0') or 0
  redis.call('DEL', meta, meta .. ':jobs')
  for i = 0, chunks - 1 do redis.call('DEL', meta .. ':chunk:' .. i) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
"""

REFERENCE = """
-- Check each reference against its stored object and record the job as needing it, atomically.
-- KEYS: objects index, expiry index, then per reference: meta key, jobs key
-- ARGV: job id, now, then per reference: kind, dtype, shape (comma-separated), nbytes
for i = 3, #KEYS, 2 do
  local n = (i - 3) / 2
  local f = redis.call('HMGET', KEYS[i], 'kind', 'dtype', 'shape', 'nbytes')
  if not f[1] then f = redis.call('HMGET', KEYS[i] .. ':pending', 'kind', 'dtype', 'shape', 'nbytes') end  -- handoff.py
  if not f[1] then return {n, 'missing'} end
  if f[1] ~= ARGV[3 + 4 * n] or f[2] ~= ARGV[4 + 4 * n] or f[3] ~= ARGV[5 + 4 * n] or f[4] ~= ARGV[6 + 4 * n] then
    return {n, 'mismatch', f[1], f[2], f[3], f[4]}
  end
end
for i = 4, #KEYS, 2 do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
return {-1, 'ok'}
"""

SWEEP = (
    _LIVE
    + """
-- Delete the given expired objects that no live job needs. KEYS: objects index, expiry index
-- ARGV: now, grace_before, object key prefix, job key prefix, ids...
local deleted = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local expiry = tonumber(redis.call('ZSCORE', KEYS[2], id) or '0')
  if expiry <= tonumber(ARGV[1]) and #live_jobs(ARGV[3] .. id .. ':jobs', ARGV[4], tonumber(ARGV[2])) == 0 then
    drop_object(ARGV[3], id)
    table.insert(deleted, id)
  end
end
return deleted
"""
)

DELETE = (
    _LIVE
    + """
-- Delete one object; refused while live jobs need it unless forced. KEYS: objects index, expiry index
-- ARGV: id, force ('1'/'0'), grace_before, object key prefix, job key prefix, tombstone key, reason, tombstone ttl
local meta = ARGV[4] .. ARGV[1]
if redis.call('EXISTS', meta) == 0 then return {'missing'} end
local live = live_jobs(meta .. ':jobs', ARGV[5], tonumber(ARGV[3]))
if #live > 0 and ARGV[2] ~= '1' then return {'referenced', unpack(live)} end
drop_object(ARGV[4], ARGV[1])
if #live > 0 then redis.call('SET', ARGV[6], ARGV[7], 'EX', ARGV[8]) end
return {'deleted', unpack(live)}
"""
)


@dataclass(frozen=True)
class Deleted:
    existed: bool
    failed_jobs: list[str]  # live jobs that needed it (forced delete): they fail when they run


class Lifetime:
    """The bookkeeping that keeps objects alive while jobs need them."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn
        self._reference = conn.register_script(REFERENCE)
        self._sweep = conn.register_script(SWEEP)
        self._delete = conn.register_script(DELETE)

    def reference(self, job_id: str, refs: Iterable[tuple[str, ObjectRef]]) -> None:
        """Check each (argument name, reference) against the stored object and record `job_id` as needing it.

        Raises InvalidArgs naming the argument when an object is missing or differs from its reference.
        """
        named = [(name, ref) for name, ref in refs if ref is not None]
        call = reference_call(job_id, named)
        if call is None:
            return
        reply = self._reference(keys=call[0], args=call[1])
        missing = missing_object(named, reply)
        tombstone = optional_bytes(self.conn.get(keys.object_tombstone(missing))) if missing else None
        raise_for_reference(named, reply, tombstone)

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete every object past its expiry that no live job needs; returns their ids."""
        now = unix_now() if now is None else now
        deleted: list[str] = []
        offset = 0
        while True:
            ids = texts(self.conn.zrangebyscore(keys.OBJECT_EXPIRY, "-inf", now, start=offset, num=SWEEP_BATCH))
            if not ids:
                break
            gone = [
                g.decode()
                for g in self._sweep(
                    keys=[keys.OBJECTS, keys.OBJECT_EXPIRY],
                    args=[now, now - REFERENCE_GRACE_S, keys.object_meta(""), keys.job(""), *ids],
                )
            ]
            deleted += gone
            offset += len(ids) - len(gone)  # those kept are still in the range; skip past them
        if deleted:
            log.info("objects: %d expired and no longer needed by any job, deleted", len(deleted))
        return deleted

    def delete(self, object_id: str, force: bool = False, tombstone_ttl_s: int = 7 * 86_400) -> Deleted:
        """Delete an object; Conflict while live jobs need it, unless `force` (then those jobs fail when they run)."""
        reason = (
            f"object {object_id} was deleted with --force while this job needed it; put the data again and resubmit"
        )
        outcome, *jobs = self._delete(
            keys=[keys.OBJECTS, keys.OBJECT_EXPIRY],
            args=[
                object_id,
                "1" if force else "0",
                unix_now() - REFERENCE_GRACE_S,
                keys.object_meta(""),
                keys.job(""),
                keys.object_tombstone(object_id),
                reason,
                tombstone_ttl_s,
            ],
        )
        live = [j.decode() for j in jobs]
        if outcome == b"missing":
            return Deleted(False, [])
        if outcome == b"referenced":
            shown = ", ".join(live[:5]) + (f" and {len(live) - 5} more" if len(live) > 5 else "")
            raise Conflict(
                f"object {object_id} is needed by {len(live)} job(s) not yet done ({shown}); wait for them, cancel "
                "them, or delete with force (`ferry objects delete --force`, `DELETE /v1/objects/{id}?force=true`), "
                "which makes them fail",
                jobs=live,
            )
        if live:
            log.warning("object %s: deleted with force; %d job(s) that need it will fail", object_id, len(live))
        return Deleted(True, live)

    def live_jobs(self, object_id: str) -> list[str]:
        """Jobs not yet done that reference the object (for listings; the scripts decide atomically)."""
        refs = scored_texts(self.conn.zrange(keys.object_jobs(object_id), 0, -1, withscores=True))
        if not refs:
            return []
        pipe = self.conn.pipeline(transaction=False)
        for job, _score in refs:
            pipe.hget(keys.job(job), "status")
        grace_before = unix_now() - REFERENCE_GRACE_S
        return [
            job
            for (job, score), status in zip(refs, pipe.execute(), strict=True)
            if (status is not None and status.decode() in LIVE_STATUSES) or (status is None and score > grace_before)
        ]


def missing_message(object_id: str, tombstone: str | None = None) -> str:
    if tombstone:
        return tombstone
    return (
        f"object {object_id} does not exist (it expired, was deleted, or was never put); "
        "put the data again (`ferry objects put`, POST /v1/objects, Client.put) and use the new reference"
    )


def shape_field(shape: tuple[int, ...]) -> str:
    return ",".join(str(n) for n in shape)


def parse_shape_field(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",") if n != "")


def reference_call(job_id: str, named: list[tuple[str, ObjectRef]]) -> tuple[list[str], list[str | int | float]] | None:
    """REFERENCE's keys and args for a job's (argument name, reference) pairs; None when it takes no object."""
    if not named:
        return None
    script_keys: list[str] = [keys.OBJECTS, keys.OBJECT_EXPIRY]
    args: list[str | int | float] = [job_id, unix_now()]
    for _name, ref in named:
        script_keys += [keys.object_meta(ref.id), keys.object_jobs(ref.id)]
        args += [ref.kind.value, ref.dtype, shape_field(ref.shape), str(ref.nbytes)]
    return script_keys, args


def missing_object(named: list[tuple[str, ObjectRef]], reply: list[Any]) -> str | None:
    """The id of the object REFERENCE found missing (read its tombstone for the reason), else None."""
    return named[reply[0]][1].id if reply[0] >= 0 and reply[1] == b"missing" else None


def raise_for_reference(named: list[tuple[str, ObjectRef]], reply: list[Any], tombstone: bytes | None) -> None:
    """InvalidArgs naming the argument whose object is missing or differs (REFERENCE's `reply`); else nothing.

    `tombstone` is why a missing object was deleted (a forced delete leaves the reason), if it was.
    """
    index, outcome, *stored = reply
    if index < 0:
        return
    name, ref = named[index]
    if outcome == b"missing":
        reason = tombstone
        message = missing_message(ref.id, reason.decode() if reason else None)
    else:
        kind, dtype, shape, nbytes = (part.decode() for part in stored)
        truth = ObjectRef(
            id=ref.id, kind=ObjectKind(kind), dtype=dtype, shape=parse_shape_field(shape), nbytes=int(nbytes)
        )
        message = mismatch(ref, truth) or "the reference differs from the stored object"
    raise InvalidArgs(f"argument {name!r}: {message}", errors=[{"field": name, "message": message}])


def reference_job_objects(conn: redis.Redis, job_id: str, refs: Iterable[tuple[str, ObjectRef]]) -> None:
    """The submit-time check: every referenced object exists and matches; the job is recorded as needing it."""
    refs = list(refs)
    if refs:  # most jobs reference no object: no scripts to prepare
        Lifetime(conn).reference(job_id, refs)


def sweep_expired(conn: redis.Redis) -> list[str]:
    """Delete expired objects no live job needs (called from every node's reaper and `ferry objects gc`)."""
    try:
        return Lifetime(conn).sweep()
    except redis.ResponseError as exc:  # a sweep is housekeeping: never let it break its caller
        log.warning("objects: sweep failed (%s)", exc)
        return []


__all__ = [
    "REFERENCE", "Deleted", "Lifetime", "ObjectNotFound", "missing_object", "raise_for_reference", "reference_call",
    "reference_job_objects", "sweep_expired",
]
