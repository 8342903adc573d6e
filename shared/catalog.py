"""The task catalog: what the running stack serves, published in Redis by every live node.

Each node writes `ferry:catalog:<node>` (JSON: its queues and, per task, the description, the input
JSON schema and a hash of the source) at every heartbeat, with the node's liveness deadline
(FERRY_ABANDONED_AFTER_S) as its expiry, and deletes it when it stops: a dead node's entry expires
with it. Clients, the CLI and the producer read the entries of the nodes in `ferry:nodes` and
validate a job's args against the schema with `jsonschema`, so they need none of the task code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from pydantic import BaseModel, Field

from shared import keys, wire
from shared.errors import InvalidArgs
from shared.tasks import TaskRegistry

if TYPE_CHECKING:
    import jsonschema  # imported where validators are made (CatalogCache, _validator): not in a node (~3 MB)

UNSERVABLE_SCAN_LIMIT = 1000  # queued jobs looked at per queue by `unservable_jobs`


class CatalogTask(BaseModel):
    """One task as a node serves it."""

    name: str
    description: str = ""
    input_schema: dict[str, Any]
    version: str = Field("", description="a hash of the task's source code on that node")
    limits: dict[str, Any] | None = Field(None, description="concurrency, concurrency_per_node, rate_limit")


class NodeCatalog(BaseModel):
    """What one node serves: these tasks, on these queues."""

    node: str
    queues: list[str]
    tasks: list[CatalogTask]


class ServedTask(BaseModel):
    """A task as the whole stack serves it: on which queues, by which nodes, in which versions."""

    name: str
    description: str
    input_schema: dict[str, Any]
    queues: list[str]
    nodes: list[str]
    versions: dict[str, str] = Field(description="node id -> code version")
    limits: dict[str, Any] | None = Field(
        None, description="the task's own limits (its decorator): concurrency, concurrency_per_node, rate_limit")


# --- publishing (the node) ---
_payloads: dict[tuple[str, tuple[str, ...], int], str] = {}


def node_catalog(node_id: str, queues: Sequence[str], registry: TaskRegistry) -> NodeCatalog:
    specs = registry.specs()
    tasks = [
        CatalogTask(name=s.name, description=s.description, input_schema=s.input_schema(), version=s.version,
                    limits=s.limits)
        for s in specs
    ]
    return NodeCatalog(node=node_id, queues=list(queues), tasks=tasks)


def publish(conn: redis.Redis, node_id: str, queues: Sequence[str], registry: TaskRegistry, ttl_s: float) -> None:
    """Write (or refresh) this node's catalog entry; it expires `ttl_s` after the last call, with the node."""
    cache_key = (node_id, tuple(queues), len(registry.names()))
    payload = _payloads.get(cache_key)
    if payload is None:  # schemas are built once per node, not at every heartbeat
        payload = _payloads[cache_key] = node_catalog(node_id, queues, registry).model_dump_json()
    conn.set(keys.catalog(node_id), payload, px=max(1, int(ttl_s * 1000)))


# --- reading (clients, CLI, producer) ---
class Catalog:
    """The union of the live nodes' entries."""

    def __init__(self, nodes: Iterable[NodeCatalog]) -> None:
        self.nodes = sorted(nodes, key=lambda n: n.node)
        self.tasks: dict[str, ServedTask] = {}
        for entry in self.nodes:
            for t in entry.tasks:
                served = self.tasks.get(t.name)
                if served is None:
                    served = self.tasks[t.name] = ServedTask(
                        name=t.name,
                        description=t.description,
                        input_schema=t.input_schema,
                        queues=[],
                        nodes=[],
                        versions={},
                        limits=t.limits,
                    )
                served.nodes.append(entry.node)
                served.versions[entry.node] = t.version
                served.queues += [q for q in entry.queues if q not in served.queues]
        # What every submit asks (twice): a set, not a scan of every node's tasks.
        self._serving = {(t.name, q) for entry in self.nodes for t in entry.tasks for q in entry.queues}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def names(self) -> list[str]:
        return sorted(self.tasks)

    def get(self, name: str) -> ServedTask | None:
        return self.tasks.get(name)

    def serves(self, task: str, queue: str) -> bool:
        return (task, queue) in self._serving

    def validate(self, task: str, args: Any) -> None:
        """InvalidArgs naming each bad field (paths as pydantic writes them) unless `args` fit the task's schema."""
        validator = self._validators.get(task)
        if validator is None:  # once per task and catalog read, not once per submit
            validator = self._validators[task] = _validator(json.dumps(self.tasks[task].input_schema, sort_keys=True))
        report_problems(task, validator, args)


_last_parsed: tuple[list[bytes | str | None], Catalog] | None = None


def parse(raw_entries: Iterable[bytes | str | None]) -> Catalog:
    """A Catalog from the stored entries (missing ones: nodes whose entry expired, i.e. dead nodes).

    The same entries as last time give the same Catalog, not a new one: clients read the catalog every
    second and nodes republish unchanged entries, and parsing costs ~60 us per node (1.7 ms for 20).
    """
    global _last_parsed
    entries = list(raw_entries)
    last = _last_parsed
    if last is not None and last[0] == entries:
        return last[1]
    catalog = _parse(entries)
    _last_parsed = (entries, catalog)
    return catalog


def _parse(raw_entries: list[bytes | str | None]) -> Catalog:
    found = []
    for raw in raw_entries:
        if raw:
            try:
                found.append(NodeCatalog.model_validate_json(raw))
            except ValueError:
                continue  # an entry from an incompatible version: ignored, not fatal
    return Catalog(found)


def read(conn: redis.Redis) -> Catalog:
    ids = [_text(i) for i in conn.zrange(keys.NODES, 0, -1)]
    return parse(conn.mget([keys.catalog(i) for i in ids]) if ids else [])


async def aread(conn: redis.asyncio.Redis) -> Catalog:
    ids = [_text(i) for i in await conn.zrange(keys.NODES, 0, -1)]
    return parse(await conn.mget([keys.catalog(i) for i in ids]) if ids else [])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CatalogCache:
    """The last catalog read and when: a submit reads Redis at most once per `max_age_s` (and once more on a miss)."""

    def __init__(self, max_age_s: float = 1.0, miss_refresh_s: float = 0.05) -> None:
        import jsonschema  # noqa: F401  # the submitting side loads its validator here (~35 ms), not at its first submit
        self.max_age_s = max_age_s
        self.miss_refresh_s = miss_refresh_s
        self.catalog: Catalog | None = None
        self.read_at = 0.0

    def fresh(self, for_miss: bool = False) -> Catalog | None:
        """The cached catalog if recent enough (a miss asks for a fresher one, so a node that just started counts)."""
        limit = self.miss_refresh_s if for_miss else self.max_age_s
        if self.catalog is not None and time.monotonic() - self.read_at < limit:
            return self.catalog
        return None

    def store(self, catalog: Catalog) -> Catalog:
        self.catalog, self.read_at = catalog, time.monotonic()
        return catalog


# --- validation against a JSON schema ---
@lru_cache(maxsize=512)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def validate_with_schema(task: str, schema: dict[str, Any], args: Any) -> None:
    report_problems(task, _validator(json.dumps(schema, sort_keys=True)), args)


def report_problems(task: str, validator: jsonschema.protocols.Validator, args: Any) -> None:
    """InvalidArgs listing every field of `args` that `validator` refuses; nothing when they fit."""
    problems: list[dict[str, str]] = []
    for error in validator.iter_errors(args if args is not None else {}):
        problems += _problems(error)
    if problems:
        problems.sort(key=lambda p: p["field"])
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidArgs(f"invalid args for task {task!r}: {summary}", errors=problems)


def _problems(error: jsonschema.ValidationError) -> list[dict[str, str]]:
    """Field paths and messages in the words the task's pydantic model would use (`seconds: Field required`)."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = [n for n in error.validator_value if isinstance(error.instance, dict) and n not in error.instance]
        return [{"field": ".".join([*path, n]), "message": "Field required"} for n in missing[:1]] or [
            {"field": ".".join(path) or "(args)", "message": error.message}
        ]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [{"field": ".".join([*path, k]), "message": "Extra inputs are not permitted"} for k in extra]
    return [{"field": ".".join(path) or "(args)", "message": error.message}]


# --- jobs no live node can run (`ferry info`) ---
class UnservableJobs(BaseModel):
    """Queued jobs of one task on one queue that no live node serves: they wait until such a node starts."""

    queue: str
    task: str
    jobs: int
    scanned_all: bool = Field(
        description=f"false when the queue holds more than {UNSERVABLE_SCAN_LIMIT} jobs and only the first were read"
    )


FOREIGN_DATA_BYTES = 1 << 20  # a plain RQ job's data is inflated at most this far to read its task name


def unservable_jobs(
    conn: redis.Redis, queues: Sequence[str], limit: int = UNSERVABLE_SCAN_LIMIT
) -> list[UnservableJobs]:
    """Queued jobs (the first `limit` of each queue) whose task no live node serves on that queue."""
    catalog = read(conn)
    found: list[UnservableJobs] = []
    for queue in queues:
        pipe = conn.pipeline(transaction=False)
        pipe.llen(keys.queue(queue))
        pipe.lrange(keys.queue(queue), 0, limit - 1)
        length, ids = pipe.execute()
        if not ids:
            continue
        pipe = conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id.decode()), "ferry_task", "data")
        counts: dict[str, int] = {}
        for ferry_task, data in pipe.execute():
            if ferry_task:  # written by ENQUEUE: no need to inflate the data
                task = ferry_task.decode()
            elif not data:
                continue
            else:
                try:
                    task, _, _ = wire.decode_data(data, FOREIGN_DATA_BYTES)
                except Exception:  # noqa: BLE001 - a foreign (plain RQ) job: not ours to judge
                    continue
            if not catalog.serves(task, queue):
                counts[task] = counts.get(task, 0) + 1
        found += [
            UnservableJobs(queue=queue, task=t, jobs=n, scanned_all=length <= limit) for t, n in sorted(counts.items())
        ]
    return found


def unservable_lines(found: Sequence[UnservableJobs]) -> list[str]:
    """What `ferry info` prints about them: one line per queue and task, or nothing when every queued job can run."""
    lines = []
    for u in found:
        count = f"{u.jobs}{'' if u.scanned_all else '+'} queued job{'s' if u.jobs != 1 else ''}"
        lines.append(
            f"{count} of task {u.task!r} on queue {u.queue!r}: no live node serves it there "
            f"(start a node with that task and queue: `ferry worker --queues {u.queue}`)"
        )
    return lines
