"""Ferry's shared package: everything the producer, the workers, the CLI and client apps have in common.

The public names (`from shared import Client, task, ...`) are loaded on first use (PEP 562), not when any
`shared.*` module is imported: a worker process imports `shared.keys` without paying for the client, its
models and their dependencies in memory (every worker is forked from a supervisor that imported them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.client import Client
    from shared.errors import FerryError
    from shared.objects.ref import ObjectRef
    from shared.schedules import schedule
    from shared.settings import Settings, get_settings
    from shared.tasks import Array, task

__all__ = ["Array", "Client", "FerryError", "ObjectRef", "Settings", "get_settings", "schedule", "task"]

_HOMES = {
    "Array": "shared.tasks",
    "Client": "shared.client",
    "FerryError": "shared.errors",
    "ObjectRef": "shared.objects.ref",
    "Settings": "shared.settings",
    "get_settings": "shared.settings",
    "schedule": "shared.schedules",
    "task": "shared.tasks",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first read; unknown names are submodules or errors."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shared' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
