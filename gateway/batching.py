"""`ready_batches`: the items of an async iterator that are ready together, taken as one batch.

A stream whose chunks arrive together (one network read holding several events, a cached answer replayed) then
crosses each hop as one gRPC message and one socket write instead of one per chunk; a stream whose chunks arrive
apart is passed on chunk by chunk, as soon as each comes, never held back for company.

"Ready" means the iterator produces the item without suspending: its `__anext__` is stepped once by hand, in the
caller's task, and an item it returns at once joins the batch. A step that suspends is kept, the batch is handed on,
and the step is then finished under the caller's task exactly as if it had been awaited (what it waits on, and any
cancellation of the task, reach it as they would have). If the batches are closed while a step is kept, the step is
cancelled where it waits, as a task's cancellation would cancel it, so the iterator cleans up at that point.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from typing import Any, TypeVar, cast

T = TypeVar("T")

# A half-run `__anext__`: the awaitable's iterator, and what its first step yielded (the future it waits on).
_Step = tuple[Generator[Any, Any, Any], Any]

DEFAULT_LIMIT = 64  # items per batch at most: a batch is one message, and messages stay small


async def ready_batches(items: AsyncIterator[T], limit: int = DEFAULT_LIMIT) -> AsyncGenerator[list[T], None]:
    """Each batch is the next item (waited for) and every further item that is ready without waiting, in order.

    A failure of `items` after some ready items comes after their batch. Closing the batches does not close
    `items` (its owner does), but cancels the step that was waiting on it, if any.
    """
    pending: _Step | None = None
    try:
        while True:
            try:
                if pending is None:
                    batch = [await anext(items)]
                else:
                    step, pending = pending, None
                    batch = [await _finish(*step)]
            except StopAsyncIteration:
                return
            failure: BaseException | None = None
            while len(batch) < limit:
                awaiting = items.__anext__().__await__()
                try:
                    yielded = awaiting.send(None)
                except StopIteration as ready:
                    batch.append(ready.value)
                    continue
                except BaseException as exc:  # the end of `items`, or its failure: after this batch
                    failure = exc
                    break
                pending = (awaiting, yielded)
                break
            yield batch
            if failure is not None:
                try:
                    if not isinstance(failure, StopAsyncIteration):
                        raise failure
                    return
                finally:
                    # Dropped, as `except ... as` drops its name: this frame -> the exception -> its traceback -> this
                    # frame is a cycle that would hold the last batch until the garbage collector finds it.
                    failure = None
    finally:
        if pending is not None:
            await _cancel(*pending)


@types.coroutine
def _finish(step: Generator[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Run a half-run step to its end under the current task: what it yields goes to the task's event loop, what
    the task sends or throws (its cancellation) goes back into the step."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                yielded = step.throw(exc)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                yielded = step.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


async def _cancel(step: Generator[Any, Any, Any], yielded: Any) -> None:
    """Cancel a half-run step where it waits, as cancelling its task would, and let it finish cleaning up."""
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    if isinstance(yielded, asyncio.Future):
        yielded.cancel()
    try:
        yielded = step.throw(asyncio.CancelledError())
        await _finish(step, yielded)  # its cleanup awaits: finished under this task
    except (asyncio.CancelledError, StopIteration, StopAsyncIteration):
        # The cancellation we sent came back, as it should; one the task received meanwhile is passed on.
        if task is not None and task.cancelling() > cancelling:
            raise
