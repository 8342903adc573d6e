"""The task registry: the only functions a worker will ever run are the ones registered here by name."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from shared.backoff import RetryBackoff
from shared.errors import ConfigError, InvalidArgs, UnknownTask
from shared.job_context import JobContext
from shared.limits import task_limits
from shared.objects.ref import ObjectRef

log = logging.getLogger("ferry.tasks")

BUILTIN_MODULES = ("shared.tasks.examples",)


class ArrayParam:
    """Marks a task parameter that receives a stored object as a read-only, zero-copy numpy view."""


Array = Annotated[np.ndarray, ArrayParam()]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its name, function, and the pydantic model its JSON args must satisfy."""

    name: str
    func: Callable[..., Any]
    input_model: type[BaseModel]
    array_params: frozenset[str]
    description: str
    version: str = ""  # a hash of the function's source: the catalog shows which code each node runs
    retry_backoff: RetryBackoff | None = None  # the task's default back-off (shared/backoff.py); a job may override
    limits: dict[str, Any] | None = None  # concurrency / concurrency_per_node / rate_limit (shared/limits.py)
    context_param: str | None = None  # the parameter annotated `JobContext`, passed by the worker (not an input)
    result_ttl_s: int | None = None  # the task's defaults for jobs that set none (`@task(..., result_ttl_s=)`)
    failure_ttl_s: int | None = None

    def validate(self, args: Any) -> BaseModel:
        """The validated input; InvalidArgs naming each bad field otherwise."""
        try:
            return self.input_model.model_validate(args if args is not None else {})
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in err["loc"]) or "(args)", "message": err["msg"]}
                for err in exc.errors()
            ]
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise InvalidArgs(f"invalid args for task {self.name!r}: {summary}", errors=problems) from exc

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def object_refs(self, validated: BaseModel) -> dict[str, ObjectRef]:
        return {name: getattr(validated, name) for name in self.array_params}

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def call(self, validated: BaseModel, arrays: dict[str, np.ndarray]) -> Any:
        """Run the task in this thread; an `async def` task runs to completion on this process's event loop."""
        kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        kwargs.update(arrays)
        if self.is_async:
            return run_coroutine(self.func(**kwargs))
        return self.func(**kwargs)


_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def run_coroutine(coro: Any) -> Any:
    """Drive `coro` on this process's one event loop (made on first use, after any fork), in the calling thread.

    The worker's timeout and cancel are signals that raise in the main thread: if one lands while the
    loop waits, the task is cancelled and given the chance to run its `finally` blocks before the
    error goes on; if it lands inside the task's own code, the task ends with it like a sync task.
    """
    global _loop, _loop_pid
    if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
        _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
    loop = _loop
    future = loop.create_task(coro)
    try:
        return loop.run_until_complete(future)
    except BaseException:
        if not future.done():
            future.cancel()
            try:
                loop.run_until_complete(future)
            except BaseException:  # noqa: BLE001 - the interrupting error is the one to report
                pass
        raise


class TaskRegistry:
    """Tasks by name. `task` is the decorator users apply to their own functions."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskSpec] = {}

    def task(self, name: str | None = None, *, concurrency: int | None = None, concurrency_per_node: int | None = None,
             rate_limit: str | None = None, result_ttl_s: int | None = None, failure_ttl_s: int | None = None,
             **retry: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function as a task; its signature, with type hints, becomes the input model.

        `concurrency` / `concurrency_per_node`: at most this many of its jobs run at once, cluster-wide / on one
        node; `rate_limit` ('100/60s'): at most that many start per period. Jobs over a limit wait in Redis.
        `result_ttl_s` / `failure_ttl_s`: how long its jobs are kept once finished / failed or canceled, for jobs
        that do not set their own (default: FERRY_RESULT_TTL_S / FERRY_FAILURE_TTL_S).
        `retry` is the task's default back-off between attempts (`retry_delay_s`, `retry_backoff`
        "fixed" | "exponential", `retry_max_delay_s`, `retry_jitter`; see shared/backoff.py).
        """
        for what, ttl in (("result_ttl_s", result_ttl_s), ("failure_ttl_s", failure_ttl_s)):
            if ttl is not None and ttl <= 0:
                raise ConfigError(f"task {name!r}: {what} must be a positive number of seconds, not {ttl}")
        backoff = _backoff(name, retry)

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            try:
                limits = task_limits(concurrency, concurrency_per_node, rate_limit) or None
            except ValueError as exc:
                raise ConfigError(f"task {task_name!r}: {exc}") from exc
            spec = dataclasses.replace(build_spec(task_name, func), limits=limits, result_ttl_s=result_ttl_s,
                                       failure_ttl_s=failure_ttl_s)
            if backoff is not None:
                spec = dataclasses.replace(spec, retry_backoff=backoff)
            existing = self._tasks.get(spec.name)
            if existing is not None and existing.func is not func:
                if (existing.func.__module__, existing.func.__qualname__) != (func.__module__, func.__qualname__):
                    raise ConfigError(
                        f"task {spec.name!r} is registered twice ({existing.func.__module__} and {func.__module__})"
                    )
            self._tasks[spec.name] = spec
            return func

        return register

    def get(self, name: str) -> TaskSpec:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTask(
                f"no task named {name!r} is registered; known tasks: {known}", known=sorted(self._tasks)
            ) from None

    def specs_by_name(self) -> dict[str, TaskSpec]:
        """Every task by name (read-only use: the worker's per-job lookup, without UnknownTask's cost)."""
        return self._tasks

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def specs(self) -> list[TaskSpec]:
        return [self._tasks[name] for name in self.names()]


def build_spec(name: str, func: Callable[..., Any]) -> TaskSpec:
    hints = get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    arrays = set()
    context: str | None = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"task {name!r}: *args/**kwargs are not allowed; name every parameter")
        annotation = hints.get(param.name, Any)
        if annotation is JobContext:
            context = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        if _is_array(annotation):
            arrays.add(param.name)
            annotation = ObjectRef
        fields[param.name] = (annotation, default)
    model_name = "".join(part.title() for part in name.replace("-", ".").replace("_", ".").split(".")) + "Args"
    model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    description = inspect.getdoc(func) or ""
    return TaskSpec(name, func, model, frozenset(arrays), description.split("\n\n")[0], source_version(func),
                    context_param=context)


def _backoff(name: str | None, retry: dict[str, Any]) -> RetryBackoff | None:
    if not retry:
        return None
    try:
        return RetryBackoff.model_validate(retry)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"@task({name!r}): bad retry back-off: {problems}") from exc


def source_version(func: Callable[..., Any]) -> str:
    """12 hex digits of the sha256 of the function's source (its qualified name when the source is unavailable)."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = f"{func.__module__}.{func.__qualname__}"
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def _is_array(annotation: Any) -> bool:
    return get_origin(annotation) is Annotated and any(isinstance(m, ArrayParam) for m in get_args(annotation)[1:])


registry = TaskRegistry()
task = registry.task


def load_tasks(modules: Iterable[str] = ()) -> TaskRegistry:
    """Import the built-in examples and the user's task modules (FERRY_TASK_MODULES); returns the registry.

    The working directory is importable, as with `rq worker --path .`, so `ferry worker` run from a
    project finds `myapp.tasks` without installing it.
    """
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"FERRY_TASK_MODULES: cannot import {module!r} ({exc}); check the module path and that it is installed"
            ) from exc
    return registry
