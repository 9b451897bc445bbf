"""`Tracing`: OpenTelemetry spans for each request, exported with OTLP. Imported only when tracing is configured.

The front door's span is live (it is the parent everything joins, and its traceparent crosses the split-mode gRPC
hop as metadata). The engine's spans are made when the call ends, from the times the engine already keeps: the call
itself (with the GenAI attributes), its auth `Check` call and each upstream attempt, so the engine's own path carries
no tracing code. Sampling is parent-based: an incoming `traceparent`'s decision is honoured, and new traces are kept
at `sample_ratio`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.config.telemetry import TracingConfig
from gateway.engine.record import CallRecord, Spent
from gateway.telemetry.metrics import error_type

_PROPAGATOR = TraceContextTextMapPropagator()
_AUTH_SERVICE = "tollgate.auth.v1.AuthService"
_EXPORT_TIMEOUT = 2.0
_STATS_SERVICE = "tollgate.stats.v1.StatsService"
_REMEMBERED = 20_000  # request spans kept for the stats batch spans to link to (a few flush intervals' worth)


class Tracing:
    """A tracer provider of its own (never the global one), and the spans tollgate makes."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter, *, batch: bool = True) -> None:
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._provider.add_span_processor(processor)
        self.tracer = self._provider.get_tracer("tollgate")
        self._recent: OrderedDict[str, SpanContext] = OrderedDict()  # request id → its engine span, recent ones
        self._remembering = False  # only while there is a usage reporter whose batches link to them

    @classmethod
    def from_config(cls, config: TracingConfig) -> Tracing:
        """Spans exported in batches to the configured OTLP/gRPC endpoint."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        endpoint = config.otlp_endpoint
        # A collector that is down must not hold up shutdown for the exporter's default 10 s per batch.
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=_EXPORT_TIMEOUT)
        return cls(config, exporter)

    def reporter_observer(self) -> Callable[[list[bytes], float, object], None]:
        """What the usage reporter calls after each Report call; from now on request spans are remembered for it."""
        self._remembering = True
        return self.report_span

    def report_span(self, payloads: list[bytes], started: float, result: object) -> None:
        """A span for one `Report` call of the usage reporter, linked to the requests whose records it carried."""
        clock = _Clock()
        links = [Link(context) for p in payloads if (context := self._recent.get(_request_id(p))) is not None]
        span = self.tracer.start_span(
            f"{_STATS_SERVICE}/Report",
            kind=SpanKind.CLIENT,
            start_time=clock.ns(started),
            links=links,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": _STATS_SERVICE,
                "rpc.method": "Report",
                "tollgate.records": len(payloads),
            },
        )
        code = getattr(result, "code", None)
        if callable(code):  # a grpc.aio.AioRpcError: the call failed
            span.set_status(Status(StatusCode.ERROR, str(code())))
        span.end(end_time=clock.ns(clock.perf))

    def close(self) -> None:
        """Export what is pending, then stop."""
        self._provider.shutdown()

    def start_server_span(self, name: str, headers: Mapping[str, str], attributes: dict[str, Any]) -> Span:
        """A live SERVER span, child of the request's `traceparent` when it has one."""
        return self.tracer.start_span(
            name, context=_PROPAGATOR.extract(headers), kind=SpanKind.SERVER, attributes=attributes
        )

    def finished(self, call: CallRecord, failure: BaseException | None, spent: Spent, provider: str) -> None:
        """The engine's spans for a call that just ended, under the current span or the caller's traceparent."""
        ctx = call.ctx
        parent = otel_context.get_current()
        kind = SpanKind.INTERNAL
        if not trace.get_current_span(parent).get_span_context().is_valid:
            parent = _PROPAGATOR.extract({"traceparent": ctx.trace_parent} if ctx.trace_parent else {})
            kind = SpanKind.SERVER  # the engine serving a gRPC caller, the front door among them
        clock = _Clock()
        span = self.tracer.start_span(
            f"{call.operation} {call.model}",
            context=parent,
            kind=kind,
            start_time=clock.ns(ctx.started),
            attributes={
                "gen_ai.operation.name": call.operation,
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": call.model,
                "gen_ai.response.model": call.provider_model,
                "gen_ai.usage.input_tokens": spent.input_tokens,
                "gen_ai.usage.output_tokens": spent.output_tokens,
                "tollgate.request_id": ctx.request_id,
                "tollgate.backend": call.backend,
                "tollgate.attempts": call.attempts,
                "tollgate.stream": call.stream,
            },
        )
        _fail(span, failure)
        self._remember(ctx.request_id, span)
        inside = trace.set_span_in_context(span)
        if call.auth_check is not None:
            self._auth_span(inside, clock, call.auth_check)
        for attempt in call.tried:
            child = self.tracer.start_span(
                f"{call.operation} {attempt.model}",
                context=inside,
                kind=SpanKind.CLIENT,
                start_time=clock.ns(attempt.started),
                attributes={
                    "gen_ai.operation.name": call.operation,
                    "gen_ai.provider.name": provider if attempt.backend == call.backend else "",
                    "gen_ai.request.model": attempt.model,
                    "tollgate.backend": attempt.backend,
                },
            )
            _fail(child, attempt.error)
            child.end(end_time=clock.ns(attempt.ended or clock.perf))
        span.end(end_time=clock.ns(clock.perf))

    def _remember(self, request_id: str, span: Span) -> None:
        """Keep the call's span for the stats batch that will carry its usage record to link to."""
        context = span.get_span_context()
        if self._remembering and context.trace_flags.sampled:
            self._recent[request_id] = context
            if len(self._recent) > _REMEMBERED:
                self._recent.popitem(last=False)

    def _auth_span(self, parent: otel_context.Context, clock: _Clock, times: tuple[float, float]) -> None:
        span = self.tracer.start_span(
            f"{_AUTH_SERVICE}/Check",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=clock.ns(times[0]),
            attributes={"rpc.system": "grpc", "rpc.service": _AUTH_SERVICE, "rpc.method": "Check"},
        )
        span.end(end_time=clock.ns(times[1]))


def traceparent(span: Span) -> str:
    """The W3C traceparent naming `span`, for the next hop."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def _fail(span: Span, failure: BaseException | None) -> None:
    if failure is not None:
        kind = error_type(failure)
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, kind))


def _request_id(payload: bytes) -> str:
    """The request id of a serialized UsageRecord without parsing it: field 1, which protobuf writes first."""
    if len(payload) < 2 or payload[0] != 0x0A:  # field 1, length-delimited
        return ""
    length, shift, i = 0, 0, 1
    while i < len(payload):
        byte = payload[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return payload[i : i + length].decode("utf-8", "replace")
        shift += 7
    return ""


class _Clock:
    """perf_counter seconds (what the engine records) to epoch nanoseconds (what spans take)."""

    __slots__ = ("epoch", "perf")

    def __init__(self) -> None:
        self.perf = time.perf_counter()
        self.epoch = time.time_ns()

    def ns(self, perf: float) -> int:
        return self.epoch - int((self.perf - perf) * 1e9)
