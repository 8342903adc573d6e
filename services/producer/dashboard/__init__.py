"""The dashboard: static HTML, JS and CSS served under /ui, packaged with Ferry (no CDN, no build step).

The page itself holds no data and is served without the token, like any login page; everything it shows
comes from the /v1 JSON routes, which need `Authorization: Bearer <FERRY_API_TOKEN>` when a token is
set. The page asks for the token once and keeps it in the tab's sessionStorage (gone when the tab
closes; never in a cookie, so other sites cannot make the browser send it). A strict
Content-Security-Policy keeps every request on the producer's own origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
     b"connect-src 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class _Secured:
    """Add SECURITY_HEADERS to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at /ui/ (and send /ui there)."""

    @app.get(PREFIX, include_in_schema=False)
    async def dashboard_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    app.mount(PREFIX, _Secured(StaticFiles(directory=STATIC, html=True)), name="dashboard")
