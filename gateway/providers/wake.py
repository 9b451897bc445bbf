"""On-demand boot: a provider wrapper for a backend with `wake:`, so the engine does not change.

A call that finds the backend asleep (its connection refused, or put to sleep by `idle`) starts the wake action once
(single flight per backend; with Redis, one wake per fleet: a lock with the timeout as its TTL, and the others only
poll), then either

- **holds** the call until `ready_path` answers 200 and sends it (streams too): what happens when this is the last
  attempt of the request's plan; or
- **defers**: raises a retryable 503 (`backend_waking`, with Retry-After, which also rests the target) so the engine
  tries the plan's next target, while the wake goes on in the background. The engine says which, per attempt,
  through the `MORE_ATTEMPTS` context variable (False, the default, holds).

A wake that fails (the action's error, or `timeout` passing) answers every held call 503 with Retry-After, and is
logged with the action's output; more than `max_waiting` held calls are refused at once. A caller that leaves while
held is dropped before any upstream call. With `idle`, a backend unused for `after` is put back to sleep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import aiohttp

from gateway.config import BackendConfig, GatewayConfig
from gateway.config.routing_wake import WakeAction, WakeConfig
from gateway.errors import ServiceUnavailableError, UpstreamConnectionError
from gateway.providers.answer import ConnectFailed
from gateway.providers.base import Continuer, Provider
from gateway.providers.wake_actions import ActionFailed, CommandRun, is_ready, ready_url, run_action
from tollgate.gateway.v1 import gateway_pb2 as pb

T = TypeVar("T")
log = logging.getLogger("tollgate.wake")

# Set by the engine before each attempt: whether the request's plan has another attempt after this one.
MORE_ATTEMPTS: ContextVar[bool] = ContextVar("tollgate_more_attempts", default=False)

FAILED_RETRY_AFTER = 10.0  # what a held call that the wake failed is told to wait (and the target rests)
DEFER_REST = 1.0  # a deferred or refused attempt's Retry-After: the target rests this long, then is tried again
_LOCK_PREFIX = "tollgate:wake:"


class WakeObserver(Protocol):
    """Where wakes are counted (telemetry's metrics)."""

    def woke(self, backend: str, result: str, seconds: float) -> None:
        """A wake ended: `result` is ok, failed, timeout or elsewhere (another replica woke it)."""
        ...

    def holding(self, backend: str, change: int) -> None:
        """Held calls of `backend` went up or down by `change`."""
        ...


class FleetLock(Protocol):
    """One wake per fleet: whoever takes the lock runs the action; the others only wait for readiness."""

    async def take(self, backend: str, ttl: float) -> bool:
        """Whether this replica took the lock (it expires after `ttl` seconds)."""
        ...

    async def release(self, backend: str) -> None:
        """Give the lock up (the wake ended)."""
        ...

    async def close(self) -> None:
        """Release the connection (idempotent: every waking backend shares the lock)."""
        ...


class RedisFleetLock:
    """`SET key NX PX`: the lock lives in the shared Redis; when Redis is down every replica wakes on its own."""

    def __init__(self, url: str) -> None:
        from gateway.redis_client import connect  # noqa: PLC0415 - only a gateway with wake backends and Redis needs it

        # The one Redis client factory: a single Redis or a Redis Cluster, as the limiter and the caches.
        self._redis = connect(url, timeout=1.0, max_connections=4)
        self._token = os.urandom(8).hex()

    async def take(self, backend: str, ttl: float) -> bool:
        """Take the backend's lock if free."""
        try:
            return bool(await self._redis.set(_LOCK_PREFIX + backend, self._token, nx=True, px=int(ttl * 1000)))
        except Exception as exc:  # Redis down: waking twice beats not waking
            log.warning("wake lock: Redis failed, waking without it: %r", exc)
            return True

    async def release(self, backend: str) -> None:
        """Delete the lock if it is still ours."""
        key = _LOCK_PREFIX + backend
        try:
            if await self._redis.get(key) == self._token.encode():
                await self._redis.delete(key)
        except Exception as exc:
            log.warning("wake lock: could not release %s: %r", key, exc)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def _asleep(exc: UpstreamConnectionError) -> bool:
    """A refused (or unreachable) connection: the backend is not there at all, as opposed to one that broke off."""
    return isinstance(exc.__cause__, ConnectFailed)


class Waker:
    """One backend's wake state: single flight, the held calls, idle tracking."""

    def __init__(
        self,
        backend: BackendConfig,
        wake: WakeConfig,
        lock: FleetLock | None = None,
        observer: WakeObserver | None = None,
    ) -> None:
        self.name = backend.name
        self.config = wake
        self.lock = lock
        self.observer = observer
        self.held = 0
        self.asleep = False  # known asleep (put to sleep by idle, or refused since): no need to try the connection
        self.wakes = 0  # actions this replica ran, for tests and logs
        self._url = ready_url(backend.base_url, wake.ready_path)
        self._flight: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._in_use = 0
        self._last_used = time.monotonic()
        self._idler: asyncio.Task[None] | None = None
        self._commands: list[CommandRun] = []

    @property
    def waking(self) -> bool:
        """Whether a wake is under way."""
        return self._flight is not None and not self._flight.done()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=min(self.config.timeout, 30.0))
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def start(self) -> asyncio.Task[None]:
        """The wake under way, started if there is none (single flight)."""
        if self._flight is None or self._flight.done():
            self.asleep = True
            self._flight = asyncio.create_task(self._wake(), name=f"wake {self.name}")
            self._flight.add_done_callback(_retrieved)  # a deferred wake may fail with nobody waiting: logged already
        return self._flight

    async def hold(self) -> None:
        """Wait for the wake; raises the 503 a refused or failed wait means. Cancelled: simply gone."""
        if self.held >= self.config.max_waiting:
            raise ServiceUnavailableError(
                f"backend '{self.name}' is starting and {self.held} requests already wait for it",
                code="backend_waking",
                retry_after=DEFER_REST,  # the engine rests the target this long: the held ones go on
            )
        flight = self.start()
        self._count_held(1)
        try:
            await asyncio.shield(flight)
        except ActionFailed as exc:
            raise ServiceUnavailableError(
                f"backend '{self.name}' could not be started: {exc}",
                code="backend_wake_failed",
                retry_after=FAILED_RETRY_AFTER,
            ) from None
        finally:
            self._count_held(-1)

    def defer(self) -> ServiceUnavailableError:
        """Start the wake in the background; the error that sends this attempt on to the plan's next target."""
        self.start()
        # A short rest: long enough to send the next requests elsewhere, short enough to use the backend soon
        # after it is up.
        return ServiceUnavailableError(
            f"backend '{self.name}' is starting", code="backend_waking", retry_after=DEFER_REST
        )

    def _count_held(self, change: int) -> None:
        self.held += change
        if self.observer is not None:
            self.observer.holding(self.name, change)

    async def _wake(self) -> None:
        started, result = time.monotonic(), "failed"
        try:
            async with asyncio.timeout(self.config.timeout):
                result = await self._wake_once()
        except TimeoutError:
            result = "timeout"
            log.error("backend %r did not become ready within %ss", self.name, self.config.timeout)
            for run in self._commands:
                run.stop()
            raise ActionFailed(f"not ready within {self.config.timeout:g}s") from None
        except ActionFailed as exc:
            log.error("backend %r: the wake action failed: %s; its output: %s", self.name, exc, exc.output or "-")
            raise
        finally:
            seconds = time.monotonic() - started
            if self.lock is not None and result != "elsewhere":
                await self.lock.release(self.name)
            if self.observer is not None:
                self.observer.woke(self.name, result, seconds)
        self.asleep = False
        log.info("backend %r is awake after %.1fs (%s)", self.name, seconds, result)

    async def _wake_once(self) -> str:
        """Run the action (unless another replica holds the fleet's lock), then poll until ready."""
        ours = self.lock is None or await self.lock.take(self.name, self.config.timeout)
        run: CommandRun | None = None
        if ours:
            self.wakes += 1
            log.info("waking backend %r (%s)", self.name, self.config.action.kind)
            started = await run_action(self._http(), self.config.action)
            if isinstance(started, CommandRun):
                run = started
                self._commands = [*(r for r in self._commands if r.process.returncode is None), run]
        while not await is_ready(self._http(), self._url):
            if run is not None:
                run.check()
            await asyncio.sleep(self.config.poll_interval)
        return "ok" if ours else "elsewhere"

    def used(self, change: int) -> None:
        """A call started (+1) or ended (-1): for idle tracking."""
        self._in_use += change
        self._last_used = time.monotonic()
        if self.config.idle is not None and self._idler is None:
            self._idler = asyncio.create_task(self._watch_idle(self.config.idle.after, self.config.idle.action))

    async def _watch_idle(self, after: float, action: WakeAction) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(after / 4, 30.0)))
            idle = time.monotonic() - self._last_used
            if self._in_use or self.asleep or self.waking or idle < after:
                continue
            log.info("backend %r idle for %.0fs: putting it to sleep", self.name, idle)
            try:
                started = await run_action(self._http(), action)
                if isinstance(started, CommandRun):
                    await started.finished()
            except ActionFailed as exc:
                log.error("backend %r: the idle action failed: %s; its output: %s", self.name, exc, exc.output)
                continue
            self.asleep = True

    async def close(self) -> None:
        """Stop the idle watch and any wake; commands started are left running (they are the backend)."""
        for task in (self._idler, self._flight):
            if task is not None and not task.done():
                task.cancel()
        for run in self._commands:
            run.detach()
        if self._session is not None:
            await self._session.close()
        if self.lock is not None:
            await self.lock.close()


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class WakingProvider:
    """A provider whose backend may sleep: calls hold (or defer) while it wakes."""

    def __init__(self, inner: Provider, waker: Waker) -> None:
        self.inner = inner
        self.backend: BackendConfig = inner.backend
        self.waker = waker

    async def _ready(self) -> None:
        """Before a call: if the backend is known asleep, hold for it, or defer to the next target."""
        if self.waker.asleep:
            if MORE_ATTEMPTS.get():
                raise self.waker.defer()
            await self.waker.hold()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        await self._ready()
        self.waker.used(1)
        try:
            try:
                return await call()
            except UpstreamConnectionError as exc:
                if not _asleep(exc):
                    raise
                if MORE_ATTEMPTS.get():
                    raise self.waker.defer() from exc
                await self.waker.hold()
            return await call()
        finally:
            self.waker.used(-1)

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """A completion, once the backend is awake."""
        return await self._call(lambda: self.inner.complete(model, params))

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Embeddings, once the backend is awake."""
        return await self._call(lambda: self.inner.embed(model, request))

    def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The inner stream, opened once the backend is awake (held like any call until its first chunk)."""
        return self._held_stream(lambda: self.inner.stream(model, params))

    def continue_stream(
        self, model: str, params: pb.ChatCompletionParams, prefix: str
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The inner provider's continuation, opened once the backend is awake (asked only of one that can)."""
        inner = self.inner
        if not isinstance(inner, Continuer):
            raise TypeError(f"backend '{self.backend.name}' cannot continue an answer")
        return self._held_stream(lambda: inner.continue_stream(model, params, prefix))

    async def close(self) -> None:
        """Stop waking, and close the inner provider."""
        await self.waker.close()
        await self.inner.close()

    async def _probe(self) -> None:
        """An active health check: a backend that is asleep (refused) is healthy, since a request wakes it; one that
        answers is probed as usual."""
        if self.waker.asleep:
            return
        try:
            await self.inner.probe()  # type: ignore[attr-defined]  # only offered when the inner provider has it
        except UpstreamConnectionError as exc:
            if not _asleep(exc):
                raise
            self.waker.asleep = True

    def __getattr__(self, name: str) -> Any:
        # Token counting and the like: the inner provider's own; a probe only if it has one, wrapped; the endpoints
        # beside chat (gateway.providers.capabilities) held like `complete` and `stream`.
        found = getattr(self.inner, name)
        if name == "probe":
            return self._probe
        if name in _HELD_CALLS:
            return lambda *args: self._call(lambda: found(*args))
        if name in _HELD_STREAMS:
            return lambda *args: self._held_stream(lambda: found(*args))
        return found

    async def _held_stream(self, open_stream: Callable[[], AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
        """A stream of the inner provider's, opened once the backend is awake (held like any call until its first
        piece); the backend counts as used until the stream ends."""
        first, rest = await self._call(lambda: _first(open_stream()))
        self.waker.used(1)
        try:
            async with aclosing(rest):
                if first is not None:
                    yield first
                async for piece in rest:
                    yield piece
        finally:
            self.waker.used(-1)


Chunks = AsyncGenerator[pb.StreamChatCompletionResponse, None]
# The endpoints beside chat (gateway.providers.capabilities) that wait for a sleeping backend like chat does.
_HELD_CALLS = frozenset(("complete_text", "generate_images", "transcribe", "moderate", "rerank"))
_HELD_STREAMS = frozenset(("stream_text", "speak"))


async def _first(chunks: AsyncGenerator[T, None]) -> tuple[T | None, AsyncGenerator[T, None]]:
    """Open the stream (its first chunk), closing it on failure; an empty stream gives None first."""
    try:
        return await anext(chunks), chunks
    except StopAsyncIteration:
        return None, chunks
    except BaseException:
        await chunks.aclose()
        raise


def with_wake(provider: Provider, lock: FleetLock | None = None) -> Provider:
    """`provider`, wrapped when its backend has `wake:`."""
    wake = provider.backend.wake
    if wake is None:
        return provider
    return WakingProvider(provider, Waker(provider.backend, wake, lock))


def fleet_lock(config: GatewayConfig) -> FleetLock | None:
    """The fleet's wake lock when some backend wakes and the config names a Redis; else None (per replica)."""
    if config.redis_url is None or not any(b.wake is not None for b in config.backends):
        return None
    return RedisFleetLock(config.redis_url)


def observe_wakes(providers: Mapping[str, Provider], observer: WakeObserver) -> None:
    """Count every waking backend's wakes and held calls with `observer`."""
    for provider in providers.values():
        if isinstance(provider, WakingProvider):
            provider.waker.observer = observer
