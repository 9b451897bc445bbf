"""What every long-running tollgate process shares: its event loop, waiting for SIGINT or SIGTERM, and a hard
bound on how long stopping may take."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("tollgate")

# The cyclic garbage collector's youngest generation is collected once this many more tracked objects (dicts, lists,
# messages...) were made than freed since the last collection. CPython's 700 is reached within every few requests
# when fifty are in flight, though they leave almost no cyclic garbage behind (what they make is freed by reference
# counting): a collection about every 10 requests, a full one every 1,000, ≈ 40 µs of CPU a request in all.
_YOUNG_COLLECTION_THRESHOLD = 10_000


def catch_stop_signals() -> asyncio.Future[signal.Signals]:
    """Catch SIGINT and SIGTERM from now on; the returned future is the first of them to come.

    Call it before starting to serve: a signal that comes while the process is still starting is kept (the default
    action would end the process at once, exit -15 with no clean stop), and stops it as soon as it waits for it."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[signal.Signals] = loop.create_future()

    def stopped(sig: signal.Signals) -> None:
        if not stop.done():
            stop.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped, sig)
    return stop


async def until_stopped(stop: asyncio.Future[signal.Signals]) -> signal.Signals:
    """Return the signal that asks the process to stop (SIGINT or SIGTERM; `stop` from `catch_stop_signals`)."""
    received = await stop
    log.info("shutting down (%s)", received.name)
    return received


def exit_by(seconds: float) -> Callable[[], None]:
    """A last resort: end the process `seconds` from now, whatever it is doing (a blocked loop included); the
    returned function calls it off."""

    def overdue() -> None:
        log.error("shutdown took over %gs: exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, overdue)
    timer.daemon = True
    timer.start()
    return timer.cancel


def settle_collector() -> None:
    """Spare the garbage collector work that finds nothing: what is alive now (modules, classes, descriptors: most
    of the heap, for the whole life of the process) is never walked again, and the youngest generation is collected
    at `_YOUNG_COLLECTION_THRESHOLD` instead of CPython's 700. Cycles are still collected, only later."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_THRESHOLD, middle, oldest)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run `main` to completion on uvloop where it is installed, else on asyncio's own loop, with the collector
    settled (`settle_collector`) once everything the command imported is loaded."""
    try:
        import uvloop  # noqa: PLC0415  # optional: a faster event loop where it is installed

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    settle_collector()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]  # Runner.run accepts any awaitable coroutine
