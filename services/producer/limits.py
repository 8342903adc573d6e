"""Request-body size limits, enforced on the bytes that arrive, not only on what Content-Length claims.

A chunked upload has no Content-Length, and a client can lie in it; so the middleware counts every
`http.request` message and stops reading at the limit. JSON routes are held to FERRY_MAX_REQUEST_BYTES;
`POST /v1/objects` (the one route that takes large binary bodies) to FERRY_MAX_OBJECT_UPLOAD_BYTES.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.producer.errors import ferry_error_response
from shared.errors import ObjectTooLarge
from shared.settings import Settings

UPLOAD_PATH = "/v1/objects"


class _TooLarge(Exception):
    """Raised from `receive` to stop the app reading a body that went over the limit."""


class BodyLimit:
    """Answer 413 to any request whose body exceeds its route's limit (pure ASGI, so streaming still works)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """The byte limit for this request, and the setting that raises it."""
        if scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH:
            return self.settings.max_object_upload_bytes, "FERRY_MAX_OBJECT_UPLOAD_BYTES"
        return self.settings.max_request_bytes, "FERRY_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, limit, setting, declared)
            return

        received = 0
        over = False
        answered = False  # the client has had a response start, ours or the app's

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if over:
                # FastAPI turns an error while reading the body into its own 400; answer 413 instead.
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await _refuse(scope, receive, send, limit, setting)
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception as exc:  # noqa: BLE001 - only our own signal is handled here
            if not (over and _only_too_large(exc)):
                raise
            if not answered:
                await _refuse(scope, receive, send, limit, setting)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length before we see it
    return None


def _only_too_large(exc: BaseException) -> bool:
    if isinstance(exc, _TooLarge):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_too_large(e) for e in exc.exceptions)
    return _only_too_large(exc.__cause__) if exc.__cause__ is not None else False


async def _refuse(
    scope: Scope, receive: Receive, send: Send, limit: int, setting: str, declared: int | None = None
) -> None:
    size = f" of {declared} bytes" if declared is not None else ""
    error = ObjectTooLarge(
        f"request body{size} is over the limit of {limit} bytes ({setting}); "
        f"send less, or raise {setting} on the producer",
        limit_bytes=limit,
        setting=setting,
    )
    response = ferry_error_response(error)
    response.headers["Connection"] = "close"  # the rest of the body is never read
    await response(scope, receive, send)
