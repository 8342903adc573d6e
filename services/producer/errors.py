"""How the API reports failure: every non-2xx answer is `{"error": {"type", "message", ...details}}`.

FerryError                    -> its `http_status`, its message and details (the CLI prints the same text)
redis ConnectionError/Timeout -> 503 RedisUnavailable, naming the Redis URL and the fix
redis "OOM ..." reply         -> 507 RedisFull
RequestValidationError        -> 422 ValidationError with field paths ("body.args.seconds", "query.wait_s");
                                 400 when the body is not JSON; 415 when it was not sent as JSON
Starlette HTTPException       -> its status (404 unknown route, 405 wrong method), in the same envelope
anything else                 -> 500 InternalError; the traceback goes to the log, not to the client
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import OutOfMemoryError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import FerryError, InvalidRequest, RedisFull, Unauthorized, UnsupportedMediaType
from shared.redis_conn import redact, unavailable

log = logging.getLogger("ferry.producer")

MAX_LISTED_ERRORS = 50  # a 10,000-job batch must not answer with 10,000 error entries


def error_body(type_name: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": jsonable_encoder({"type": type_name, "message": message, **details})}


def error_response(
    status: int, type_name: str, message: str, headers: Mapping[str, str] | None = None, **details: Any
) -> JSONResponse:
    return JSONResponse(error_body(type_name, message, **details), status_code=status, headers=headers)


def ferry_error_response(exc: FerryError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return error_response(exc.http_status, type(exc).__name__, exc.message, headers, **exc.details)


def is_oom(exc: BaseException) -> bool:
    """True for Redis's reply to a write over maxmemory ("OOM command not allowed when used memory > 'maxmemory'").

    redis-py maps it to OutOfMemoryError and strips the "OOM" prefix; a plain ResponseError keeps it.
    """
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM"))


def redis_full(url: str, exc: BaseException, what: str = "the write") -> RedisFull:
    return RedisFull(
        f"Redis at {redact(url)} is out of memory and refused {what} ({exc}); delete objects you no longer need "
        "(DELETE /v1/objects/{id}), shorten FERRY_OBJECT_TTL_S, or raise the server's maxmemory"
    )


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_error(field: str, message: str) -> RequestValidationError:
    """A 422 for one input the route checks itself (e.g. `query.dtype`), reported like FastAPI's own."""
    return RequestValidationError(
        [{"type": "value_error", "loc": tuple(field.split(".")), "msg": message, "input": None}]
    )


async def _on_ferry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FerryError)
    if exc.http_status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return ferry_error_response(exc)


async def _on_redis_down(request: Request, exc: Exception) -> JSONResponse:
    error = unavailable(request.app.state.client.url, exc)
    log.warning("%s %s: %s", request.method, request.url.path, error.message)
    return ferry_error_response(error)


async def _on_redis_reply(request: Request, exc: Exception) -> JSONResponse:
    if is_oom(exc):
        error = redis_full(request.app.state.client.url, exc)
        log.warning("%s %s: %s", request.method, request.url.path, error.message)
        return ferry_error_response(error)
    return _internal_error(request.method, request.url.path, exc)


async def _on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error")
        where = bad_json["loc"][-1] if len(bad_json["loc"]) > 1 else None
        detail = f" ({reason} at character {where})" if reason and where is not None else ""
        return ferry_error_response(InvalidRequest(f"request body is not valid JSON{detail}"))
    if isinstance(exc.body, (bytes, bytearray)) and exc.body:
        # FastAPI parses JSON only when the Content-Type says so (a CSRF guard); say how to send it.
        sent = request.headers.get("content-type", "no Content-Type")
        return ferry_error_response(
            UnsupportedMediaType(
                f"this route reads JSON but the body came as {sent!r}: send it with "
                "`Content-Type: application/json` (curl: -H 'Content-Type: application/json')"
            )
        )
    problems = [{"field": field_path(e["loc"]), "message": e["msg"]} for e in errors]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return error_response(
        422, "ValidationError", f"invalid request: {summary}{more}", errors=problems[:MAX_LISTED_ERRORS]
    )


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    try:
        name = HTTPStatus(exc.status_code).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        name = "HTTPError"
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
        message = f"{request.method} is not allowed on {request.url.path}; use {exc.headers['Allow']}"
    return error_response(exc.status_code, name, message, headers=exc.headers)


def _internal_error(method: str, path: str, exc: BaseException) -> JSONResponse:
    log.error("%s %s: unexpected %s", method, path, type(exc).__name__, exc_info=exc)
    return error_response(
        500, "InternalError", f"unexpected {type(exc).__name__} while handling {method} {path}; see the producer's log"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FerryError, _on_ferry_error)
    app.add_exception_handler(redis.ConnectionError, _on_redis_down)
    app.add_exception_handler(redis.TimeoutError, _on_redis_down)
    app.add_exception_handler(redis.ResponseError, _on_redis_reply)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)


class CatchAll:
    """Answer 500 for any exception no handler took, logging its traceback once.

    Starlette's own catch-all (an `Exception` handler) re-raises after answering, so every traceback
    would be logged twice, once by us and once by uvicorn; this outermost middleware stops it here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - this is the last line of defence
            response = _internal_error(scope["method"], scope["path"], exc)
            if not started:  # after the first byte, all we can do is let uvicorn close the connection
                await response(scope, receive, send)
