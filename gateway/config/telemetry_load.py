"""Reading the `telemetry:` section of a configuration: metrics, logs, audit logging and tracing. Every problem names
the path of the bad field."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.fields import ConfigError, _address, _bool, _name, _Node, _size, _str, _str_list, _url
from gateway.config.model import Secret
from gateway.config.telemetry import (
    LOG_FORMATS,
    PII_KINDS,
    AuditConfig,
    LogsConfig,
    MetricsConfig,
    TelemetryConfig,
    TracingConfig,
)


def _telemetry(node: _Node) -> TelemetryConfig:
    metrics = node.get("metrics", _Node, None)
    logs = node.get("logs", _Node, None)
    audit = node.get("audit", _Node, None)
    tracing = node.get("tracing", _Node, None)
    node.done()
    return TelemetryConfig(
        metrics=_metrics(metrics) if metrics else MetricsConfig(),
        logs=_logs(logs) if logs else LogsConfig(),
        audit=_audit(audit) if audit else AuditConfig(),
        tracing=_tracing(tracing) if tracing else TracingConfig(),
    )


def _metrics(node: _Node) -> MetricsConfig:
    token = node.get("token", _str, "")
    if token and len(token) < 16:
        raise ConfigError(f"{node.at('token')}: a metrics token needs at least 16 characters")
    config = MetricsConfig(
        enabled=node.get("enabled", _bool, True),
        listen=node.get("listen", _address, ""),
        token=Secret(token) if token else None,
    )
    node.done()
    return config


def _logs(node: _Node) -> LogsConfig:
    fmt = node.get("format", _str, "auto")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"{node.at('format')}: expected one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    pii = tuple(node.get("pii", _str_list, list(PII_KINDS)))
    for i, kind in enumerate(pii):
        if kind not in PII_KINDS:
            raise ConfigError(f"{node.at('pii')}[{i}]: expected one of {', '.join(PII_KINDS)}, got {kind!r}")
    patterns = tuple(node.get("patterns", _str_list, list[str]()))
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{node.at('patterns')}[{i}]: not a valid regular expression: {exc}") from None
    config = LogsConfig(
        format=fmt,
        access_log=node.get("access_log", _bool, True),
        pii=pii,
        patterns=patterns,
        secrets=tuple(s for s in node.get("secrets", _str_list, list[str]()) if s),
    )
    node.done()
    return config


def _audit(node: _Node) -> AuditConfig:
    config = AuditConfig(enabled=node.get("enabled", _bool, False), max_bytes=node.get("max_bytes", _size, 4096))
    node.done()
    return config


def _tracing(node: _Node) -> TracingConfig:
    endpoint = node.get("otlp_endpoint", _str, "")
    if endpoint:
        endpoint = _url(endpoint, node.at("otlp_endpoint"))
    ratio = node.get("sample_ratio", _ratio, 1.0)
    config = TracingConfig(
        otlp_endpoint=endpoint, sample_ratio=ratio, service_name=node.get("service_name", _name, "tollgate")
    )
    node.done()
    return config


def _ratio(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{path}: expected a number from 0 to 1, got {value!r}")
    return float(value)
