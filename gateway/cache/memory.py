"""`MemoryStore`: the in-process tier (L1), an LRU bounded by the bytes it holds, each entry with its own expiry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# What a stored entry costs beyond its value: the key, the tuple, the dict slot (measured roughly with sys.getsizeof).
ENTRY_OVERHEAD = 200


class MemoryStore:
    """Up to `max_bytes` of values; the least recently used go first, and an expired entry is never returned."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (value, expires at)
        self.bytes = 0  # what the entries cost now, overhead included
        self.evictions = 0  # entries dropped to make room (not expiries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[bytes, float] | None:
        """The value and the seconds it has left, or None (absent or expired)."""
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires = found
        left = expires - self._clock()
        if left <= 0:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value, left

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Keep `value` for `ttl` seconds; False when it is bigger than the whole store."""
        cost = len(value) + ENTRY_OVERHEAD
        if cost > self.max_bytes or ttl <= 0:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, self._clock() + ttl)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.bytes -= len(value) + ENTRY_OVERHEAD
