"""ObjectRef: what a job's JSON carries instead of a large array or blob."""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Annotated, Any

import blake3
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import InvalidRequest

REF_MARKER = "$ferry_ref"  # key that marks a reference inside a JSON result
_REF_IN_JSON = re.compile(rb'"\$ferry_ref"\s*:\s*\{\s*"id"\s*:\s*"([0-9a-f]{32})".*?"nbytes"\s*:\s*(\d+)')


def refs_in_result(payload: bytes) -> str:
    """`id:nbytes,...` of the objects a JSON result references ('' for none): where a workflow's next step
    should run (placement offers it to the node holding them). A scan only when the marker is there."""
    if REF_MARKER.encode() not in payload:
        return ""
    return ",".join(f"{m[1].decode()}:{m[2].decode()}" for m in _REF_IN_JSON.finditer(payload))
HASH_THREADED_BYTES = 4 * 1024 * 1024  # from this size, BLAKE3 hashes on every core
MAX_DIMS = 64  # numpy's limit (NPY_MAXDIMS); more is refused as input, never a 500


class ObjectKind(str, Enum):  # noqa: UP042 - StrEnum would change str(kind); kept as it was
    ARRAY = "array"
    BYTES = "bytes"


class ObjectRef(BaseModel):
    """A reference to an object stored in Redis; its id is a content hash, so equal data shares one id."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    kind: ObjectKind
    dtype: str = Field("uint8", max_length=64)
    shape: tuple[Annotated[int, Field(ge=0)], ...] = Field((), max_length=MAX_DIMS)
    nbytes: int = Field(ge=0)

    @field_validator("dtype")
    @classmethod
    def _numeric_dtype(cls, value: str) -> str:
        return numeric_dtype(value).str

    @model_validator(mode="after")
    def _size_fits_shape(self) -> ObjectRef:
        expected = math.prod(self.shape) * np.dtype(self.dtype).itemsize
        if self.kind is ObjectKind.ARRAY and expected != self.nbytes:
            raise ValueError(f"shape {list(self.shape)} of {self.dtype} is {expected} bytes, not nbytes={self.nbytes}")
        return self

    def describe(self) -> str:
        """kind, dtype, shape and size in words, for error messages."""
        if self.kind is ObjectKind.BYTES:
            return f"{self.nbytes} bytes"
        return f"a {self.dtype} array of shape {list(self.shape)} ({self.nbytes} bytes)"

    def same_data_as(self, stored: ObjectRef) -> bool:
        """True when this reference describes the stored object exactly (kind, dtype, shape, size)."""
        return (self.kind, self.dtype, tuple(self.shape), self.nbytes) == (
            stored.kind,
            stored.dtype,
            tuple(stored.shape),
            stored.nbytes,
        )

    def as_result(self) -> dict[str, Any]:
        """The JSON form used when a task's result is an object."""
        return {REF_MARKER: self.model_dump(mode="json")}


def numeric_dtype(spec: str) -> np.dtype:
    """The plain numeric dtype `spec` names; ValueError (a 4xx at every boundary) for anything else.

    numpy raises TypeError, ValueError or even SyntaxError (for "," it evaluates the text) on bad specs.
    """
    try:
        dtype = np.dtype(spec)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the user's input, not our bug
        raise ValueError(f"unknown dtype {spec!r}; use e.g. float64, <f4, int32, uint8") from exc
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"dtype {spec!r} is not numeric (bool, int, uint, float or complex)")
    return dtype


def mismatch(claimed: ObjectRef, stored: ObjectRef) -> str | None:
    """Why `claimed` does not describe `stored` (None when it does): the stored metadata is the truth."""
    if claimed.same_data_as(stored):
        return None
    if claimed.nbytes != stored.nbytes:
        return (
            f"object {stored.id} holds {stored.nbytes} bytes but the reference says {claimed.nbytes} bytes; "
            f"it is {stored.describe()}: use the reference that put returned"
        )
    return (
        f"object {stored.id} is {stored.describe()} but the reference says {claimed.describe()}; "
        "use the reference that put returned"
    )


def normalize(data: Any) -> tuple[ObjectKind, np.ndarray]:
    """The data as a C-contiguous numpy array, with its kind; refuses anything but numeric arrays and bytes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return ObjectKind.BYTES, np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biufc":
            raise InvalidRequest(f"arrays of dtype {data.dtype} cannot be objects; use a numeric dtype")
        return ObjectKind.ARRAY, np.ascontiguousarray(data)
    raise InvalidRequest(f"cannot store a {type(data).__name__} as an object; pass a numpy array or bytes")


def ref_for(kind: ObjectKind, array: np.ndarray) -> ObjectRef:
    """The reference for `array`: a content hash over kind, dtype, shape and bytes.

    BLAKE3 on all cores (it releases the GIL and splits the input into a tree itself): a cryptographic
    hash, so nobody can craft a collision to make dedup hand out someone else's data, and about 2.5 x
    faster than the sha256 of 16 MiB pieces it replaced (400 MB: 45 ms against 113 ms on two cores;
    docs/benchmarks.md, "Same-host put"). Hashing is on the critical path of every put.
    """
    raw = array.data.cast("B") if array.nbytes else memoryview(b"")
    threads = blake3.blake3.AUTO if len(raw) >= HASH_THREADED_BYTES else 1  # threads cost more than small inputs take
    digest = blake3.blake3(f"{kind.value}|{array.dtype.str}|{array.shape}|".encode(), max_threads=threads)
    digest.update(raw)
    shape = tuple(int(n) for n in array.shape)
    nbytes = int(array.nbytes)
    assert nbytes == math.prod(shape) * array.dtype.itemsize
    return ObjectRef(id=digest.hexdigest()[:32], kind=kind, dtype=array.dtype.str, shape=shape, nbytes=nbytes)


def view(ref: ObjectRef, buffer: memoryview) -> np.ndarray:
    """A read-only numpy view of `buffer` shaped as `ref` says; no copy."""
    array = np.frombuffer(buffer, dtype=np.dtype(ref.dtype), count=math.prod(ref.shape) if ref.shape else 1)
    if ref.kind is ObjectKind.ARRAY:
        array = array.reshape(ref.shape)
    array.flags.writeable = False
    return array


def refs_as_json(value: Any) -> Any:
    """`value` with every ObjectRef inside it (in dicts, lists, tuples) in its JSON form: job args as submitted."""
    if isinstance(value, ObjectRef):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: refs_as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [refs_as_json(v) for v in value]
    return value
