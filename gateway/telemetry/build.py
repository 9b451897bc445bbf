"""The one place a process's telemetry is put together from the configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.auth.authenticator import Authenticator, NoAuth
from gateway.config import GatewayConfig
from gateway.ratelimit.limiter import RateLimiter
from gateway.stats.reporter import UsageReporter
from gateway.telemetry.engine_sources import watch_auth, watch_limiter, watch_reporter
from gateway.telemetry.observer import Telemetry

if TYPE_CHECKING:
    from gateway.telemetry.tracing import Tracing

__all__ = ["Telemetry", "build_frontdoor_telemetry", "build_telemetry", "config_secrets"]


def build_telemetry(
    config: GatewayConfig,
    auth: Authenticator | NoAuth,
    reporter: UsageReporter | None,
    limiter: RateLimiter | None,
    tracing: Tracing | None = None,
) -> Telemetry:
    """Metrics (with the engine parts' scrape-time readings) and tracing, as configured (or `tracing`: tests)."""
    telemetry = build_frontdoor_telemetry(config) if tracing is None else Telemetry.from_config(config, tracing)
    if telemetry.tracing is not None and reporter is not None:
        reporter.on_report = telemetry.tracing.reporter_observer()
    if telemetry.metrics is not None:
        sources = telemetry.metrics.sources
        watch_auth(sources, auth)
        if reporter is not None:
            watch_reporter(sources, reporter)
        watch_limiter(sources, limiter)
    return telemetry


def build_frontdoor_telemetry(config: GatewayConfig) -> Telemetry:
    """Metrics and tracing as configured, with no engine parts to read (`tollgate frontdoor`)."""
    tracing = None
    if config.telemetry.tracing.enabled:
        from gateway.telemetry.tracing import Tracing  # noqa: PLC0415  # OpenTelemetry is imported only when on

        tracing = Tracing.from_config(config.telemetry.tracing)
    return Telemetry.from_config(config, tracing)


def config_secrets(config: GatewayConfig) -> list[str]:
    """The configured credentials every log line must mask: backend keys and header values, the admin and metrics
    tokens."""
    secrets = [b.api_key.reveal() for b in config.backends if b.api_key is not None]
    tokens = (config.routing.admin.token, config.telemetry.metrics.token)
    return [*secrets, *(value for b in config.backends for value in b.headers.values())] + [
        t.reveal() for t in tokens if t is not None
    ]
