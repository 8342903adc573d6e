"""Objects: large inputs and results that travel between nodes once, through Redis.

`ref` holds the ObjectRef model, `store` moves objects in and out of Redis in chunks, `segments` wraps
POSIX shared memory, and `cache` is a node's shared-memory cache that worker processes read zero-copy.
"""

from shared.objects.ref import ObjectKind, ObjectRef

__all__ = ["ObjectKind", "ObjectRef"]
