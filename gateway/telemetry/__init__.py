"""Telemetry: Prometheus metrics, OpenTelemetry traces and structured, masked logs (docs/observability.md)."""
