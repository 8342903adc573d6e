"""Redis replies as the Python values Ferry uses.

Every connection Ferry makes keeps redis-py's default `decode_responses=False` (shared/redis_conn.py, the async
client, RQ's own connections), so each string in a reply is `bytes`. redis-py's annotations cannot know that
and say `bytes | str`; these helpers take either, so the callers' types are exact without casts or ignores,
and a `str` (a connection made with decode_responses=True) would still be handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def text(value: bytes | str, errors: str = "strict") -> str:
    """A reply string as text (UTF-8)."""
    return value.decode(errors=errors) if isinstance(value, bytes) else value


def optional_text(value: bytes | str | None, errors: str = "strict") -> str | None:
    """`text`, with None (a missing key or field) kept as None."""
    return None if value is None else text(value, errors)


def texts(values: Iterable[Any]) -> list[str]:
    """The members of a SMEMBERS, LRANGE or ZRANGE (without scores) reply as text."""
    return [text(value) for value in values]


def scored_texts(values: Iterable[Any]) -> list[tuple[str, float]]:
    """A ZRANGE ... WITHSCORES reply as (member as text, score) pairs."""
    return [(text(member), float(score)) for member, score in values]


def optional_bytes(value: bytes | str | None) -> bytes | None:
    """A reply string as bytes (None kept): what the callers that parse raw values take."""
    return value.encode() if isinstance(value, str) else value


def byte_fields(fields: Mapping[Any, Any] | None) -> dict[bytes, bytes]:
    """A hash (HGETALL) or stream entry (XRANGE) reply, keyed and valued by bytes as the connection returns it.

    None (redis-py's type for a stream entry without fields, which XADD cannot write) reads as no fields.
    The reply is returned as it is (no copy) when it already is bytes to bytes, which it always is on Ferry's
    connections; a decoded reply is encoded.
    """
    if fields is None:
        return {}
    if isinstance(fields, dict) and all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in fields.items()):
        return fields
    return {_encoded(k): _encoded(v) for k, v in fields.items()}


def _encoded(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
