"""The `telemetry:` section: defaults, every field, and each bad value named by its path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.telemetry import TelemetryConfig

BASE = """
backends: [{name: demo, provider: mock}]
models: [{name: demo, targets: [{backend: demo}]}]
"""


def test_defaults_metrics_and_access_log_on_tracing_and_audit_off() -> None:
    telemetry = parse_config(BASE, {}).telemetry
    assert telemetry == TelemetryConfig()
    assert telemetry.metrics.enabled and telemetry.logs.access_log
    assert not telemetry.tracing.enabled and not telemetry.audit.enabled
    assert telemetry.logs.pii == ("email", "phone", "card")


def test_every_field() -> None:
    text = (
        BASE
        + """
telemetry:
  metrics: {enabled: false, listen: "127.0.0.1:9464"}
  logs: {format: json, access_log: false, pii: [email], patterns: ["EMP-\\\\d+"], secrets: ["${SECRET}"]}
  audit: {enabled: true, max_bytes: 16KiB}
  tracing: {otlp_endpoint: "http://collector:4317", sample_ratio: 0.25, service_name: tollgate-eu}
"""
    )
    t = parse_config(text, {"SECRET": "hunter2hunter2"}).telemetry
    assert (t.metrics.enabled, t.metrics.listen) == (False, "127.0.0.1:9464")
    assert (t.logs.format, t.logs.access_log, t.logs.pii) == ("json", False, ("email",))
    assert t.logs.patterns == ("EMP-\\d+",)
    assert t.logs.secrets == ("hunter2hunter2",)
    assert (t.audit.enabled, t.audit.max_bytes) == (True, 16384)
    assert t.tracing.enabled
    assert (t.tracing.otlp_endpoint, t.tracing.sample_ratio, t.tracing.service_name) == (
        "http://collector:4317",
        0.25,
        "tollgate-eu",
    )


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("{metrics: {listen: nowhere}}", "telemetry.metrics.listen: expected host:port"),
        ("{metrics: {enabled: maybe}}", "telemetry.metrics.enabled: expected true or false"),
        ("{logs: {format: xml}}", "telemetry.logs.format: expected one of auto, json, text"),
        ("{logs: {pii: [email, ssn]}}", "telemetry.logs.pii[1]: expected one of email, phone, card"),
        ("{logs: {patterns: ['(unclosed']}}", "telemetry.logs.patterns[0]: not a valid regular expression"),
        ("{audit: {max_bytes: 0}}", "telemetry.audit.max_bytes: must be more than zero"),
        ("{tracing: {otlp_endpoint: 'collector:4317'}}", "telemetry.tracing.otlp_endpoint: expected an http://"),
        ("{tracing: {sample_ratio: 1.5}}", "telemetry.tracing.sample_ratio: expected a number from 0 to 1"),
        ("{tracing: {sample_ratio: true}}", "telemetry.tracing.sample_ratio: expected a number from 0 to 1"),
        ("{tracing: {exporter: zipkin}}", "telemetry.tracing.exporter: unknown field"),
        ("{metrix: {}}", "telemetry.metrix: unknown field"),
        ("[metrics]", "telemetry: expected a mapping"),
    ],
)
def test_bad_values_name_their_field(section: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"telemetry: {section}\n", {})
    assert error in str(caught.value)
