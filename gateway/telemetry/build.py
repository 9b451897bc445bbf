"""A process's telemetry from the configuration: metrics and tracing as configured, and the secrets logs mask.

What the engine's parts add to it (scrape-time readings of auth, cache, limiter, reporter and health; the reporter's
span links) is wired by the composition root, `gateway.assemble`; a split front door has none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config import GatewayConfig
from gateway.telemetry.observer import Telemetry

if TYPE_CHECKING:
    from gateway.telemetry.tracing import Tracing

__all__ = ["Telemetry", "build_telemetry", "config_secrets"]


def build_telemetry(config: GatewayConfig, tracing: Tracing | None = None) -> Telemetry:
    """Metrics and tracing as configured (`tracing`: a test's tracer in place of the configured exporter)."""
    if tracing is None and config.telemetry.tracing.enabled:
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
