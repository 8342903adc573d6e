"""Route dependencies: the app's settings and Client, and the bearer-token check.

They are `async def` on purpose: they never block, and a sync dependency would cost a thread hop per request.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.client import Client
from shared.errors import Unauthorized
from shared.settings import Settings

bearer = HTTPBearer(auto_error=False, description="FERRY_API_TOKEN, when the producer sets one")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_client(request: Request) -> Client:
    """The app's one Client (built at startup), whose Redis connection pool every request shares."""
    return request.app.state.client


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Let the request through when no token is configured, or when it carries the right one."""
    expected: bytes | None = request.app.state.api_token
    if expected is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, expected):  # constant time: no guessing the token byte by byte
        reason = "wrong API token" if credentials else "missing API token"
        if credentials is None and "authorization" in request.headers:
            reason = "the Authorization header is not a bearer token"
        raise Unauthorized(f"{reason}: send the header `Authorization: Bearer <FERRY_API_TOKEN>`")


def api_token(settings: Settings) -> bytes | None:
    """The token to expect; an empty FERRY_API_TOKEN counts as unset (compose files often pass one through empty)."""
    if settings.api_token is None:
        return None
    token = settings.api_token.get_secret_value()
    return token.encode() if token else None


ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
