"""Waiting in a test for what happens elsewhere (another task, another process) and says so by no event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Return once `condition()` is true; TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110  # nothing signals it: polling is the point
            await asyncio.sleep(0.01)
