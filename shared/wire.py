"""Ferry's wire format: RQ's job hash and result stream, with JSON where RQ would pickle.

A job's `data` field is zlib(JSON [task name, null, [], args]), which is exactly what RQ writes with
`rq.serializers.JSONSerializer`, so `rq info`, rq-dashboard and `Job.fetch(..., serializer=JSONSerializer)`
read Ferry's jobs. Nothing here ever unpickles: data that is not JSON is refused.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from typing import Any

import numpy as np

from shared.errors import InvalidRequest
from shared.timeutil import rq_now

FERRY_META = json.dumps({"ferry": 1})


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_fields(
    task: str, args: dict[str, Any], queue: str, timeout_s: int, retries: int, result_ttl_s: int, failure_ttl_s: int
) -> dict[str, Any]:
    """The RQ job hash for a new queued job."""
    now = rq_now()
    return {
        "created_at": now,
        "enqueued_at": now,
        "data": zlib.compress(encode_data(task, args)),
        "ferry_task": task,  # lets the reaper and cancel count metrics per task without inflating `data`
        "origin": queue,
        "description": f"{task}({_short(args)})",
        "status": "queued",
        "timeout": timeout_s,
        "result_ttl": result_ttl_s,
        "failure_ttl": failure_ttl_s,
        "retries_left": retries,
        "number_of_retries": 0,
        "meta": FERRY_META,
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
    }


def encode_data(task: str, args: dict[str, Any]) -> bytes:
    return json.dumps([task, None, [], args], separators=(",", ":"), allow_nan=False).encode()


DATA_BOUND_SETTING = "FERRY_MAX_JOB_DATA_BYTES"


def inflate(raw: bytes, max_bytes: int, what: str = "job data") -> bytes:
    """zlib-decompress `raw` without ever producing more than `max_bytes` (a zlib bomb stops at the bound).

    Data that is not zlib is returned as it is (RQ falls back to uncompressed data too), if within the bound.
    """
    if len(raw) > max_bytes:
        raise too_large(what, len(raw), max_bytes)
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error:
        return raw
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise too_large(what, None, max_bytes)
    return out


def too_large(what: str, size: int | None, max_bytes: int) -> InvalidRequest:
    """The error for a value over the bound: names the size, the bound and the setting."""
    size_text = f"{size:,} bytes" if size is not None else f"over {max_bytes:,} bytes once decompressed"
    return InvalidRequest(
        f"{what} is {size_text}, above the bound of {max_bytes:,} bytes ({DATA_BOUND_SETTING}); "
        "pass large inputs as objects (Client.put) or raise the setting", size=size, max_bytes=max_bytes)


def decode_data(raw: bytes, max_bytes: int) -> tuple[str, list[Any], dict[str, Any]]:
    """(function name, positional args, named args) from a job's `data`; refuses anything but JSON (never unpickles).

    Inflates at most `max_bytes` (FERRY_MAX_JOB_DATA_BYTES): InvalidRequest beyond it.
    """
    raw = inflate(raw, max_bytes)
    try:
        func, _instance, positional, kwargs = json.loads(raw.decode())  # str: skips json's encoding sniffing
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "job data is not Ferry's JSON format (pickled RQ jobs are refused); enqueue it through Ferry") from exc
    if not isinstance(func, str) or not isinstance(kwargs, dict) or not isinstance(positional, list):
        raise InvalidRequest("job data names no task; enqueue it through Ferry")
    return func, positional, kwargs


def _short(args: dict[str, Any], limit: int = 80) -> str:
    text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in args.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dumps_value(value: Any) -> bytes:
    """A task's result as JSON; numpy scalars and small arrays become plain numbers and lists."""
    return _RESULT_ENCODER.encode(value).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("bytes results must be objects; return a numpy array or put() them")
    raise TypeError(f"a {type(value).__name__} result is not JSON; return JSON-friendly values or numpy arrays")


# One encoder for every result: json.dumps with options builds a new encoder per call (µs on the hot path).
_RESULT_ENCODER = json.JSONEncoder(default=_jsonable, separators=(",", ":"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: bytes | str) -> bytes:
    return base64.b64decode(text)


def exc_string(text: str) -> str:
    """RQ's result-stream encoding of an error text."""
    return b64(zlib.compress(text.encode()))


def read_exc_string(encoded: bytes | str, max_bytes: int) -> str:
    """An error text from the result stream, inflated to at most `max_bytes`."""
    if len(encoded) > max_bytes * 2:
        raise too_large("the error text", len(encoded), max_bytes)
    return inflate(unb64(encoded), max_bytes, "the error text").decode(errors="replace")
