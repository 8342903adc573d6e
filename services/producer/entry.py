"""The producer service's entry point, mounted by the admin CLI as `ferry producer`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from shared.cli import handle_errors


@handle_errors
def producer(
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on [default: FERRY_API_HOST].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on [default: FERRY_API_PORT].")] = None,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    raise NotImplementedError("being built")
