"""A bounded, honest shutdown for `tollgate serve`, `engine` and `frontdoor`, on SIGTERM (or SIGINT).

1. At once: draining begins. `/readyz` answers 503, gRPC health says NOT_SERVING for every service, HTTP answers
   carry `Connection: close`.
2. For `server.drain_delay` (skipped on SIGINT, an operator at a terminal): the listeners stay open, so requests a
   load balancer still sends are served while it notices.
3. The listeners close (HTTP: idle connections too; gRPC: `server.stop`), and the requests in flight run on until
   `server.shutdown_grace` after the signal.
4. Then whatever still runs is cut (`Drain.cut`): a stream ends with an in-band error event and its end marker, an
   unanswered request gets a 503, a gRPC call ends UNAVAILABLE; each usage record says it was cut by a shutdown. A
   split front door first asks its engine to cut its calls (`RemoteEngine.cut_calls`): cancelled, they would be
   recorded as clients that went away.
5. The caller closes the engine (usage records left in memory stay in the spool) and the process exits; a watchdog
   ends it regardless at grace + 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.config import ServerConfig
from gateway.drain import Drain
from gateway.grpc_server import GrpcServer
from gateway.process import exit_by, until_stopped

log = logging.getLogger("tollgate")

CUT_ALLOWANCE = 0.3  # after the cut, how long requests get to write their last event and record their usage
# A split front door's engine cuts its calls first (they end with the engine's in-band error): this long for that.
# The front door records no usage, so this fits in the slack where the usage reporter's last flush would go.
ENGINE_CUT_ALLOWANCE = 0.2
# The process exits by shutdown_grace + this, whatever happens. What runs after the grace fits in it: the cut's
# allowance (0.3 s), closing HTTP connections (0.25 s), the usage reporter's last flush (0.3 s with write-ahead).
EXIT_SLACK = 1.0


class Listener(Protocol):
    """An HTTP server that can stop accepting and later close (`gateway.frontdoor.server.HttpServer`)."""

    async def stop_listening(self) -> None:
        """Accept no more connections; requests in flight go on."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


async def serve_until_stopped(  # noqa: PLR0913 (the process's parts, each optional but the signal and drain)
    config: ServerConfig,
    stop: asyncio.Future[signal.Signals],
    drain: Drain,
    *,
    http: Listener | None = None,
    grpc_server: GrpcServer | None = None,
    clock: Callable[[], float] = time.monotonic,
    engine_cut: Callable[[], Awaitable[int]] | None = None,
) -> Callable[[], None]:
    """Serve until SIGTERM or SIGINT (`stop`, from `gateway.process.catch_stop_signals` before starting), then
    drain as the module docstring says; returns the function that calls off the exit watchdog (call it once the
    process has closed everything). A split front door passes `engine_cut` (`RemoteEngine.cut_calls`): at the
    deadline its engine cuts its calls first, as a shutdown."""
    received = await until_stopped(stop)
    deadline = clock() + config.shutdown_grace
    cancel_watchdog = exit_by(config.shutdown_grace + EXIT_SLACK)
    drain.begin()
    if grpc_server is not None:
        await grpc_server.drain()
    delay = 0.0 if received == signal.SIGINT else min(config.drain_delay, config.shutdown_grace)
    log.info(
        "draining: not ready; listeners close in %gs; requests in flight get until %gs after the signal",
        delay,
        config.shutdown_grace,
    )
    await asyncio.sleep(delay)
    if http is not None:
        await http.stop_listening()
    stopping = None
    drain.refuse_new()
    if grpc_server is not None:
        # grpc aborts what is left at its own deadline: after ours, so the calls end with our status first.
        grace = max(0.0, deadline - clock()) + CUT_ALLOWANCE
        stopping = asyncio.create_task(grpc_server.server.stop(grace))
    await _finish_in_flight(drain, deadline, clock, engine_cut)
    if http is not None:
        await http.close()
    if stopping is not None:
        await stopping
    return cancel_watchdog


async def _finish_in_flight(
    drain: Drain, deadline: float, clock: Callable[[], float], engine_cut: Callable[[], Awaitable[int]] | None
) -> None:
    if await drain.wait_idle(deadline):
        log.info("drained: every request finished within the grace")
        return
    if engine_cut is not None:
        # A split front door: its engine cuts our calls (recording them as shutdown cuts) and they end here with
        # the engine's in-band error; what is still running after ENGINE_CUT_ALLOWANCE is cut below.
        until = clock() + ENGINE_CUT_ALLOWANCE
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ENGINE_CUT_ALLOWANCE):
                log.info("shutdown grace is over: the engine cut %d calls", await engine_cut())
        if await drain.wait_idle(until):
            return
    cut = drain.cut()
    log.warning("shutdown grace is over: %d requests cut (streams end with an in-band error)", cut)
    if not await drain.wait_idle(clock() + CUT_ALLOWANCE):
        log.warning("%d requests still running after the cut; closing their connections", drain.in_flight)
