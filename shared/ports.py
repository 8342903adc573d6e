"""Is a TCP port free to listen on? Asked before a server starts, so that a busy port is one line and exit 2.

uvicorn exits 3 when it cannot bind, which the CLI documents as "Redis unreachable": `ferry up` and
`ferry producer` check first and raise a ConfigError (a setting to change) instead.
"""

from __future__ import annotations

import socket

from shared.errors import ConfigError


def require_free(host: str, port: int, option: str = "--port") -> None:
    """ConfigError naming the address, the reason and the option to change when `host:port` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass {option} with a free port "
                "(or --host with an address of this machine)"
            ) from exc
