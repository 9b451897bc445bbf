"""Helpers for the auth server's tests: a fake clock, keys made on the spot, and Check as the gateway calls it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import grpc
import pytest

from authsvc.keyfile import Budget, KeyFile, KeyRecord, Limits
from authsvc.keys import generate_key
from tollgate.auth.v1 import auth_pb2 as pb
from tollgate.auth.v1 import auth_pb2_grpc as pb_grpc

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TIMEOUT = 5.0


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def new_key(user: str = "alice", **fields: Any) -> tuple[str, KeyRecord]:
    """A fresh raw key and its record (created at START unless given)."""
    key = generate_key()
    fields.setdefault("created", START)
    return key.raw, KeyRecord(id=key.id, hash=key.hash, user=user, **fields)


def full_record_fields() -> dict[str, Any]:
    """A key with every field set."""
    return {
        "team": "ml",
        "models": ("gpt-4o*", "openai/**"),
        "deny": ("gpt-4o",),
        "limits": Limits(60, 100_000, 4, Budget(50.0, "month")),
        "labels": MappingProxyType({"env": "prod", "cost-centre": "cc-42"}),
        "expires": datetime(2027, 1, 1, tzinfo=UTC),
    }


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds (a reload happens on the server's own schedule), for up to TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110  # the server reloads on its own schedule: polling is the point
            await asyncio.sleep(0.01)


@dataclass
class Keys:
    """The raw keys in the test key file, by who holds them, and the file itself."""

    path: Path
    raw: dict[str, str]
    records: dict[str, KeyRecord]

    def file(self) -> KeyFile:
        return KeyFile(tuple(self.records.values()))


async def check(stub: pb_grpc.AuthServiceAsyncStub, api_key: str) -> pb.CheckResponse:
    """Check one key, as the gateway would."""
    request = pb.CheckRequest(
        api_key=api_key, model="gpt-4o-mini", operation=pb.OPERATION_CHAT, client_address="127.0.0.1", request_id="r1"
    )
    return await stub.Check(request, timeout=TIMEOUT)


async def denial(stub: pb_grpc.AuthServiceAsyncStub, api_key: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a Check that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await check(stub, api_key)
    return info.value.code(), info.value.details() or ""
