"""Two counters over a sliding time window, in one-second buckets: memory stays flat however busy the window is."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable


class WindowCounts:
    """Counts of two kinds of event (say good and bad) seen within the last `window` seconds of `clock`."""

    __slots__ = ("_buckets", "_clock", "_window", "first", "second")

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._window = window
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, first count, second count], oldest first
        self.first = 0
        self.second = 0

    def add(self, first: int = 0, second: int = 0) -> None:
        """Count `first` and `second` events now."""
        now = math.floor(self._clock())
        buckets = self._buckets
        if buckets and buckets[-1][0] == now:
            bucket = buckets[-1]  # the common case: old buckets were expired when this one was made
        else:
            self._expire(now)
            bucket = [now, 0, 0]
            buckets.append(bucket)
        bucket[1] += first
        bucket[2] += second
        self.first += first
        self.second += second

    def totals(self) -> tuple[int, int]:
        """Both counts over the window ending now."""
        self._expire(math.floor(self._clock()))
        return self.first, self.second

    def clear(self) -> None:
        """Forget everything."""
        self._buckets.clear()
        self.first = self.second = 0

    def _expire(self, now: int) -> None:
        oldest = now - math.ceil(self._window)
        while self._buckets and self._buckets[0][0] <= oldest:
            _, first, second = self._buckets.popleft()
            self.first -= first
            self.second -= second
