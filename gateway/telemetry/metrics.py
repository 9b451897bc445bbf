"""`Metrics`: the gateway's Prometheus instruments, recorded once per call from what metering already knows.

Names follow the OpenTelemetry GenAI semantic conventions where they apply (`gen_ai.server.request.duration` is
`gen_ai_server_request_duration_seconds` here, with the conventions' bucket boundaries); the rest are `tollgate_*`.
Labels are low-cardinality only: operation, model, provider, backend, status, error type.

Under `serve --workers N` every worker writes its values to memory-mapped files in one directory
(prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`, made by the supervisor) and a scrape on any
worker sums them. Labelled children are resolved once per label set and kept, so a request costs a few dict look-ups
and the value updates themselves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config import GatewayConfig
from gateway.engine.record import CallRecord, Spent, http_status
from gateway.errors import GatewayError, RateLimitError
from gateway.telemetry.children import Children
from gateway.telemetry.routing_metrics import RoutingMetrics
from gateway.telemetry.sources import ScrapeSources

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Bucket boundaries the GenAI semantic conventions advise (ExplicitBucketBoundaries in
# https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "backend")


def error_type(failure: BaseException | None) -> str:
    """A bounded label for what ended a call: the error class's own code (never a provider's free-form one)."""
    if failure is None:
        return ""
    if isinstance(failure, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(failure).default_code if isinstance(failure, GatewayError) else "internal_error"


class _Series:
    """The children of one (operation, provider, model, backend), resolved once."""

    __slots__ = ("cached", "cost", "input", "output", "reasoning", "tpot", "ttft")

    def __init__(self, m: Metrics, labels: tuple[str, str, str, str]) -> None:
        tokens = m.token_usage
        self.input = tokens.labels(*labels, "input")
        self.output = tokens.labels(*labels, "output")
        self.cached = tokens.labels(*labels, "cached")
        self.reasoning = tokens.labels(*labels, "reasoning")
        self.ttft = m.ttft.labels(*labels)
        self.tpot = m.tpot.labels(*labels)
        self.cost = m.cost.labels(*labels)


class Metrics:
    """The instruments, and the exposition of them (summed over workers in multiprocess mode)."""

    def __init__(self, config: GatewayConfig, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir if multiproc_dir is not None else os.environ.get(MULTIPROC_ENV)
        self.token = config.telemetry.metrics.token  # what a scrape must present (gateway.telemetry.http)
        # In multiprocess mode values live in files; the live objects are never collected from a registry.
        self.registry = CollectorRegistry()
        own = None if self.multiproc_dir else self.registry
        self._providers: Mapping[str, str] = {b.name: b.provider for b in config.backends}
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request's arrival to its last byte (GenAI gen_ai.server.request.duration).",
            [*_GENAI, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from the request's arrival to its first streamed token (GenAI gen_ai.server.time_to_first_token).",
            _GENAI,
            buckets=TTFT_BUCKETS,
            registry=own,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, for streams (GenAI gen_ai.server.time_per_output_token).",
            _GENAI,
            buckets=TPOT_BUCKETS,
            registry=own,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request by gen_ai_token_type: input, output, cached (input), reasoning (output).",
            [*_GENAI, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=own,
        )
        self.requests = Counter(
            "tollgate_requests",
            "Requests that reached the engine, by HTTP status and error type.",
            ["operation", "model", "backend", "status", "error_type"],
            registry=own,
        )
        self.cost = Counter("tollgate_cost_usd", "Cost of the requests in US dollars.", _GENAI, registry=own)
        self.attempts = Counter(
            "tollgate_upstream_attempts",
            "Calls to providers, retries and fallbacks included.",
            ["backend", "provider"],
            registry=own,
        )
        self.failures = Counter(
            "tollgate_upstream_failures",
            "Calls to providers that failed, by error type.",
            ["backend", "provider", "error_type"],
            registry=own,
        )
        self.resumes = Counter(
            "tollgate_stream_resumes",
            "Streams whose target failed after the first byte, with mid-stream failover on, by what became of them: "
            "resumed (another target continued the answer), unanswered, no_target, not_continuable.",
            ["model", "result"],
            registry=own,
        )
        self.rate_limited = Counter(
            "tollgate_ratelimit_rejections", "Requests refused by a rate limit (429).", ["model"], registry=own
        )
        self.overhead = Histogram(
            "tollgate_gateway_overhead_seconds",
            "Time the gateway itself added to a request: its whole time less the time waiting on providers.",
            ["operation", "stream"],
            buckets=OVERHEAD_BUCKETS,
            registry=own,
        )
        self.experiments = Counter(
            "tollgate_experiment_requests",
            "Requests of a model running an experiment, by arm (control or treatment) and HTTP status.",
            ["model", "experiment", "arm", "status"],
            registry=own,
        )
        self.http_responses = Counter(
            "tollgate_http_responses",
            "HTTP answers of the front door by route and status, the ones it gave without the engine included.",
            ["route", "status"],
            registry=own,
        )
        self.config_reloads = Counter(
            "tollgate_config_reloads",
            "Config reloads by result: success (a new config serves) or failure (refused; the old one serves on).",
            ["result"],
            registry=own,
        )
        self.config_info = Gauge(
            "tollgate_config_info",
            "1 for the hash of the config serving now (0 for the ones it replaced).",
            ["hash"],
            registry=own,
            multiprocess_mode="livemax",
        )
        self.routing = RoutingMetrics(own)  # deciding route rules and backend wakes, recorded as they happen
        self.sources = ScrapeSources(self.registry if not self.multiproc_dir else None)
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._child = Children()

    def reconfigure(self, config: GatewayConfig) -> None:
        """A reloaded config's backends (for the provider label) and scrape token."""
        self.token = config.telemetry.metrics.token
        self._providers = {b.name: b.provider for b in config.backends}
        self._series.clear()

    def serving(self, config_hash: str, previous: str = "") -> None:
        """`tollgate_config_info`: the config serving now is `config_hash`."""
        if previous and previous != config_hash:
            self.config_info.labels(previous).set(0)
        self.config_info.labels(config_hash).set(1)

    def record(self, call: CallRecord, failure: BaseException | None, spent: Spent, now: float) -> None:
        """Everything one finished call adds to the metrics."""
        ctx = call.ctx
        backend = call.backend
        labels = (call.operation, self._providers.get(backend, ""), call.model, backend)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series(self, labels)
        error = error_type(failure)
        elapsed = now - ctx.started
        self._child(self.duration, *labels, error).observe(elapsed)
        status = str(http_status(call, failure))
        self._child(self.requests, call.operation, call.model, backend, status, error).inc()
        self._child(self.overhead, call.operation, "true" if call.stream else "false").observe(
            max(0.0, elapsed - call.upstream_seconds)
        )
        if call.experiment:
            self._child(self.experiments, call.model, call.experiment, call.arm, status).inc()
        if isinstance(failure, RateLimitError) and not call.tried:
            self._child(self.rate_limited, call.model).inc()
        if spent.input_tokens or spent.output_tokens:
            _tokens(series, spent)
        if spent.cost_usd:
            series.cost.inc(spent.cost_usd)
        if call.first_chunk_at:
            _stream_timing(series, call, spent, now)
        for result in call.resumes:
            self._child(self.resumes, call.model, result).inc()
        for attempt in call.tried:
            provider = self._providers.get(attempt.backend, "")
            self._child(self.attempts, attempt.backend, provider).inc()
            if attempt.error is not None:
                self._child(self.failures, attempt.backend, provider, error_type(attempt.error)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric: this process's, or all workers' summed."""
        self.sources.refresh()
        if not self.multiproc_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.multiproc_dir)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(registry)


def _tokens(series: _Series, spent: Spent) -> None:
    series.input.observe(spent.input_tokens)
    series.output.observe(spent.output_tokens)
    if spent.cached_tokens:
        series.cached.observe(spent.cached_tokens)
    if spent.reasoning_tokens:
        series.reasoning.observe(spent.reasoning_tokens)


def _stream_timing(series: _Series, call: CallRecord, spent: Spent, now: float) -> None:
    series.ttft.observe(call.first_chunk_at - call.ctx.started)
    if spent.output_tokens > 1:
        series.tpot.observe((now - call.first_chunk_at) / (spent.output_tokens - 1))
