"""Single-flight: concurrent identical requests in one process wait for the first instead of each calling upstream.

The first caller of a key gets a `Flight` and leads; later callers `wait` until the leader lands (whether it stored
an answer or failed) and then look the cache up again. If the leader failed, or its answer could not be stored,
the cache is still empty and the first of them to claim the key leads in turn: one upstream call at a time, and no
waiter ever gets another caller's error.
"""

from __future__ import annotations

import asyncio


class Flight:
    """A leader's claim on a key; `land` it exactly once, however the call ends."""

    __slots__ = ("_flights", "done", "key")

    def __init__(self, flights: Flights, key: str) -> None:
        self._flights = flights
        self.key = key
        self.done = asyncio.Event()

    def land(self) -> None:
        """Let the waiters look again; a second call does nothing."""
        if not self.done.is_set():
            self.done.set()
            if self._flights.leaders.get(self.key) is self:
                del self._flights.leaders[self.key]


class Flights:
    """The keys being fetched from upstream right now, in this process."""

    def __init__(self) -> None:
        self.leaders: dict[str, Flight] = {}
        self.waits = 0  # callers that waited for a leader instead of calling upstream themselves

    async def claim(self, key: str) -> Flight | None:
        """A `Flight` when the caller is to lead; None after waiting for another leader (look the cache up again)."""
        leader = self.leaders.get(key)
        if leader is None:
            flight = self.leaders[key] = Flight(self, key)
            return flight
        self.waits += 1
        await leader.done.wait()  # a cancelled waiter leaves the leader untouched
        return None
