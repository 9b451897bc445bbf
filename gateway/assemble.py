"""The composition root: the one module that knows every part, and builds a running gateway from a config.

`assemble(config)` makes the providers, the auth client, the limiter, the response cache, the usage reporter and
the telemetry, and hands them to the engine; the engine knows none of their constructors, and telemetry reaches the
engine only as its `CallObserver`. An `Assembly` is whole and self-contained (its own providers, pools and caches),
so a config reload can build a new one from the new config, swap it in, and close the old one.

`successor(previous, config)` is that reload's build: it takes over from `previous` every part the new config did
not change (a backend's adapter and connection pool when its whole `BackendConfig` is the same, with its targets'
health; the limiter's counters when they live in the same store; the cache's entries when the cache settings are the
same; the auth client and its decisions; the usage reporter and the process's telemetry), builds the rest, and
touches nothing running until `wire` is called: a config that fails to build leaves the old one exactly as it was.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.auth.authenticator import build_authenticator
from gateway.cache.response_cache import ResponseCache
from gateway.config import GatewayConfig
from gateway.config.digest import config_hash
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.health import HealthBoard
from gateway.providers.base import Provider
from gateway.providers.registry import build_providers
from gateway.providers.wake import observe_wakes
from gateway.ratelimit.build import build_limiter, same_store
from gateway.response_store import build_response_store
from gateway.stats.reporter import UsageReporter
from gateway.telemetry.build import build_telemetry
from gateway.telemetry.engine_sources import watch_auth, watch_cache, watch_health, watch_limiter, watch_reporter
from gateway.telemetry.observer import Telemetry

if TYPE_CHECKING:
    from gateway.telemetry.tracing import Tracing


@dataclass(frozen=True, slots=True)
class Handover:
    """What an assembly took over from the one it replaced (empty for the first)."""

    parts: tuple[object, ...] = ()  # the old assembly's parts the new one runs on: closing the old must spare them
    backends: tuple[str, ...] = ()  # backends whose adapter (connection pool) and health carried over
    rebuilt: tuple[str, ...] = ()  # backends new or changed, built afresh
    health_targets: int = 0  # targets whose health (circuit, latency, counts) carried over
    limiter: bool = False  # the limit counters carried over
    cache: bool = False  # the response cache's entries carried over

    def summary(self) -> str:
        """A few words for the reload's log line."""
        kept = [name for name, on in (("limits", self.limiter), ("cache", self.cache)) if on]
        return (
            f"backends kept {len(self.backends)} ({self.health_targets} targets' health), "
            f"rebuilt {len(self.rebuilt)}{' (' + ', '.join(self.rebuilt) + ')' if self.rebuilt else ''}; "
            f"state kept: {', '.join(kept) or 'none'}"
        )


@dataclass(frozen=True, slots=True)
class Assembly:
    """One configuration's engine and the telemetry that observes it."""

    config: GatewayConfig
    engine: EngineCore
    telemetry: Telemetry
    parts: EngineParts
    hash: str = ""  # `gateway.config.digest.config_hash` of `config`
    handover: Handover = Handover()

    async def start(self) -> None:
        """Start what runs in the background (the usage reporter, active health checks)."""
        await self.engine.start()

    async def close(self, successor: Assembly | None = None) -> None:
        """Deliver or spool pending usage, release every connection, export the pending spans; what `successor`
        took over stays open (and the telemetry, which it shares)."""
        if successor is None:
            await self.engine.close()
            self.telemetry.close()
            return
        await self.engine.close(keep=successor.handover.parts)

    def wire(self) -> None:
        """Point the telemetry's scrape-time readings at this assembly's parts (replacing a predecessor's)."""
        metrics, parts = self.telemetry.metrics, self.parts
        if metrics is None:
            return
        sources = metrics.sources
        watch_auth(sources, parts.auth)
        if isinstance(parts.usage, UsageReporter):
            watch_reporter(sources, parts.usage)
        watch_limiter(sources, parts.limiter)
        if parts.cache is not None:
            watch_cache(sources, parts.cache)
        watch_health(sources, self.engine.health_snapshot)
        observe_wakes(parts.providers, metrics.routing)  # wakes and held calls of sleeping backends


def assemble(config: GatewayConfig, tracing: Tracing | None = None) -> Assembly:
    """Build every part the configuration names (`tracing`: a test's tracer in place of the configured exporter).

    Raises `ConfigError` on a bad backend. Call `start` before serving and `close` after.
    """
    providers = build_providers(config)  # first: a bad backend option fails before anything else is made
    reporter = UsageReporter(config.stats) if config.stats is not None else None
    telemetry = build_telemetry(config, tracing)
    if telemetry.tracing is not None and reporter is not None:
        reporter.on_report = telemetry.tracing.reporter_observer()  # stats batches link to their calls' spans
    parts = EngineParts(
        providers,
        build_authenticator(config.auth),
        reporter,
        build_limiter(config),
        ResponseCache.from_config(config),
        telemetry,
        telemetry.metrics.routing if telemetry.metrics is not None else None,
        HealthBoard(config.routing.health, time.monotonic),
        build_response_store(config),
    )
    assembly = Assembly(config, EngineCore(config, parts), telemetry, parts, config_hash(config))
    assembly.wire()
    return assembly


def successor(previous: Assembly, config: GatewayConfig) -> Assembly:
    """The assembly of a reloaded `config`, built on what `previous` has (see the module docstring). Nothing running
    changes: call `wire` and `start` when it takes over, and `previous.close(successor)` when the old one's calls
    are done. Raises `ConfigError` on a bad backend, having made nothing that needs closing."""
    old, before = previous.config, previous.parts
    same = [
        b.name
        for b in config.backends
        if b.name in before.providers
        and _backend(old, b.name) == b
        and (b.wake is None or old.redis_url == config.redis_url)  # a waking backend's fleet lock is in Redis
    ]
    kept: dict[str, Provider] = {name: before.providers[name] for name in same}
    providers = build_providers(config, kept)
    health = HealthBoard(config.routing.health, time.monotonic)
    assert before.health is not None  # every assembly makes its board
    taken_health = health.adopt(before.health, same)
    auth = before.auth if old.auth == config.auth else build_authenticator(config.auth)
    keep_counters = before.limiter is not None and same_store(old, config)
    limiter = build_limiter(config, before.limiter.backend if keep_counters and before.limiter else None)
    cache = _cache(previous, config)
    same_responses = (old.responses, old.redis_url) == (config.responses, config.redis_url)
    responses = before.responses if same_responses and before.responses else build_response_store(config)
    telemetry = previous.telemetry
    parts = EngineParts(
        providers,
        auth,
        before.usage,  # `stats:` applies at a restart: the reporter owns the spool of this process
        limiter,
        cache,
        telemetry,
        before.decisions,
        health,
        responses,  # stored responses outlive a reload unless their store's settings changed
    )
    carried: list[object] = [*kept.values(), before.usage]
    if auth is before.auth:
        carried.append(auth)
    if limiter is not None and keep_counters:
        carried.append(before.limiter)  # its backend (the counters) serves the new limiter
    if cache is not None and before.cache is not None and cache.store is before.cache.store:
        carried.append(before.cache)
    if responses is before.responses:
        carried.append(responses)
    handover = Handover(
        parts=tuple(p for p in carried if p is not None),
        backends=tuple(same),
        rebuilt=tuple(b.name for b in config.backends if b.name not in kept),
        health_targets=taken_health,
        limiter=limiter is not None and keep_counters,
        cache=before.cache is not None and cache.store is before.cache.store,
    )
    return Assembly(config, EngineCore(config, parts), telemetry, parts, config_hash(config), handover)


def _backend(config: GatewayConfig, name: str) -> object:
    return next((b for b in config.backends if b.name == name), None)


def _cache(previous: Assembly, config: GatewayConfig) -> ResponseCache:
    """The new config's response cache, on the old one's stores when the cache settings are the same: entries of
    unchanged models hit again (a changed model's entries are keyed by its old fingerprint, and never do)."""
    old, before = previous.config, previous.parts.cache
    if before is None or (old.cache, old.redis_url) != (config.cache, config.redis_url):
        return ResponseCache.from_config(config)
    if _semantic(old) != _semantic(config):
        return ResponseCache.from_config(config)
    return ResponseCache(config, before.store, before.semantic)


def _semantic(config: GatewayConfig) -> dict[str, object]:
    return {m.name: m.cache.semantic for m in config.models if m.cache is not None and m.cache.semantic is not None}


def restart_needed(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The sections that changed but are read only at start: listen addresses, TLS listeners and clients of the
    servers, the HTTP server's limits and shutdown timing, the usage reporter, the telemetry exporters and logs."""
    changed = []
    if dataclasses.replace(new.server, reload_poll=old.server.reload_poll, reload_grace=old.server.reload_grace) != (
        old.server
    ):
        changed.append("server")
    changed.extend(name for name in ("listen", "tls", "stats") if getattr(old, name) != getattr(new, name))
    metrics = dataclasses.replace(new.telemetry.metrics, token=old.telemetry.metrics.token)  # read at each scrape
    if dataclasses.replace(new.telemetry, metrics=metrics) != old.telemetry:
        changed.append("telemetry")
    return changed
