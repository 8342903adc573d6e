"""Running one claimed job: decode, look up the registered task, validate, resolve objects, call, encode."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared import wire
from shared.errors import InvalidRequest
from shared.objects.cache import NodeCache
from shared.objects.ref import normalize, ref_for
from shared.objects.store import ObjectStore
from shared.tasks import TaskRegistry
from services.worker.interrupts import Interrupts

log = logging.getLogger("ferry.worker")


@dataclass(frozen=True)
class ClaimedJob:
    """What the claim script hands a worker process."""

    id: str
    queue: str
    data: bytes
    timeout_s: float
    result_ttl_s: int
    failure_ttl_s: int
    execution_id: str

    @property
    def member(self) -> str:
        return f"{self.id}:{self.execution_id}"


class Executor:
    """Runs jobs in this process. Only tasks in the registry can run: the job names one by string."""

    def __init__(self, tasks: TaskRegistry, cache: NodeCache, store: ObjectStore, threshold_bytes: int) -> None:
        self.tasks = tasks
        self.cache = cache
        self.store = store
        self.threshold_bytes = threshold_bytes
        self.interrupts = Interrupts()

    def run(self, job: ClaimedJob) -> bytes:
        """The job's result as JSON bytes; raises the task's error (or a FerryError) on failure."""
        task_name, positional, args = wire.decode_data(job.data)
        spec = self.tasks.get(task_name)  # the allow-list: nothing outside the registry is imported or run
        if positional:
            raise InvalidRequest(f"task {task_name!r} takes named args only; this job passes positional ones")
        validated = spec.validate(args)
        with self.interrupts.armed(job.id, job.timeout_s):
            arrays = {name: self.cache.array(ref) for name, ref in spec.object_refs(validated).items()}
            value = spec.call(validated, arrays)
        del arrays
        return wire.dumps_value(self._objectify(value))

    def _objectify(self, value: Any) -> Any:
        """Large arrays and any bytes in the result become objects: stored in Redis, kept in this node's memory."""
        if isinstance(value, (bytes, bytearray, memoryview)) or (
            isinstance(value, np.ndarray) and value.nbytes > self.threshold_bytes and value.dtype.kind in "biufc"
        ):
            kind, array = normalize(value)
            ref = ref_for(kind, array)
            self.store.put_prepared(ref, array)
            self.cache.adopt(ref, array)
            return ref.as_result()
        if isinstance(value, dict):
            return {k: self._objectify(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._objectify(v) for v in value]
        return value
