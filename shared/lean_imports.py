"""Keep what Ferry's own processes never use out of their memory.

redis-py 8's `import redis` try-imports the OpenTelemetry metrics SDK (redis/observability/providers.py)
when it is installed, often pulled in by other packages: ~20 MB RSS and ~60 ms in every process, and in
a node every worker process carries its share of the supervisor's copy. Ferry never turns on redis-py's
OTel metrics. So Ferry's own entry point (the `ferry` command: CLI, producer, node supervisor and its
forked workers) imports redis with the SDK hidden, which redis-py treats as "not installed", then
un-hides it, so a task that imports the OTel SDK itself still can. The client library (`from shared
import Client` inside a user's app) does not call this: what that app imports is the app's choice.
"""

from __future__ import annotations

import sys

HIDDEN = ("opentelemetry.metrics", "opentelemetry.sdk.metrics")  # redis-py: optional, for metrics Ferry never enables


def import_redis_lean() -> None:
    """Import redis-py without the modules in HIDDEN; a no-op when redis is already imported."""
    if "redis" in sys.modules:
        return
    hidden = [name for name in HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import machinery: "not importable", an ImportError
    try:
        import redis  # noqa: F401  # the one import this function exists for
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]
