"""The async client packs commands with hiredis in C: the bytes on the wire are redis-py's own."""

from __future__ import annotations

import pytest
import redis
from redis.connection import HiredisRespSerializer

from shared.async_client import _HiredisPacked


@pytest.mark.parametrize("args", [
    ("EVALSHA", "f" * 40, 2, "ferry:job:1", b"rq:queue:default", 1.5, 0.1, 1e20, -3, "héllo", b"\x00\xff"),
    ("SCRIPT LOAD", "return 1"),  # a two-word command is split, as redis-py does
    ("SET", "k", bytearray(b"v")),  # hiredis refuses a bytearray: the serializer converts it
    ("SET", "k", memoryview(b"v")),
])
def test_packed_commands_are_the_bytes_redis_py_would_send(args: tuple) -> None:
    assert b"".join(_HiredisPacked().pack_command(*args)) == b"".join(HiredisRespSerializer().pack(*args))


@pytest.mark.parametrize("bad", [True, None, [1]])
def test_a_value_redis_cannot_take_is_a_data_error(bad: object) -> None:
    with pytest.raises(redis.DataError):
        _HiredisPacked().pack_command("SET", "k", bad)
