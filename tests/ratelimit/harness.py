"""The harness the shared backend tests run on: a backend, and how time passes for it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.ratelimit.backend import LimiterBackend

# 2026-03-15T12:00:00Z: mid-month, mid-week, mid-day.
T0 = 1_773_576_000.0


class ManualClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds


@dataclass
class Harness:
    """A backend under test, and how time passes for it: the manual clock (memory) or real sleeps (Redis)."""

    name: str
    backend: LimiterBackend
    clock: ManualClock | None  # None: the backend reads its own clock (Redis's TIME)
    namespace: str = ""  # Redis: the key prefix

    @property
    def tolerance(self) -> float:
        """How far a reported duration may drift: none on the manual clock; the test's own run time on Redis."""
        return 0.0 if self.clock is not None else 0.05

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass for the backend."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)
