"""The telemetry targets: `telemetry-off` (no metrics, no access log) and `tracing` (every request traced), each
against `tollgate` (metrics and the access log at their defaults, tracing off).

`tracing` exports to an OTLP endpoint where nothing listens: spans are made, batched and dropped, so its figure is
the cost of making them, not of a collector.
"""

from __future__ import annotations

import copy
from typing import Any

TARGETS = ("telemetry-off", "tracing")
NOTE = (
    "Telemetry: `telemetry-off` (metrics and access log off) and `tracing` (every request traced, OTLP export to a "
    "port where nothing listens) against `tollgate` (the defaults: metrics and a JSON access log line per request, "
    "tracing off). A negative +CPU/req for telemetry-off is what the default telemetry costs."
)


def telemetry_off_config(base: dict[str, Any]) -> dict[str, Any]:
    """`base` with metrics and the access log switched off."""
    config = copy.deepcopy(base)
    config["telemetry"] = {"metrics": {"enabled": False}, "logs": {"access_log": False}}
    return config


def tracing_config(base: dict[str, Any]) -> dict[str, Any]:
    """`base` with every request traced."""
    config = copy.deepcopy(base)
    config["telemetry"] = {"tracing": {"otlp_endpoint": "http://127.0.0.1:9", "sample_ratio": 1.0}}
    return config
