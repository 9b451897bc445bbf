"""`Sweep`: deadlines checked on one timer, which runs only while something is watched."""

from __future__ import annotations

import asyncio

from gateway.sweep import Sweep, tick_for


class Deadline:
    def __init__(self, due: float) -> None:
        self.due = due
        self.expired_at: float | None = None
        self.checks = 0

    def check(self, now: float) -> bool:
        self.checks += 1
        if now < self.due:
            return True
        self.expired_at = now
        return False


class Broken:
    def check(self, now: float) -> bool:
        raise RuntimeError("a bug in one owner")


async def test_each_deadline_is_acted_on_within_a_tick_and_then_forgotten() -> None:
    loop = asyncio.get_running_loop()
    sweep = Sweep(0.02)
    soon, later = Deadline(loop.time() + 0.05), Deadline(loop.time() + 0.15)
    sweep.watch(soon)
    sweep.watch(later)
    await asyncio.sleep(0.1)
    assert soon.expired_at is not None and soon.due <= soon.expired_at <= soon.due + 0.05
    assert later.expired_at is None and len(sweep) == 1
    await asyncio.sleep(0.12)
    assert later.expired_at is not None
    assert len(sweep) == 0


async def test_the_timer_stops_when_nothing_is_watched_and_an_unwatched_item_is_never_checked() -> None:
    loop = asyncio.get_running_loop()
    sweep = Sweep(0.01)
    gone = Deadline(loop.time())
    sweep.watch(gone)
    sweep.unwatch(gone)
    await asyncio.sleep(0.05)
    assert gone.checks == 0
    assert sweep._timer is None  # the first tick found nothing and did not arm another
    sweep.unwatch(gone)  # unwatching twice is harmless


async def test_a_failing_check_is_dropped_and_the_others_go_on() -> None:
    loop = asyncio.get_running_loop()
    sweep = Sweep(0.01)
    fine = Deadline(loop.time() + 0.04)
    sweep.watch(Broken())
    sweep.watch(fine)
    await asyncio.sleep(0.08)
    assert fine.expired_at is not None
    assert len(sweep) == 0


def test_the_tick_is_a_quarter_of_the_timeout_and_at_most_a_second() -> None:
    assert tick_for(0.2) == 0.05
    assert tick_for(60.0) == 1.0
