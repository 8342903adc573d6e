"""The submit fast lane (services/producer/fast_submit.py): it answers valid submits itself and hands
everything else to FastAPI unchanged. Over HTTP, tests/producer/test_jobs.py and test_service.py check
that every answer (202, 400, 404, 413, 415, 422, 503) is what it was; here, which layer gave it.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from services.producer.app import create_app
from services.producer.fast_submit import FastSubmit
from shared import keys
from shared.settings import Settings

Drive = Callable[..., Awaitable[tuple[int, dict[str, Any], list[bytes]]]]


def scope_for(app: Any, method: str = "POST", path: str = "/v1/jobs",
              content_type: bytes | None = b"application/json") -> dict[str, Any]:
    headers = [(b"host", b"test")] + ([(b"content-type", content_type)] if content_type else [])
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
            "client": ("127.0.0.1", 1), "server": ("test", 80), "app": app}


def run_lane(settings: Settings, test: Callable[[Drive, list[bytes]], Awaitable[None]]) -> None:
    """Run `test` with a FastSubmit whose inner app records the body it reads (and answers 299)."""
    app = create_app(settings)
    reached: list[bytes] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reached.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    lane = FastSubmit(inner)

    async def drive(chunks: list[bytes], **scope: Any) -> tuple[int, dict[str, Any], list[bytes]]:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await lane(scope_for(app, **scope), receive, send)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], json.loads(body), list(reached)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            await test(drive, reached)

    asyncio.run(main())


def test_a_valid_submit_is_answered_by_the_lane_and_enqueued(settings: Settings, served: str,
                                                                conn: redis.Redis) -> None:
    async def test(drive: Drive, reached: list[bytes]) -> None:
        status, body, reached_fastapi = await drive([b'{"task": "echo", ', b'"args": {"value": 1}}'])
        assert (status, reached_fastapi) == (202, [])
        assert body["status"] == "queued" and body["queue"] == "default" and body["duplicate"] is False
        assert conn.lrange(keys.queue("default"), 0, -1) == [body["id"].encode()]
        status, _, reached_fastapi = await drive([b'{"task": "echo"}'], content_type=b"application/json; charset=utf-8")
        assert (status, reached_fastapi) == (202, [])

    run_lane(settings, test)


def test_submit_errors_get_the_apps_own_handlers(settings: Settings, served: str, conn: redis.Redis) -> None:
    async def test(drive: Drive, reached: list[bytes]) -> None:
        status, body, _ = await drive([b'{"task": "ecko"}'])
        assert status == 404 and body["error"]["type"] == "UnknownTask" and "echo" in body["error"]["message"]
        status, body, _ = await drive([b'{"task": "sleep", "args": {"seconds": -1}}'])
        assert status == 422 and body["error"]["type"] == "InvalidArgs"
        assert [e["field"] for e in body["error"]["errors"]] == ["body.args.seconds"]
        assert reached == []  # answered by the lane, with the same envelope and field paths as the route's

    run_lane(settings, test)
    assert conn.llen(keys.queue("default")) == 0


def test_what_the_lane_does_not_take_reaches_fastapi_with_the_body_unchanged(settings: Settings, served: str,
                                                                             conn: redis.Redis) -> None:
    cases = [
        ([b'{"task": "echo", '], {}),  # not JSON
        ([b'{"task": ""}'], {}),  # JSON, but not a valid JobRequest
        ([b'[1, ', b'2]'], {}),  # not an object, in two chunks
        ([b'{"task": "echo"}'], {"content_type": b"text/plain"}),  # not sent as JSON: the lane reads nothing
        ([b'{"task": "echo"}'], {"content_type": None}),
        ([b'{"task": "echo"}'], {"path": "/v1/jobs/batch"}),
        ([b""], {"method": "GET"}),
    ]

    async def test(drive: Drive, reached: list[bytes]) -> None:
        for chunks, scope in cases:
            status, _, reached_fastapi = await drive(chunks, **scope)
            assert status == 299 and reached_fastapi[-1] == b"".join(chunks), (chunks, scope)

    run_lane(settings, test)
    assert conn.llen(keys.queue("default")) == 0


def test_the_server_process_freezes_its_start_up_objects_and_an_embedded_app_does_not(settings: Settings) -> None:
    async def start(freeze_gc: bool) -> int:
        app = create_app(settings, freeze_gc=freeze_gc)
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    try:
        assert asyncio.run(start(freeze_gc=False)) == 0
        assert asyncio.run(start(freeze_gc=True)) > 1000  # the app, its models, the imported modules
    finally:
        gc.unfreeze()
