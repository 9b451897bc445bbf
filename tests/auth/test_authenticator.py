"""The gateway's auth client against a real gRPC AuthService on loopback: caching, denials, failing closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.auth.authenticator import Authenticator
from gateway.call import CallContext
from gateway.config import AuthConfig, Secret
from gateway.errors import AuthenticationError, PermissionDeniedError, RateLimitError, ServiceUnavailableError
from gateway.grpc_server import GrpcServer, start_grpc_server
from tollgate.auth.v1 import auth_pb2, auth_pb2_grpc

SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
CHAT = auth_pb2.OPERATION_CHAT


@dataclass
class ScriptedAuth(auth_pb2_grpc.AuthServiceServicer):
    """An auth server whose answer each test chooses; it records every request it sees."""

    answer: Callable[[auth_pb2.CheckRequest], auth_pb2.CheckResponse | tuple[grpc.StatusCode, str]] = lambda request: (
        auth_pb2.CheckResponse(key_id="k1", user="alice")
    )
    delay: float = 0.0
    seen: list[auth_pb2.CheckRequest] = field(default_factory=list)

    async def Check(  # the gRPC method name is fixed by the proto
        self, request: auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> auth_pb2.CheckResponse:
        self.seen.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answer(request)
        if isinstance(answer, tuple):
            await context.abort(answer[0], answer[1], (("retry-after", "7"),))
        assert isinstance(answer, auth_pb2.CheckResponse)
        return answer


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def auth_server() -> AsyncIterator[tuple[ScriptedAuth, GrpcServer]]:
    servicer = ScriptedAuth()
    server = await start_grpc_server(
        "127.0.0.1:0", [(SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s))]
    )
    yield servicer, server
    await server.stop(0)


@pytest.fixture
async def make_auth(
    auth_server: tuple[ScriptedAuth, GrpcServer],
) -> AsyncIterator[Callable[..., Authenticator]]:
    made: list[Authenticator] = []

    def make(clock: Clock | None = None, **overrides: object) -> Authenticator:
        config = AuthConfig(server=f"127.0.0.1:{auth_server[1].port}", **overrides)  # type: ignore[arg-type]
        auth = Authenticator(config, clock=clock or Clock())
        made.append(auth)
        return auth

    yield make
    for auth in made:
        await auth.close()


def ctx(key: str | None = "tgk_k1_secret", **headers: str) -> CallContext:
    return CallContext(request_id="req_1", api_key=Secret(key) if key else None, peer="10.0.0.7", headers=headers)


async def test_an_allowed_key_becomes_a_principal_and_the_server_sees_the_request(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    auth = make_auth(headers=("user-agent", "x-team"))
    principal = await auth.authenticate(
        ctx(**{"user-agent": "openai-python", "x-team": "ml", "cookie": "no"}), "gpt-4o", CHAT
    )
    assert (principal.key_id, principal.user) == ("k1", "alice")
    (seen,) = servicer.seen
    assert seen.api_key == "tgk_k1_secret"
    assert (seen.model, seen.operation, seen.client_address, seen.request_id) == ("gpt-4o", CHAT, "10.0.0.7", "req_1")
    assert dict(seen.headers) == {"user-agent": "openai-python", "x-team": "ml"}  # only the configured headers


async def test_one_call_per_key_per_ttl(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    clock = Clock()
    auth = make_auth(clock, cache_ttl=30.0)
    for model in ("a", "b", "c"):
        await auth.authenticate(ctx(), model, CHAT)
    await auth.authenticate(ctx("tgk_k2_other"), "a", CHAT)
    assert len(servicer.seen) == 2  # one per key
    clock.now += 29.9
    await auth.authenticate(ctx(), "a", CHAT)
    assert len(servicer.seen) == 2
    clock.now += 0.2
    await auth.authenticate(ctx(), "a", CHAT)
    assert len(servicer.seen) == 3  # the decision expired


async def test_concurrent_requests_with_one_uncached_key_share_one_call(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    servicer.delay = 0.05
    auth = make_auth()
    principals = await asyncio.gather(*(auth.authenticate(ctx(), "m", CHAT) for _ in range(50)))
    assert {p.key_id for p in principals} == {"k1"}
    assert len(servicer.seen) == 1
    assert auth.calls == 1


async def test_a_caller_going_away_does_not_cancel_the_shared_decision(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    servicer.delay = 0.1
    auth = make_auth()
    first = asyncio.ensure_future(auth.authenticate(ctx(), "m", CHAT))
    second = asyncio.ensure_future(auth.authenticate(ctx(), "m", CHAT))
    await asyncio.sleep(0.02)
    first.cancel()
    assert (await second).key_id == "k1"
    assert len(servicer.seen) == 1


async def test_the_server_ttl_wins_and_the_key_expiry_caps_it(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    expires = Timestamp()
    expires.FromSeconds(int(time.time()) + 5)
    servicer.answer = lambda request: auth_pb2.CheckResponse(
        key_id="k1", cache_ttl=Duration(seconds=300), expires_at=expires
    )
    clock = Clock()
    auth = make_auth(clock, cache_ttl=1.0)
    await auth.authenticate(ctx(), "m", CHAT)
    clock.now += 3
    await auth.authenticate(ctx(), "m", CHAT)
    assert len(servicer.seen) == 1  # past our 1 s default: the server's TTL applies
    clock.now += 3
    await auth.authenticate(ctx(), "m", CHAT)
    assert len(servicer.seen) == 2  # but never past the key's expiry


@pytest.mark.parametrize(
    ("status", "message", "error", "http", "cached"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "Invalid API key", AuthenticationError, 401, True),
        (grpc.StatusCode.PERMISSION_DENIED, "Key disabled by admin", PermissionDeniedError, 403, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Monthly budget spent", RateLimitError, 429, False),
        (grpc.StatusCode.UNAVAILABLE, "db down: 10.1.2.3:5432", ServiceUnavailableError, 503, False),
        (grpc.StatusCode.INTERNAL, "Traceback...", ServiceUnavailableError, 503, False),
    ],
)
async def test_denials_map_to_http_statuses(
    auth_server: tuple[ScriptedAuth, GrpcServer],
    make_auth: Callable[..., Authenticator],
    status: grpc.StatusCode,
    message: str,
    error: type[Exception],
    http: int,
    cached: bool,
) -> None:
    servicer, _ = auth_server
    servicer.answer = lambda request: (status, message)
    clock = Clock()
    auth = make_auth(clock, negative_ttl=5.0)
    for _ in range(3):
        with pytest.raises(error) as caught:
            await auth.authenticate(ctx(), "m", CHAT)
        assert caught.value.http_status == http  # type: ignore[attr-defined]
        if http == 503:
            assert message not in str(caught.value)  # the server's or grpc's text stays in our log
        else:
            assert str(caught.value) == message
        if http == 429:
            assert caught.value.retry_after == 7  # type: ignore[attr-defined]
    assert len(servicer.seen) == (1 if cached else 3)
    clock.now += 5.1
    with pytest.raises(error):
        await auth.authenticate(ctx(), "m", CHAT)
    assert len(servicer.seen) == (2 if cached else 4)  # denials are cached only briefly


async def test_no_key_is_a_401_without_asking_the_server(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    with pytest.raises(AuthenticationError, match="Missing API key"):
        await make_auth().authenticate(ctx(None), "m", CHAT)
    assert servicer.seen == []


async def test_a_slow_server_fails_closed_within_the_deadline(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    servicer.delay = 2.0
    auth = make_auth(timeout=0.1)
    started = time.perf_counter()
    with pytest.raises(ServiceUnavailableError, match="did not answer in time"):
        await auth.authenticate(ctx(), "m", CHAT)
    assert time.perf_counter() - started < 1.0


async def test_a_stopped_server_fails_closed_and_recovery_is_picked_up(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, server = auth_server
    auth = make_auth(timeout=0.5)
    port = server.port
    await server.stop(0)
    with pytest.raises(ServiceUnavailableError, match="unavailable") as caught:
        await auth.authenticate(ctx(), "m", CHAT)
    assert caught.value.http_status == 503
    restarted = await start_grpc_server(
        f"127.0.0.1:{port}", [(SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s))]
    )
    try:
        for _ in range(50):  # the channel reconnects with its own backoff
            try:
                principal = await auth.authenticate(ctx(), "m", CHAT)
                break
            except ServiceUnavailableError:
                await asyncio.sleep(0.1)
        assert principal.key_id == "k1"
    finally:
        await restarted.stop(0)


async def test_the_cache_is_bounded(
    auth_server: tuple[ScriptedAuth, GrpcServer], make_auth: Callable[..., Authenticator]
) -> None:
    servicer, _ = auth_server
    auth = make_auth(cache_size=2)
    for key in ("tgk_a_1", "tgk_b_1", "tgk_c_1", "tgk_a_1"):
        await auth.authenticate(ctx(key), "m", CHAT)
    assert len(servicer.seen) == 4  # a was evicted by c
