"""`Drain`: what a stopping process knows about its requests, shared by its HTTP and gRPC servers.

On SIGTERM the process begins draining (readiness and gRPC health say NOT_SERVING, HTTP answers carry
`Connection: close`), keeps its listeners open for `server.drain_delay`, then closes them and waits for the requests
in flight until `server.shutdown_grace` after the signal. Whatever is still running then is cut: each tracked task
is marked as cut and cancelled, which the front door turns into an in-band error event (or a 503) and the engine's
metering into a shutdown status, never a client cancel. A split front door's cuts reach its engine the same way:
it names the calls it cuts (`CALL_KEY`, GatewayService.CutCalls) and the engine's `Drain.cut_calls` cuts them as its
own. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token

from gateway.errors import ShuttingDownError

SHUTDOWN_CUT = "tollgate: shutdown grace is over"
# The metadata that names a gRPC call for `Drain.cut_calls`: a split front door sends a random token with each call,
# and names the calls it cuts at its own shutdown deadline (GatewayService.CutCalls), so that the engine records
# them as cut by a shutdown rather than as client cancels.
CALL_KEY = "tollgate-call"


class _Cut:
    """Whether the request of the task that set it was cut by a shutdown (one per tracked request)."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


# Set by `Drain.track` in the request's own task, so that the engine's metering in that task can tell a shutdown
# cut from a client going away, however the cut reached it: the cancellation itself, or a generator closed after.
_REQUEST_CUT: ContextVar[_Cut | None] = ContextVar("tollgate_request_cut", default=None)


def cut_by_shutdown(exc: BaseException | None) -> bool:
    """Whether `exc` ended a request that a `Drain` cut when the shutdown grace was over."""
    if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return False
    cell = _REQUEST_CUT.get()
    return cell is not None and cell.cut


def as_shutdown(exc: BaseException | None) -> BaseException | None:
    """`exc`, with a shutdown cut turned into the `ShuttingDownError` it stands for (for usage records)."""
    return ShuttingDownError() if cut_by_shutdown(exc) else exc


def absorb_cut(exc: asyncio.CancelledError) -> bool:
    """If `exc` is a shutdown cut of the current task, take it back (so the task can still answer) and say so."""
    if not cut_by_shutdown(exc):
        return False
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
    return True


class _Tracked:
    """`Drain.track`'s block (a class rather than a generator: it wraps every request)."""

    __slots__ = ("_drain", "_name", "_task", "_token")

    def __init__(self, drain: Drain, name: str) -> None:
        self._drain, self._name = drain, name
        self._task: asyncio.Task[object] | None = None
        self._token: Token[_Cut | None] | None = None

    def __enter__(self) -> None:
        task = self._task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cut
            return
        self._token = _REQUEST_CUT.set(self._drain._remember(task, self._name))

    def __exit__(self, *exc: object) -> None:
        if self._task is None:
            return
        if self._token is not None:
            with contextlib.suppress(ValueError):  # reset in another context (a generator finalized elsewhere)
                _REQUEST_CUT.reset(self._token)
        self._drain._forget(self._task, self._name)


class Drain:
    """The requests a process is serving, and whether it is stopping."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: dict[asyncio.Task[object], _Cut] = {}
        self._named: dict[str, asyncio.Task[object]] = {}  # requests by the name their caller gave them
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False
        self.refusing = False  # the listeners have closed: new calls are refused (`refuse_new`)
        self._on_refusal: list[Callable[[], None]] = []
        self.cut_count = 0  # requests cut at the deadline

    @property
    def in_flight(self) -> int:
        """Requests running now."""
        return len(self._tasks)

    def begin(self) -> None:
        """Start draining: readiness fails, health is NOT_SERVING, connections close after their answer."""
        self.draining = True

    def refuse_new(self) -> None:
        """The listeners close: new calls are refused from now on, also on streams that carry many (an exchange
        is told through `on_refusal`); those in flight go on."""
        self.refusing = True
        for callback in self._on_refusal:
            callback()

    def on_refusal(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when new calls start being refused; returns the function that forgets it."""
        self._on_refusal.append(callback)
        return lambda: self._on_refusal.remove(callback)

    def track(self, name: str = "") -> _Tracked:
        """Count the current task as a request in flight for as long as the `with` block runs; `name` (its caller's
        `CALL_KEY`) lets `cut_calls` find it."""
        return _Tracked(self, name)

    def _remember(self, task: asyncio.Task[object], name: str) -> _Cut:
        """`task` is a request in flight (named `name`, when it has one): the cell its cut is told through."""
        cell = self._tasks[task] = _Cut()
        if name:
            self._named[name] = task
        self._idle.clear()
        return cell

    def _forget(self, task: asyncio.Task[object], name: str) -> None:
        self._tasks.pop(task, None)
        if name:
            self._named.pop(name, None)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self, until: float) -> bool:
        """Wait until no request is in flight, or until the clock reads `until`; whether it happened."""
        remaining = until - self._clock()
        if remaining <= 0:
            return not self._tasks
        try:
            await asyncio.wait_for(self._idle.wait(), remaining)
        except TimeoutError:
            return False
        return True

    def cut(self) -> int:
        """Cancel every request still in flight, marked as cut by the shutdown; how many there were."""
        return self._cut(list(self._tasks))

    def cut_calls(self, names: Iterable[str]) -> int:
        """Cancel the named requests, marked as cut by a shutdown (their caller's); how many were still running."""
        return self._cut([task for name in names if (task := self._named.get(name)) is not None])

    def _cut(self, tasks: list[asyncio.Task[object]]) -> int:
        cut = 0
        for task in tasks:
            cell = self._tasks.get(task)
            if cell is not None and not task.done():
                cell.cut = True
                task.cancel(SHUTDOWN_CUT)
                cut += 1
        self.cut_count += cut
        return cut
