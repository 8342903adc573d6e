"""Route dependencies: the app's clients, and the bearer scheme the OpenAPI docs show.

The token itself is checked by `services.producer.auth.TokenGate` before any route or body parsing.
They are `async def` on purpose: they never block, and a sync dependency would cost a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from shared.async_client import AsyncClient
from shared.client import Client
from shared.settings import Settings

bearer = HTTPBearer(auto_error=False, description="FERRY_API_TOKEN, when the producer sets one")


async def get_client(request: Request) -> Client:
    """The sync Client (objects, queues, nodes: routes that run in the thread pool, on its own connection pool)."""
    return request.app.state.client


async def get_async_client(request: Request) -> AsyncClient:
    """The AsyncClient (jobs and the catalog), whose bounded pool every such request shares for one round trip."""
    return request.app.state.aclient


def api_token(settings: Settings) -> bytes | None:
    """The token to expect; an empty FERRY_API_TOKEN counts as unset (compose files often pass one through empty)."""
    if settings.api_token is None:
        return None
    token = settings.api_token.get_secret_value()
    return token.encode() if token else None


ClientDep = Annotated[Client, Depends(get_client)]
AsyncClientDep = Annotated[AsyncClient, Depends(get_async_client)]
