"""One log line per request: method, path, status, duration; never a header, a query string or a body.

The token travels in the Authorization header, which is never read here; the query string is left out
too, so nothing a client puts in a URL lands in the logs. With FERRY_LOG_FORMAT=json the line carries
`method`, `path`, `status`, `duration_s` and `client` as fields. Pure ASGI (no BaseHTTPMiddleware), so
streaming responses and long-polls pass through untouched; FERRY_ACCESS_LOG=false turns it off.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ferry.access")


class AccessLog:
    """Log each HTTP request once it has been answered (or has failed without an answer: status 500)."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if log.isEnabledFor(logging.INFO):
                _emit(scope, status, time.perf_counter() - started)


def _emit(scope: Scope, status: int, duration: float) -> None:
    """The line, as `log.info(..., extra=...)` would make it, without looking up the caller's frame (the
    record's file and line are this module's): ~20 us a line instead of ~25 (formatting and writing the
    line are the rest; FERRY_ACCESS_LOG=false saves it all)."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    method, path = scope["method"], scope["path"]
    record = logging.LogRecord(log.name, logging.INFO, __file__, 0, "%s %s %d %.1fms %s",
                               (method, path, status, duration * 1000, peer), None, "AccessLog")
    record.method, record.path, record.status, record.client = method, path, status, peer
    record.duration_s = round(duration, 6)
    log.handle(record)
