"""Traces, captured with the SDK's in-memory exporter: one connected trace per request, front door → engine (across
the gRPC hop when split) → auth Check and each upstream attempt, with GenAI attributes; `traceparent` honoured and
the trace id returned in `x-trace-id`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.config.telemetry import TracingConfig
from gateway.telemetry.tracing import Tracing
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import MODES, config_for
from tests.e2e.test_auth_stats import Stack, eventually, stack
from tests.telemetry.helpers import instrumented

__all__ = ["stack"]  # the fixture, imported for pytest
MESSAGES: Any = [{"role": "user", "content": "Trace me."}]
RESILIENT = "  - {name: resilient, targets: [{backend: primary, model: gpt-4o-mini}], fallback: [demo]}\n"
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"


def _tracings(exporter: InMemorySpanExporter, ratio: float = 1.0) -> dict[str, Tracing]:
    config = TracingConfig(otlp_endpoint="http://127.0.0.1:4317", sample_ratio=ratio)
    return {
        "engine_tracing": Tracing(config, exporter, batch=False),
        "front_tracing": Tracing(config, exporter, batch=False),
    }


def _by_trace(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    traces: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def _connected(spans: list[ReadableSpan]) -> ReadableSpan:
    """The one root of `spans`, after checking every other span's parent is among them."""
    ids = {span.context.span_id for span in spans if span.context is not None}
    roots = [span for span in spans if span.parent is None or span.parent.span_id not in ids]
    assert len(roots) == 1, [s.name for s in roots]
    return roots[0]


def _child(spans: list[ReadableSpan], parent: ReadableSpan, name: str) -> ReadableSpan:
    assert parent.context is not None
    found = [s for s in spans if s.name == name and s.parent is not None and s.parent.span_id == parent.context.span_id]
    assert len(found) == 1, (name, [(s.name, s.parent) for s in spans])
    return found[0]


@pytest.mark.parametrize("mode", MODES)
async def test_one_connected_trace_per_request(mode: str, upstream: FakeOpenAI) -> None:
    exporter = InMemorySpanExporter()
    text = config_for(upstream.base_url).replace("models:\n", "models:\n" + RESILIENT)
    async with instrumented(mode, text, **_tracings(exporter)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        trace_header = raw.headers["x-trace-id"]
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        upstream.add_fault(Fault(status=500))
        await client.chat.completions.create(model="resilient", messages=MESSAGES)
    traces = _by_trace(exporter.get_finished_spans())
    assert len(traces) == 3
    first = traces[int(trace_header, 16)]
    root = _connected(first)
    assert (root.name, root.kind) == ("POST /v1/chat/completions", SpanKind.SERVER)
    assert root.attributes is not None and root.attributes["http.response.status_code"] == 200
    engine = _child(first, root, "chat gpt-4o-mini")
    assert engine.kind == (SpanKind.SERVER if mode == "split" else SpanKind.INTERNAL)
    attributes = dict(engine.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    upstream_call = _child(first, engine, "chat gpt-4o-mini")
    assert upstream_call.kind == SpanKind.CLIENT
    assert upstream_call.start_time is not None and engine.start_time is not None
    assert engine.start_time <= upstream_call.start_time
    for spans in traces.values():
        _connected(spans)
    failover = next(spans for spans in traces.values() if any(s.name == "chat resilient" for s in spans))
    attempts = sorted((s for s in failover if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert [dict(s.attributes or {})["tollgate.backend"] for s in attempts] == ["primary", "demo"]
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert attempts[1].status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("mode", MODES)
async def test_incoming_traceparent_is_honoured(mode: str, upstream: FakeOpenAI) -> None:
    exporter = InMemorySpanExporter()
    url = "{}/chat/completions"
    body = {"model": "demo", "messages": MESSAGES}
    sampled = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    unsampled = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-00"
    async with (
        instrumented(mode, config_for(upstream.base_url), **_tracings(exporter, ratio=0.0)) as gw,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(url.format(gw.base_url), json=body, headers={"traceparent": sampled}) as r:
            assert r.status == 200
            assert r.headers["x-trace-id"] == INCOMING_TRACE
        # Not sampled upstream: no spans, and no trace id to look for. New traces: ratio 0, none either.
        async with session.post(url.format(gw.base_url), json=body, headers={"traceparent": unsampled}) as r:
            assert "x-trace-id" not in r.headers
        async with session.post(url.format(gw.base_url), json=body) as r:
            assert "x-trace-id" not in r.headers
    spans = list(exporter.get_finished_spans())
    assert {s.context.trace_id for s in spans if s.context is not None} == {int(INCOMING_TRACE, 16)}
    root = _connected(spans)
    assert root.parent is not None and root.parent.span_id == int(INCOMING_PARENT, 16)
    assert {s.name for s in spans} == {"POST /v1/chat/completions", "chat demo", "chat tollgate-demo"}


@pytest.mark.parametrize("mode", MODES)
async def test_the_auth_check_is_a_span(mode: str, upstream: FakeOpenAI, stack: Stack) -> None:
    exporter = InMemorySpanExporter()
    async with instrumented(mode, stack.config(upstream), **_tracings(exporter)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=stack.keys["alice"], max_retries=0)
        chat = client.chat.completions.with_raw_response
        first = await chat.create(model="gpt-4o-mini", messages=MESSAGES)
        second = await chat.create(model="gpt-4o-mini", messages=MESSAGES)  # cached: no Check call
    by_trace = _by_trace(exporter.get_finished_spans())
    ids = [int(raw.headers["x-trace-id"], 16) for raw in (first, second)]
    traces = [by_trace.pop(trace_id) for trace_id in ids]
    # Any other trace is the usage reporter's batch (its own root, on its own schedule: under load it can end
    # before the gateway stops).
    assert all(s.name == "tollgate.stats.v1.StatsService/Report" for spans in by_trace.values() for s in spans)
    checks = [[s for s in spans if s.name == "tollgate.auth.v1.AuthService/Check"] for spans in traces]
    assert sorted(len(c) for c in checks) == [0, 1]
    spans = next(spans for spans, c in zip(traces, checks, strict=True) if c)
    engine = next(s for s in spans if s.name == "chat gpt-4o-mini" and s.kind != SpanKind.CLIENT)
    check = _child(spans, engine, "tollgate.auth.v1.AuthService/Check")
    assert check.kind == SpanKind.CLIENT
    assert dict(check.attributes or {})["rpc.system"] == "grpc"


@pytest.mark.parametrize("mode", MODES)
async def test_the_stats_report_is_a_span_linked_to_its_requests(mode: str, upstream: FakeOpenAI, stack: Stack) -> None:
    exporter = InMemorySpanExporter()
    async with instrumented(mode, stack.config(upstream), **_tracings(exporter)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=stack.keys["alice"], max_retries=0)
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await eventually(lambda: len(stack.rows()) == 3)
        await eventually(lambda: any(s.name.endswith("/Report") for s in exporter.get_finished_spans()))
    spans = exporter.get_finished_spans()
    engine_spans = [s for s in spans if s.name == "chat gpt-4o-mini" and s.kind != SpanKind.CLIENT]
    assert len(engine_spans) == 3
    reports = [s for s in spans if s.name == "tollgate.stats.v1.StatsService/Report"]
    assert reports and all(s.parent is None and s.kind == SpanKind.CLIENT for s in reports)
    linked = {link.context.span_id for report in reports for link in report.links}
    assert linked == {s.context.span_id for s in engine_spans if s.context is not None}
    assert sum(dict(r.attributes or {})["tollgate.records"] for r in reports) == 3


def test_tracing_off_imports_no_opentelemetry() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys\n"
        "from gateway.config import parse_config\n"
        "from gateway.assemble import assemble\n"
        "from gateway.frontdoor.app import create_app\n"
        "from gateway.config import default_config_text\n"
        "config = parse_config(default_config_text(), {})\n"
        "assembly = assemble(config)\n"
        "app = create_app(assembly.engine, config.server, assembly.telemetry)\n"
        "assert assembly.telemetry.tracing is None\n"
        "assert [m.__name__ for m in app.middlewares] == ['answers'], app.middlewares  # no tracing one\n"
        # redis-py imports parts of the OpenTelemetry API and SDK for its own (off) metrics; tracing is ours.
        "ours = ('gateway.telemetry.tracing', 'opentelemetry.sdk.trace', 'opentelemetry.exporter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
