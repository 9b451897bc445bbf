"""The composition root: the one module that knows every part, and builds a running gateway from a config.

`assemble(config)` makes the providers, the auth client, the limiter, the response cache, the usage reporter and
the telemetry, and hands them to the engine; the engine knows none of their constructors, and telemetry reaches the
engine only as its `CallObserver`. An `Assembly` is whole and self-contained (its own providers, pools and caches),
so a config reload can build a new one from the new config, swap it in, and close the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.auth.authenticator import build_authenticator
from gateway.cache.response_cache import ResponseCache
from gateway.config import GatewayConfig
from gateway.engine.core import EngineCore, EngineParts
from gateway.providers.registry import build_providers
from gateway.providers.wake import observe_wakes
from gateway.ratelimit.build import build_limiter
from gateway.response_store import build_response_store
from gateway.stats.reporter import UsageReporter
from gateway.telemetry.build import build_telemetry
from gateway.telemetry.engine_sources import watch_auth, watch_cache, watch_health, watch_limiter, watch_reporter
from gateway.telemetry.observer import Telemetry

if TYPE_CHECKING:
    from gateway.telemetry.tracing import Tracing


@dataclass(frozen=True, slots=True)
class Assembly:
    """One configuration's engine and the telemetry that observes it."""

    config: GatewayConfig
    engine: EngineCore
    telemetry: Telemetry

    async def start(self) -> None:
        """Start what runs in the background (the usage reporter, active health checks)."""
        await self.engine.start()

    async def close(self) -> None:
        """Deliver or spool pending usage, release every connection, export the pending spans."""
        await self.engine.close()
        self.telemetry.close()


def assemble(config: GatewayConfig, tracing: Tracing | None = None) -> Assembly:
    """Build every part the configuration names (`tracing`: a test's tracer in place of the configured exporter).

    Raises `ConfigError` on a bad backend. Call `start` before serving and `close` after.
    """
    providers = build_providers(config)  # first: a bad backend option fails before anything else is made
    reporter = UsageReporter(config.stats) if config.stats is not None else None
    auth, limiter = build_authenticator(config.auth), build_limiter(config)
    cache = ResponseCache.from_config(config)
    telemetry = build_telemetry(config, tracing)
    routing = telemetry.metrics.routing if telemetry.metrics is not None else None
    responses = build_response_store(config)
    engine = EngineCore(config, EngineParts(providers, auth, reporter, limiter, cache, telemetry, routing, responses))
    if telemetry.tracing is not None and reporter is not None:
        reporter.on_report = telemetry.tracing.reporter_observer()  # stats batches link to their calls' spans
    if telemetry.metrics is not None:  # the engine's own parts, read when Prometheus scrapes
        sources = telemetry.metrics.sources
        watch_auth(sources, auth)
        if reporter is not None:
            watch_reporter(sources, reporter)
        watch_limiter(sources, limiter)
        watch_cache(sources, cache)
        watch_health(sources, engine.health_snapshot)
        observe_wakes(providers, telemetry.metrics.routing)  # wakes and held calls of sleeping backends
    return Assembly(config, engine, telemetry)
