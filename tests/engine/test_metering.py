"""Usage records: one per authenticated call however it ends, with exact or estimated tokens and the cost."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.auth.principal import ANONYMOUS, Principal
from gateway.call import CallContext
from gateway.config import Price, parse_config
from gateway.engine.metering import DEADLINE_SLACK, Meter, estimate_prompt_tokens
from gateway.engine.record import CallRecord
from gateway.errors import RateLimitError, UpstreamError
from gateway.stats.pricing import cost_usd, price_for
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.stats.v1 import stats_pb2

CONFIG = parse_config(
    """
backends: [{name: openai, provider: openai, base_url: "http://127.0.0.1:9/v1"}]
models: [{name: fast, targets: [{backend: openai, model: gpt-4o-mini}]}]
prices:
  gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
""",
    {},
)


class Calls:
    """An engine observer that keeps every finished call's record, by request id."""

    def __init__(self) -> None:
        self.records: dict[str, CallRecord] = {}

    def finished(self, call: CallRecord, failure: BaseException | None, spent: object) -> None:
        self.records[call.ctx.request_id] = call

    def of(self, ctx: CallContext) -> CallRecord:
        """The record of the call made with `ctx`."""
        return self.records[ctx.request_id]


def params(text: str = "x" * 400) -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(model="fast", messages=[pb.ChatMessage(role=pb.ROLE_USER, content=text)])


def answered(call: CallRecord) -> CallRecord:
    call.principal = Principal(key_id="k1", user="alice", team="ml", labels={"env": "prod"})
    call.backend, call.provider_model, call.route, call.attempts = "openai", "gpt-4o-mini", "fast>openai", 1
    return call


def test_a_completed_call_carries_exact_usage_cost_and_identity() -> None:
    sink = RecordingSink()
    meter = Meter(CONFIG, sink)
    ctx = CallContext(request_id="req_a", started=time.perf_counter() - 0.25)
    with meter.call(ctx, "chat", "fast") as call:
        answered(call).params = params()
        call.usage = pb.Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=400, reasoning_tokens=50)
    (record,) = sink.records
    assert (record.request_id, record.key_id, record.user, record.team) == ("req_a", "k1", "alice", "ml")
    assert dict(record.labels) == {"env": "prod"}
    assert (record.requested_model, record.backend, record.provider, record.provider_model) == (
        "fast",
        "openai",
        "openai",
        "gpt-4o-mini",
    )
    assert (record.input_tokens, record.output_tokens, record.cached_tokens, record.reasoning_tokens) == (
        1000,
        200,
        400,
        50,
    )
    assert not record.usage_estimated
    assert record.cost_usd == pytest.approx((600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6)
    assert (record.outcome, record.http_status, record.grpc_status) == (stats_pb2.OUTCOME_COMPLETED, 200, 0)
    assert record.route == "fast>openai"
    assert record.attempts == 1
    assert 0.24 < record.latency.ToTimedelta().total_seconds() < 5
    assert abs(record.start_time.ToNanoseconds() / 1e9 - (time.time() - 0.25)) < 1
    assert not record.HasField("time_to_first_token")


def test_a_failed_call_records_the_error_that_the_client_saw() -> None:
    sink = RecordingSink()
    meter = Meter(CONFIG, sink)
    ctx = CallContext(request_id="req_b")
    with pytest.raises(RateLimitError), meter.call(ctx, "chat", "fast") as call:
        answered(call)
        raise RateLimitError("slow down")
    (record,) = sink.records
    assert (record.outcome, record.http_status, record.grpc_status) == (stats_pb2.OUTCOME_FAILED, 429, 8)
    assert record.error_type == "rate_limit_exceeded"
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (0, 0, 0.0)


def test_a_stream_cut_by_the_client_is_recorded_with_estimated_usage() -> None:
    sink = RecordingSink()
    meter = Meter(CONFIG, sink)
    ctx = CallContext(request_id="req_c")
    with pytest.raises(asyncio.CancelledError), meter.call(ctx, "chat", "fast") as call:
        answered(call).params, call.stream = params("y" * 4000), True
        call.first_chunk_at, call.chunks = time.perf_counter(), 12
        raise asyncio.CancelledError
    (record,) = sink.records
    assert (record.outcome, record.http_status, record.grpc_status) == (stats_pb2.OUTCOME_CANCELLED, 499, 1)
    assert record.stream
    assert record.usage_estimated
    assert (record.input_tokens, record.output_tokens) == (1000, 12)
    assert record.cost_usd > 0
    assert record.HasField("time_to_first_token")


def test_a_stream_failing_after_its_first_chunk_reports_the_200_the_client_got() -> None:
    sink = RecordingSink()
    meter = Meter(CONFIG, sink)
    ctx = CallContext(request_id="req_d")
    with pytest.raises(UpstreamError), meter.call(ctx, "chat", "fast") as call:
        answered(call).params, call.stream = params(), True
        call.first_chunk_at, call.chunks = time.perf_counter(), 3
        raise UpstreamError("cut")
    (record,) = sink.records
    assert (record.outcome, record.http_status, record.error_type) == (stats_pb2.OUTCOME_FAILED, 200, "upstream_error")


def test_unauthenticated_calls_and_a_missing_sink_record_nothing() -> None:
    sink = RecordingSink()
    with Meter(CONFIG, sink).call(CallContext(request_id="req_e"), "chat", "fast"):
        pass  # never authenticated: principal is None
    assert sink.records == []
    with Meter(CONFIG, None).call(CallContext(request_id="req_f"), "chat", "fast") as call:
        call.principal = ANONYMOUS


def test_a_broken_sink_never_fails_the_call() -> None:
    class Broken(RecordingSink):
        def submit(self, record: stats_pb2.UsageRecord) -> None:
            raise OSError("disk full")

    with Meter(CONFIG, Broken()).call(CallContext(request_id="req_g"), "chat", "fast") as call:
        answered(call)


def test_prices_by_provider_model_then_requested_model() -> None:
    prices = {"gpt-4o-mini": Price(1.0, 2.0), "fast": Price(10.0, 20.0, 5.0)}
    assert price_for(prices, "gpt-4o-mini", "fast") == Price(1.0, 2.0)
    assert price_for(prices, "unknown", "fast") == Price(10.0, 20.0, 5.0)
    assert price_for(prices, "unknown", "other") is None
    assert cost_usd(None, 10, 10, 0) == 0.0
    assert cost_usd(Price(1.0, 2.0), 1_000_000, 500_000, 250_000) == pytest.approx(1.0 + 1.0)  # cached at input price
    assert cost_usd(Price(1.0, 2.0, 0.5), 1_000_000, 0, 2_000_000) == pytest.approx(0.5)  # cached capped at input


def test_prompt_estimate_counts_text_parts_and_tool_calls() -> None:
    message = pb.ChatMessage(
        role=pb.ROLE_ASSISTANT,
        content_parts=[pb.ContentPart(text="a" * 40)],
        tool_calls=[pb.ToolCall(function=pb.FunctionCall(name="f" * 4, arguments="b" * 36))],
    )
    assert estimate_prompt_tokens(pb.ChatCompletionParams(messages=[message])) == 20


@pytest.mark.parametrize(
    ("cancelled_at", "error_type", "outcome"),
    [
        (0.5, "", stats_pb2.OUTCOME_CANCELLED),  # halfway: the caller left
        (1.0 - DEADLINE_SLACK / 2, "deadline_exceeded", stats_pb2.OUTCOME_FAILED),  # its cancel beat our count
        (1.2, "deadline_exceeded", stats_pb2.OUTCOME_FAILED),  # past it: grpc cancelled the call
    ],
)
def test_a_cancel_at_the_callers_deadline_is_the_deadline(
    cancelled_at: float, error_type: str, outcome: stats_pb2.Outcome.ValueType
) -> None:
    sink = RecordingSink()
    meter = Meter(CONFIG, sink)
    ctx = CallContext(request_id="req_d", started=time.perf_counter() - cancelled_at, deadline=1.0)
    with pytest.raises(asyncio.CancelledError), meter.call(ctx, "chat", "fast") as call:
        answered(call)
        raise asyncio.CancelledError
    (record,) = sink.records
    assert (record.error_type, record.outcome) == (error_type, outcome)
