"""`Telemetry`: what every finished engine call is told to — metrics, the access log line and (when on) spans.

It is the engine's `CallObserver` (`gateway.engine.record`): metering calls it once at the end of each call with the
`CallRecord` the engine filled in, so nothing on the request's path itself records anything.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.config import GatewayConfig
from gateway.engine.record import CallRecord, Spent, http_status
from gateway.telemetry.context import ENGINE_TOOK_CALL
from gateway.telemetry.logs import ACCESS_LOGGER, access_line_handler
from gateway.telemetry.metrics import Metrics, error_type

if TYPE_CHECKING:
    from gateway.telemetry.tracing import Tracing

access_log = logging.getLogger(ACCESS_LOGGER)


class Telemetry:
    """The metrics (None when off), the access log and the tracer (None when off) of one process."""

    def __init__(self, config: GatewayConfig, *, metrics: Metrics | None = None, tracing: Tracing | None = None):
        self.metrics = metrics
        self.tracing = tracing
        self.audit = config.telemetry.audit
        self._providers = {b.name: b.provider for b in config.backends}

    def reconfigure(self, config: GatewayConfig) -> None:
        """Follow a reloaded config: its backends' provider types (metric labels), the audit settings, the metrics
        token. Whether metrics and tracing are on, and where they go, is settled at start."""
        self.audit = config.telemetry.audit
        self._providers = {b.name: b.provider for b in config.backends}
        if self.metrics is not None:
            self.metrics.reconfigure(config)

    @classmethod
    def from_config(cls, config: GatewayConfig, tracing: Tracing | None = None) -> Telemetry:
        """Metrics as configured (summed over workers when PROMETHEUS_MULTIPROC_DIR is set)."""
        metrics = Metrics(config) if config.telemetry.metrics.enabled else None
        return cls(config, metrics=metrics, tracing=tracing)

    def close(self) -> None:
        """Export the spans still pending."""
        if self.tracing is not None:
            self.tracing.close()

    def finished(self, call: CallRecord, failure: BaseException | None, spent: Spent) -> None:
        """Record one finished call everywhere it belongs."""
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.record(call, failure, spent, now)
        ENGINE_TOOK_CALL.set(True)
        if access_log.isEnabledFor(logging.INFO):
            fields = self.access_fields(call, failure, spent, now)
            fast = access_line_handler(access_log)
            if fast is not None:
                fast.write("request", fields)
            else:
                # Made directly: Logger.info would walk the stack to find the caller, a good part of a line's cost.
                record = access_log.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "request", (), None)
                record.__dict__.update(fields)
                access_log.handle(record)
        if self.tracing is not None:
            self.tracing.finished(call, failure, spent, self._providers.get(call.backend, ""))

    def access_fields(
        self, call: CallRecord, failure: BaseException | None, spent: Spent, now: float
    ) -> dict[str, Any]:
        """The access log line's fields: who, what, where it went, how it ended, what it used and how long it took."""
        ctx = call.ctx
        principal = call.principal
        return {
            "request_id": ctx.request_id,
            "client_request_id": ctx.client_request_id,
            "key_id": principal.key_id if principal is not None else "",
            "operation": call.operation,
            "model": call.model,
            "backend": call.backend,
            "provider_model": call.provider_model,
            "stream": call.stream,
            "status": http_status(call, failure),
            "error_type": error_type(failure),
            "input_tokens": spent.input_tokens,
            "output_tokens": spent.output_tokens,
            "cached_tokens": spent.cached_tokens,
            "reasoning_tokens": spent.reasoning_tokens,
            "cost_usd": round(spent.cost_usd, 8),
            "latency_ms": round((now - ctx.started) * 1000, 3),
            "ttft_ms": round((call.first_chunk_at - ctx.started) * 1000, 3) if call.first_chunk_at else None,
            "upstream_ms": round(call.upstream_seconds * 1000, 3),
            "attempts": call.attempts,
            "resumed": call.resumed,  # times another target continued the stream (mid-stream failover)
            "cache": call.cache_status or None,  # hit, miss or bypass; None when the model does not cache
        }
