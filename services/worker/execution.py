"""Running one claimed job: decode (bounded), look up the registered task, validate, resolve objects, call, encode."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from services.worker.interrupts import Interrupts
from shared import wire, workflows
from shared.errors import InvalidRequest
from shared.handoff import WriteBehind
from shared.job_context import ProgressWriter
from shared.lifecycle import Claimed
from shared.objects.cache import NodeCache
from shared.objects.ref import normalize, ref_for
from shared.objects.store import ObjectStore
from shared.tasks import TaskRegistry

log = logging.getLogger("ferry.worker")


class Executor:
    """Runs jobs in this process. Only tasks in the registry can run: the job names one by string."""

    def __init__(self, tasks: TaskRegistry, cache: NodeCache, store: ObjectStore, threshold_bytes: int,
                 max_data_bytes: int, default_timeout_s: float, write_behind: WriteBehind | None = None,
                 progress_interval_s: float = 0.25) -> None:
        self.tasks = tasks
        self.default_timeout_s = default_timeout_s
        self.max_data_bytes = max_data_bytes
        self.cache = cache
        self.store = store
        self.threshold_bytes = threshold_bytes
        self.interrupts = Interrupts()
        self.write_behind = write_behind  # large results: in memory before the finish, in Redis right after
        self._job: Claimed | None = None
        self._objects = 0
        self.progress = ProgressWriter(store.conn, progress_interval_s)

    def run(self, job: Claimed) -> tuple[str, bytes]:
        """(task name, the job's result as JSON bytes); raises the task's error (or a FerryError) on failure.

        Data and result are bounded by FERRY_MAX_JOB_DATA_BYTES: over it, the job fails for good (InvalidRequest).
        """
        if job.data_bytes > self.max_data_bytes or not job.data:
            raise wire.too_large("the job's data", job.data_bytes, self.max_data_bytes) if job.data_bytes else \
                InvalidRequest("the job has no data (not enqueued by Ferry or RQ); enqueue it through Ferry")
        task_name, positional, args = wire.decode_data(job.data, self.max_data_bytes)
        spec = self.tasks.get(task_name)  # the allow-list: nothing outside the registry is imported or run
        if positional:
            raise InvalidRequest(f"task {task_name!r} takes named args only; this job passes positional ones")
        lists: set[str] = set()
        if workflows.has_inputs(args):  # a workflow step: the results of the jobs it waited for
            args, lists = workflows.resolve_inputs(self.store.conn, job.id, args)
        validated = spec.validate(args)
        self.interrupts.arm(job.id, job.timeout_s or self.default_timeout_s)
        context = self.progress.context(job.id, spec.context_param)
        try:
            arrays: dict[str, Any] = {name: self.cache.array(ref) for name, ref in spec.object_refs(validated).items()}
            arrays.update({name: workflows.arrays_in(getattr(validated, name), self.cache.array) for name in lists})
            if context is not None:
                arrays[spec.context_param or ""] = context
            value = spec.call(validated, arrays)
        finally:
            self.interrupts.disarm()
            if context is not None:
                self.progress.current = None
                context.flush()
        del arrays
        self._job, self._objects = job, 0
        payload = wire.dumps_value(self._objectify(value))
        if len(payload) > self.max_data_bytes:
            raise wire.too_large("the job's result", len(payload), self.max_data_bytes)
        return task_name, payload

    def with_task_ttls(self, job: Claimed) -> Claimed:
        """The job with its task's decorator TTLs where it set none (`@task(result_ttl_s=...)`); else as it is."""
        spec = self.tasks.specs_by_name().get(job.task)
        if spec is None or (spec.result_ttl_s is None and spec.failure_ttl_s is None):
            return job
        return dataclasses.replace(job, result_ttl_s=job.result_ttl_s or spec.result_ttl_s,
                                   failure_ttl_s=job.failure_ttl_s or spec.failure_ttl_s)

    def _objectify(self, value: Any) -> Any:
        """Large arrays and any bytes in the result become objects: stored in Redis, kept in this node's memory."""
        if value is None or type(value) in (str, int, float, bool):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)) or (
            isinstance(value, np.ndarray) and value.nbytes > self.threshold_bytes and value.dtype.kind in "biufc"
        ):
            kind, array = normalize(value)
            if self.write_behind is not None and self._job is not None:
                self._objects += 1
                return self.write_behind.keep(self._job, self._objects, kind, array).as_result()
            ref = ref_for(kind, array)
            self.store.put_prepared(ref, array)
            self.cache.adopt(ref, array)
            return ref.as_result()
        if isinstance(value, dict):
            return {k: self._objectify(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._objectify(v) for v in value]
        return value
