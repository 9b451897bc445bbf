"""The `telemetry:` section: metrics, logs, audit logging and tracing (see docs/observability.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.py holds the telemetry section, so it imports this module, not the other way round
    from gateway.config.model import Secret

PII_KINDS = ("email", "phone", "card")
LOG_FORMATS = ("auto", "json", "text")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics: on by default; `listen` serves them from a process with no front door (`tollgate
    engine`), empty for none; with `token`, a scrape must send `Authorization: Bearer <token>`."""

    enabled: bool = True
    listen: str = ""
    token: Secret | None = None


@dataclass(frozen=True, slots=True)
class LogsConfig:
    """Log format (`auto`: text on a terminal, JSON otherwise), the access log, and what is masked in every line."""

    format: str = "auto"
    access_log: bool = True
    pii: tuple[str, ...] = PII_KINDS  # built-in patterns to mask: email, phone, card (Luhn-checked)
    patterns: tuple[str, ...] = ()  # extra regular expressions to mask
    secrets: tuple[str, ...] = ()  # extra literal values to mask (backend keys and headers are always masked)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Request and response bodies logged (masked, cut to `max_bytes`) to the `tollgate.audit` logger."""

    enabled: bool = False
    max_bytes: int = 4096


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry tracing: off unless an OTLP endpoint is set."""

    otlp_endpoint: str = ""  # an OTLP/gRPC collector, e.g. http://127.0.0.1:4317
    sample_ratio: float = 1.0  # of traces started here; an incoming `traceparent`'s sampled flag is honoured
    service_name: str = "tollgate"

    @property
    def enabled(self) -> bool:
        """Whether spans are made at all."""
        return bool(self.otlp_endpoint)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """The whole `telemetry:` section."""

    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
