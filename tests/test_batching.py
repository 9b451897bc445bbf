"""`ready_batches`: items ready together come as one batch, an item that must be waited for starts the next one, and
closing or cancelling while an item is awaited reaches the iterator where it waits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from gateway.batching import ready_batches


class Source:
    """An async generator of items; `gates[i]`, when set, must be opened before item i comes."""

    def __init__(self, count: int, gates: dict[int, asyncio.Event] | None = None, fail_after: int | None = None):
        self.count = count
        self.gates = gates or {}
        self.fail_after = fail_after
        self.ended_by: BaseException | None = None
        self.cleaned = False

    async def items(self) -> AsyncGenerator[int, None]:
        try:
            for i in range(self.count):
                if i in self.gates:
                    await self.gates[i].wait()
                if i == self.fail_after:
                    raise ValueError(f"failed at {i}")
                yield i
        except BaseException as exc:
            self.ended_by = exc
            raise
        finally:
            await asyncio.sleep(0)  # a cleanup that awaits, as closing a connection does
            self.cleaned = True


async def _collect(source: AsyncGenerator[int, None], limit: int = 64) -> list[list[int]]:
    async with aclosing(source), aclosing(ready_batches(source, limit)) as batches:
        return [batch async for batch in batches]


async def test_items_ready_together_are_one_batch() -> None:
    assert await _collect(Source(5).items()) == [[0, 1, 2, 3, 4]]


async def test_a_batch_holds_at_most_limit_items() -> None:
    assert await _collect(Source(7).items(), limit=3) == [[0, 1, 2], [3, 4, 5], [6]]


async def test_an_empty_iterator_makes_no_batch() -> None:
    assert await _collect(Source(0).items()) == []


async def test_an_item_that_must_wait_starts_the_next_batch_and_the_batch_before_is_not_held_back() -> None:
    gate = asyncio.Event()
    source = Source(5, {3: gate})
    got: list[list[int]] = []
    async with aclosing(ready_batches(source.items())) as batches:
        got.append(await anext(batches))
        assert got == [[0, 1, 2]]  # handed on while item 3 is still awaited
        gate.set()
        got += [batch async for batch in batches]
    assert got == [[0, 1, 2], [3, 4]]
    assert source.ended_by is None and source.cleaned


async def test_a_failure_comes_after_the_batch_of_the_items_before_it() -> None:
    source = Source(5, fail_after=2)
    batches = ready_batches(source.items())
    assert await anext(batches) == [0, 1]
    with pytest.raises(ValueError, match="failed at 2"):
        await anext(batches)


async def test_closing_while_an_item_is_awaited_cancels_the_iterator_where_it_waits() -> None:
    gate = asyncio.Event()
    source = Source(5, {2: gate})
    items = source.items()
    batches = ready_batches(items)
    assert await anext(batches) == [0, 1]
    await batches.aclose()
    assert isinstance(source.ended_by, asyncio.CancelledError)
    assert source.cleaned  # its awaiting cleanup ran to the end
    with pytest.raises(StopAsyncIteration):
        await anext(items)  # finished: its owner's aclose is a no-op


async def test_cancelling_the_task_reaches_the_iterator_and_is_not_swallowed() -> None:
    gate = asyncio.Event()
    source = Source(5, {2: gate})
    started = asyncio.Event()

    async def consume() -> None:
        async with aclosing(ready_batches(source.items())) as batches:
            async for _ in batches:
                started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    await asyncio.sleep(0.01)  # the task now awaits item 2 inside the kept step
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(source.ended_by, asyncio.CancelledError)
    assert source.cleaned


async def test_items_that_arrive_apart_come_one_by_one() -> None:
    gates = {i: asyncio.Event() for i in range(1, 4)}
    source = Source(4, gates)
    got: list[list[int]] = []
    async with aclosing(ready_batches(source.items())) as batches:
        for i in range(1, 4):
            got.append(await anext(batches))
            gates[i].set()
        got += [batch async for batch in batches]
    assert got == [[0], [1], [2], [3]]


async def test_cancelling_the_task_while_it_writes_a_batch_cancels_the_waiting_step_too() -> None:
    gate = asyncio.Event()
    source = Source(5, {2: gate})
    writing = asyncio.Event()

    async def consume() -> None:
        async with aclosing(ready_batches(source.items())) as batches:
            async for _ in batches:
                writing.set()
                await asyncio.Event().wait()  # a write to a client that never drains, item 2 still awaited

    task = asyncio.create_task(consume())
    await writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(source.ended_by, asyncio.CancelledError)
    assert source.cleaned


class Chunk:
    """An item that can be watched for being freed."""


async def _chunks(count: int, fail: bool) -> AsyncGenerator[Chunk, None]:
    for _ in range(count):
        yield Chunk()
    if fail:
        raise ValueError("the upstream broke")


@pytest.mark.parametrize("fail", [False, True], ids=["ends", "fails"])
async def test_an_iterator_ended_within_a_batch_leaves_no_cycle_holding_that_batch(fail: bool) -> None:
    # A stream's end (or failure) found while its last chunks are batched: were it kept in a local of the batches'
    # frame, frame -> exception -> traceback -> frame would hold the last batch until a collection found the cycle.
    gc.disable()
    try:
        batches = ready_batches(_chunks(3, fail))
        last = await anext(batches)
        freed = weakref.ref(last[-1])
        del last
        with contextlib.suppress(StopAsyncIteration, ValueError):
            await anext(batches)
        del batches
        assert freed() is None
    finally:
        gc.enable()
