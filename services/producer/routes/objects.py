"""/v1/objects: upload arrays (.npy or raw bytes) for tasks to read, fetch them back, list and delete them."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.producer import arrays
from services.producer.deps import ClientDep
from services.producer.errors import validation_error
from services.producer.schemas import StoredObject, errors
from shared.errors import ObjectNotFound, UnsupportedMediaType
from shared.objects.lifetime import missing_message
from shared.objects.ref import ObjectKind, ObjectRef

router = APIRouter(prefix="/v1/objects", tags=["objects"])

MAX_TTL_S = 10 * 365 * 86_400  # Redis refuses absurd expiries with an error; refuse them here, as a 422
ObjectId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the `id` of the ObjectRef the upload returned")]

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "A .npy file (`Content-Type: application/x-npy`, e.g. from `numpy.save`), or raw bytes "
            "(`Content-Type: application/octet-stream`), optionally read as an array via `dtype` and `shape`."
        ),
        "content": {
            arrays.NPY: {"schema": {"type": "string", "format": "binary"}},
            arrays.RAW: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
DATA_RESPONSES = {
    "description": (
        "The metadata (JSON) by default. With `Accept: application/x-npy` or `?format=npy`: the data "
        "(arrays as a .npy file, bytes objects as raw bytes). With `?format=raw`: the bare bytes, C order."
    ),
    "content": {arrays.NPY: {}, arrays.RAW: {}},
}


async def read_body(request: Request) -> bytes:
    """The whole request body (the size limit middleware has already capped it)."""
    return await request.body()


@router.post(
    "",
    status_code=201,
    response_model=ObjectRef,
    summary="Upload an array or bytes",
    description=(
        "Stores the data once in Redis and returns its ObjectRef: pass that JSON as a task's array argument. "
        "The id is a content hash, so uploading equal data again returns the same ref (and extends its expiry).\n\n"
        "- `application/x-npy`: a .npy file with a numeric dtype (pickled/object arrays are refused, never loaded).\n"
        "- `application/octet-stream`: raw bytes; with `dtype` (and optionally `shape`, default 1-D) they become an "
        "array, and the byte count must match. Without `dtype` the object is kind `bytes`."
    ),
    openapi_extra=UPLOAD_BODY,
    responses=errors(400, 413, 415, 422, 507),
)
def upload(
    response: Response,
    client: ClientDep,
    body: Annotated[bytes, Depends(read_body)],
    content_type: Annotated[str | None, Header(include_in_schema=False)] = None,
    dtype: Annotated[
        str | None, Query(description="octet-stream only: e.g. float64, <f4, int32", examples=["float64"])
    ] = None,
    shape: Annotated[
        str | None, Query(description="octet-stream only: comma-separated sizes, e.g. 1000,3", examples=["1000,3"])
    ] = None,
    ttl_s: Annotated[
        int | None,
        Query(
            gt=0,
            le=MAX_TTL_S,
            description=(
                "seconds to keep it at least (and while jobs that need it are not done); default FERRY_OBJECT_TTL_S"
            ),
        ),
    ] = None,
    durable: Annotated[
        bool | None,
        Query(
            description=(
                "true: answer only once the object is in Redis. On a host where a node runs, an upload is also "
                "copied into that node's memory, and by default (FERRY_PUT_WRITE_BEHIND) the answer comes once it "
                "is there, the node writing it to Redis just after"
            ),
        ),
    ] = None,
) -> ObjectRef:
    media = (content_type or "").split(";")[0].strip().lower()
    if media == arrays.NPY:
        for name, value in (("dtype", dtype), ("shape", shape)):
            if value is not None:
                raise validation_error(f"query.{name}", f"{name} comes from the .npy header; leave it out")
        data: np.ndarray | bytes = arrays.from_npy(body)
    elif media == arrays.RAW:
        data = arrays.from_raw(body, dtype, shape)
    else:
        raise UnsupportedMediaType(
            f"send the body as `Content-Type: {arrays.NPY}` (a .npy file) or `Content-Type: {arrays.RAW}` "
            f"(raw bytes, with ?dtype=&shape= for an array); got {content_type or 'no Content-Type'!r}"
        )
    ref = client.put(data, ttl_s, durable)
    response.headers["Location"] = f"/v1/objects/{ref.id}"
    return ref


@router.get("", response_model=list[StoredObject], summary="List stored objects", responses=errors())
def list_objects(client: ClientDep) -> list[StoredObject]:
    return [StoredObject(ref=ref, created_at=created, ttl_s=ttl) for ref, created, ttl in client.objects.list()]


@router.get(
    "/{object_id}",
    response_model=ObjectRef,
    summary="An object's metadata, or its data",
    responses={200: DATA_RESPONSES, **errors(404, 422)},
)
def get_object(
    object_id: ObjectId,
    client: ClientDep,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    fmt: Annotated[
        Literal["json", "npy", "raw"] | None, Query(alias="format", description="overrides the Accept header")
    ] = None,
) -> Response | ObjectRef:
    ref = client.objects.ref(object_id)
    wanted = fmt or _negotiate(accept)
    if wanted == "json":
        return ref
    data = client.get(ref)
    prefix = arrays.npy_header(ref) if wanted == "npy" and ref.kind is ObjectKind.ARRAY else b""
    media = arrays.NPY if prefix else arrays.RAW
    suffix = "npy" if prefix else "bin"
    headers = {
        "Content-Length": str(len(prefix) + ref.nbytes),
        "Content-Disposition": f'attachment; filename="{ref.id}.{suffix}"',
        "X-Ferry-Kind": ref.kind.value,
        "X-Ferry-Dtype": ref.dtype,
        "X-Ferry-Shape": ",".join(str(n) for n in ref.shape),
    }
    return StreamingResponse(arrays.stream(prefix, data), media_type=media, headers=headers)


@router.delete(
    "/{object_id}",
    status_code=204,
    summary="Delete an object",
    description=(
        "Refused with 409 while jobs that are not done yet need the object (the message lists them), unless "
        "`force=true`: then those jobs fail with an error that says the object was deleted."
    ),
    responses=errors(404, 409, 422),
)
def delete_object(
    object_id: ObjectId,
    client: ClientDep,
    force: Annotated[bool, Query(description="delete even if jobs not yet done need it; they fail")] = False,
) -> Response:
    if not client.objects.delete(object_id, force=force):
        raise ObjectNotFound(missing_message(object_id))
    return Response(status_code=204)


def _negotiate(accept: str | None) -> str:
    """Data only when the client asks for it by type; browsers and `*/*` get the JSON metadata."""
    types = {part.split(";")[0].strip().lower() for part in (accept or "").split(",")}
    if arrays.NPY in types:
        return "npy"
    if arrays.RAW in types and "application/json" not in types:
        return "raw"
    return "json"
