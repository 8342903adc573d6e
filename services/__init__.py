"""Ferry's services: the producer (HTTP API), the worker node, and the admin CLI.

Each imports `shared`, never each other. Every Ferry process (the `ferry` command, `python -m
services.<service>`, the API's extra processes) imports this package first, so this is where redis-py is
imported without the OpenTelemetry SDK it would load for nothing (shared/lean_imports.py says why).
"""

from shared.lean_imports import import_redis_lean

import_redis_lean()
