"""`POST /v1/jobs` with a valid JSON body, answered without FastAPI's per-request machinery.

Why: a submit is the producer's hot path, and one process is GIL-bound. Through FastAPI a submit cost
~250 µs of CPU, most of it in the framework: matching ~50 routes, solving three dependencies, parsing the
body to a dict and validating the dict, building a Request and a Response, OpenTelemetry checks. Here
the body is read once and validated by pydantic-core straight from the bytes (`model_validate_json`),
the job goes to the same `submit_job` as the route's, and the answer is two ASGI messages.

What stays the same: this layer sits inside the token gate, the body limit, the catch-all and the
access log, so all of them apply as before; the route in routes/jobs.py still documents the API
(OpenAPI and /docs are unchanged); and any request this layer does not accept as it is (another
Content-Type, a body that is not a valid JobRequest) is replayed to FastAPI, which answers it exactly
as before (400, 415 or 422 with field paths). Errors while submitting (unknown task, invalid args,
Redis down, Redis full) get the app's own exception handlers, so the same status and envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.producer.routes.jobs import submit_job
from shared.models import JobRequest

SUBMIT_PATH = "/v1/jobs"
JSON = b"application/json"
HEADERS = [(b"content-type", JSON)]


class FastSubmit:
    """Answer `POST /v1/jobs` itself when the body is a valid JobRequest; pass anything else on untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["path"] == SUBMIT_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and _sends_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)  # the body limit's receive: over the limit, it raises to its layer
        if body is None:
            return  # the client left before sending its body: nobody to answer
        try:
            job = JobRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # FastAPI's own 400/422, field paths and all
            return
        try:
            answer = await submit_job(job, scope["app"].state.aclient)
        except Exception as exc:  # noqa: BLE001 - the app's handler for it answers, or it goes on up
            handler = _handler_for(scope, exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive, send), exc)
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 202,
                    "headers": [*HEADERS, (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def _sends_json(scope: Scope) -> bool:
    """True when the Content-Type is application/json (with or without parameters, e.g. a charset)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower() == JSON
    return False


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever the server sends next (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _handler_for(scope: Scope, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The app's exception handler for `exc` (by its class, then its bases), as Starlette looks it up."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
