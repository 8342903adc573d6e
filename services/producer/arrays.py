"""Uploads and downloads of objects over HTTP: .npy files and raw bytes, never pickles.

A .npy header is read and checked (numeric dtype, body size that matches the shape) before numpy
loads the data, and the load itself runs with allow_pickle=False: an object array is refused
without any of its bytes being unpickled, and a 100-byte file cannot make us allocate terabytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator, Mapping

import numpy as np

from services.producer.errors import validation_error
from shared.errors import InvalidRequest
from shared.objects.ref import MAX_DIMS, ObjectRef

NPY = "application/x-npy"
RAW = "application/octet-stream"
NUMERIC = "bool, int, uint, float or complex"
STREAM_SLICE_BYTES = 8 * 1024 * 1024


def numeric_dtype(spec: str, field: str) -> np.dtype:
    """The dtype `spec` names, if it is a plain numeric one; 422 on `field` otherwise."""
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise validation_error(field, f"unknown dtype {spec!r} ({exc}); use e.g. float64, <f4, int32, uint8") from exc
    _check_numeric(dtype, field)
    return dtype


def _check_numeric(dtype: np.dtype, field: str) -> None:
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise validation_error(
            field, f"dtype {dtype.str!r} is not numeric ({NUMERIC}); only numeric arrays can be objects"
        )


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = (-1,)
    if any(n < 0 for n in shape):
        raise validation_error("query.shape", f"shape {text!r} is not comma-separated sizes like 3,4 (omit it for 1-D)")
    if len(shape) > MAX_DIMS:
        raise validation_error("query.shape", f"shape has {len(shape)} dimensions; arrays have at most {MAX_DIMS}")
    return shape


def from_raw(body: bytes, dtype: str | None, shape: str | None) -> np.ndarray | bytes:
    """Raw bytes as themselves (no dtype), or as a zero-copy array of `dtype` and `shape` (default: 1-D)."""
    if dtype is None:
        if shape is not None:
            raise validation_error("query.shape", "shape needs a dtype (without one the body is stored as plain bytes)")
        return body
    item = numeric_dtype(dtype, "query.dtype")
    if shape is None:
        if len(body) % item.itemsize:
            raise validation_error(
                "query.dtype",
                f"the body's {len(body)} bytes are not a whole number of {item.str} items ({item.itemsize} bytes each)",
            )
        dims: tuple[int, ...] = (len(body) // item.itemsize,)
    else:
        dims = parse_shape(shape)
        expected = math.prod(dims) * item.itemsize
        if expected != len(body):
            raise validation_error(
                "query.shape", f"shape {dims} of {item.str} needs {expected} bytes but the body has {len(body)}"
            )
    return np.frombuffer(body, dtype=item).reshape(dims)


def from_npy(body: bytes) -> np.ndarray:
    """The array in a .npy file; the header is checked before numpy reads the data, and pickles are never loaded."""
    if not body.startswith(np.lib.format.MAGIC_PREFIX):
        raise InvalidRequest("the body is not a .npy file (no \\x93NUMPY magic); write one with numpy.save(f, array)")
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported; use 1.0 or 2.0")
    except ValueError as exc:
        raise InvalidRequest(f"the body is not a valid .npy file: {exc}") from exc
    _check_numeric(dtype, "body")  # before np.load: an object array is refused unread
    if len(shape) > MAX_DIMS:
        raise InvalidRequest(f"the .npy header has {len(shape)} dimensions; arrays have at most {MAX_DIMS}")
    expected = stream.tell() + math.prod(shape) * dtype.itemsize
    if expected != len(body):
        raise InvalidRequest(
            f"the .npy header says shape {tuple(shape)} of {dtype.str} ({expected} bytes with the header) "
            f"but the body has {len(body)} bytes; the file is truncated or has trailing data"
        )
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not a valid .npy file: {exc}") from exc
    if not isinstance(array, np.ndarray):  # np.load also reads .npz archives; the magic check rules them out
        raise InvalidRequest("the body must be a single .npy array")
    return array


def npy_header(ref: ObjectRef) -> bytes:
    """The .npy header for the array `ref` describes (C order), to stream its data after."""
    header = io.BytesIO()
    fields = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(ref.dtype)),
        "fortran_order": False,
        "shape": tuple(ref.shape),
    }
    np.lib.format.write_array_header_2_0(header, fields) if _needs_v2(fields) else np.lib.format.write_array_header_1_0(
        header, fields
    )
    return header.getvalue()


def _needs_v2(fields: Mapping[str, object]) -> bool:
    return len(repr(fields)) > 60_000  # version 1.0 headers stop at 65535 bytes


async def stream(prefix: bytes, data: np.ndarray | bytes) -> AsyncIterator[bytes | memoryview]:
    """`prefix`, then the data in slices, without copying the data into one more buffer."""
    if prefix:
        yield prefix
    raw = data.data.cast("B") if isinstance(data, np.ndarray) else memoryview(data)
    for start in range(0, len(raw), STREAM_SLICE_BYTES):
        yield raw[start : start + STREAM_SLICE_BYTES]
