"""`DecisionCache`: auth decisions by key digest, bounded (least recently used go first), each with its own TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.auth.principal import Principal
from gateway.errors import GatewayError

Decision = Principal | GatewayError


class DecisionCache:
    """Allow decisions (a `Principal`) and denials (the `GatewayError` to raise) until their TTL runs out.

    Keys are digests of API keys, never the keys themselves. The clock is injected so tests are exact.
    """

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Decision | None:
        """The cached decision, or None when there is none or it has expired."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry[1]

    def put(self, digest: bytes, decision: Decision, ttl: float) -> None:
        """Keep `decision` for `ttl` seconds (not at all when `ttl` is not positive)."""
        if ttl <= 0:
            self._entries.pop(digest, None)
            return
        self._entries[digest] = (self._clock() + ttl, decision)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
