"""Tasks: register functions by name with `@task("name")`; only registered tasks ever run."""

from shared.job_context import JobContext
from shared.tasks.registry import Array, TaskRegistry, TaskSpec, load_tasks, registry, task

__all__ = ["Array", "JobContext", "TaskRegistry", "TaskSpec", "load_tasks", "registry", "task"]
