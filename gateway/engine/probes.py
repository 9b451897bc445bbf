"""Active health checks: a cheap probe of every backend whose provider has one (a `GET` of the provider's model list:
`{base_url}/models` for OpenAI-compatible backends, Azure's `/openai/models`, Gemini's `models`, Anthropic's
`/v1/models`), every `interval`. `unhealthy_after` failed probes in a row take the backend out of every
plan; `healthy_after` good ones bring it back. Passive outlier detection still works per target meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from gateway.config.routing import ActiveCheckConfig
from gateway.engine.health import HealthBoard
from gateway.errors import GatewayError
from gateway.providers.base import Probeable, Provider

log = logging.getLogger("tollgate.engine")


class ActiveChecker:
    """Probes backends on a timer and tells the health board what it found."""

    def __init__(self, config: ActiveCheckConfig, providers: Mapping[str, Provider], health: HealthBoard) -> None:
        self._config = config
        self._probed = {name: p for name, p in providers.items() if isinstance(p, Probeable)}
        self._health = health
        self._streaks: dict[str, int] = dict.fromkeys(self._probed, 0)  # > 0: good in a row; < 0: bad in a row
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Probe now and then every `interval`, until `close`."""
        if self._task is None and self._probed:
            self._task = asyncio.create_task(self._loop(), name="tollgate-active-checks")

    async def close(self) -> None:
        """Stop probing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._config.interval)

    async def check_all(self) -> None:
        """Probe every backend once, at the same time."""
        names = list(self._probed)
        results = await asyncio.gather(*(self._probe(name) for name in names))
        for name, ok in zip(names, results, strict=True):
            self._record(name, ok)

    async def _probe(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self._config.timeout):
                await self._probed[name].probe()
        except (GatewayError, TimeoutError) as exc:
            log.info("active check of backend %s failed: %r", name, exc)
            return False
        return True

    def _record(self, name: str, ok: bool) -> None:
        streak = self._streaks[name]
        streak = max(streak, 0) + 1 if ok else min(streak, 0) - 1
        self._streaks[name] = streak
        if streak <= -self._config.unhealthy_after:
            self._health.set_backend_up(name, False)
        elif streak >= self._config.healthy_after:
            self._health.set_backend_up(name, True)
