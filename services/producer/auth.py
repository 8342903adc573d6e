"""The token check, as the outermost layer after the catch-all: a request without the token is refused
before its body is read or parsed (no 400 or 413 tells a stranger anything), and before any route runs.

Open without the token: `/healthz`, and the dashboard's static page and assets under `/ui` (they hold
no data: everything the page shows comes from the /v1 routes, which need the token). The API takes
`Authorization: Bearer <token>`; the docs pages
(`/docs`, `/redoc`, their assets and `/openapi.json`) also take HTTP Basic with the token as the
password, so a browser can open them: it asks for the password once.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from services.producer.errors import ferry_error_response
from shared.errors import Unauthorized

OPEN_PATHS = frozenset({"/healthz"})
OPEN_PREFIXES = ("/ui/",)  # the dashboard's page and assets; its data comes from the guarded /v1 routes
DOCS_PREFIXES = ("/docs", "/redoc", "/openapi.json", "/static-docs/")
BASIC_REALM = 'Basic realm="Ferry API docs: any user name, FERRY_API_TOKEN as the password"'


class TokenGate:
    """Answer 401 to any request but /healthz that lacks the right token, when a token is configured."""

    def __init__(self, app: ASGIApp, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or _open(scope["path"]):
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(DOCS_PREFIXES)
        reason = self._refusal(_header(scope, b"authorization"), docs)
        if reason is None:
            await self.app(scope, receive, send)
            return
        response = ferry_error_response(
            Unauthorized(f"{reason}: send the header `Authorization: Bearer <FERRY_API_TOKEN>`")
        )
        if docs:
            response.headers["WWW-Authenticate"] = BASIC_REALM
        response.headers["Connection"] = "close"  # the body, if any, is never read
        await response(scope, receive, send)

    def _refusal(self, header: bytes | None, docs: bool) -> str | None:
        """None when the header carries the token; else why not."""
        assert self.token is not None
        if header is None:
            return "missing API token"
        scheme, _, value = header.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            given = value.strip()
        elif scheme.lower() == b"basic" and docs:
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return "the Authorization header is not valid HTTP Basic"
        else:
            return "the Authorization header is not a bearer token"
        if hmac.compare_digest(given, self.token):  # constant time: no guessing the token byte by byte
            return None
        return "wrong API token"


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path == OPEN_PREFIXES[0].rstrip("/") or path.startswith(OPEN_PREFIXES)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
