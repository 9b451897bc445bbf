"""What telemetry costs per request, measured in one process: `python -m bench.telemetry_cost`.

Times `Telemetry.finished` (everything telemetry does for a request: metrics, the access log line, spans) on a
finished streaming call with usage, two upstream attempts and an auth check, for each setting, and the same with no
observer at all. Precise where the end-to-end bench is noisy; it leaves out the front door's request span (tracing on
only), which the `tracing` bench target includes.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable

from gateway.call import CallContext, new_request_id
from gateway.config import parse_config
from gateway.config.telemetry import LogsConfig, TracingConfig
from gateway.engine.metering import Meter
from gateway.engine.record import CallRecord, Spent, UpstreamAttempt
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.observer import Telemetry
from tollgate.gateway.v1 import gateway_pb2 as pb

_ROUNDS = 5
CONFIG = """
backends: [{name: up, provider: openai, base_url: "http://127.0.0.1:9", api_key: sk-bench-upstream-key},
           {name: other, provider: openai, base_url: "http://127.0.0.1:9"}]
models: [{name: gpt-4o-mini, targets: [{backend: up}], fallback: []}]
prices: {gpt-4o-mini: {input: 0.15, output: 0.6}}
"""


def _call(meter: Meter) -> tuple[Callable[[], None], Spent]:
    now = time.perf_counter()
    call = CallRecord(CallContext(request_id=new_request_id(), started=now - 0.05), "chat", "gpt-4o-mini")
    call.backend, call.provider_model, call.attempts, call.chunks = "up", "gpt-4o-mini", 2, 20
    call.first_chunk_at, call.upstream_seconds = now - 0.04, 0.049
    call.usage = pb.Usage(prompt_tokens=30, completion_tokens=20)
    call.auth_check = (now - 0.05, now - 0.049)
    call.tried = [UpstreamAttempt("other", "gpt-4o-mini", now - 0.049, now - 0.045), UpstreamAttempt("up", "m", now)]
    call.stream = True
    spent = meter.spent(call)
    observer = meter.observer
    return (lambda: observer.finished(call, None, spent)) if observer else (lambda: None), spent


def _per_call_us(telemetry: Telemetry | None, count: int) -> float:
    config = parse_config(CONFIG, {})
    run, _ = _call(Meter(config, None, None, telemetry))
    for _ in range(1000):
        run()
    rounds = []
    for _ in range(_ROUNDS):  # the least of several rounds: other work on a shared machine only ever adds
        start = time.process_time()
        for _ in range(count // _ROUNDS):
            run()
        rounds.append((time.process_time() - start) / (count // _ROUNDS) * 1e6)
    return min(rounds)


def main() -> None:
    """Print microseconds of CPU per request for each telemetry setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="calls per setting (default 20000)")
    count = parser.parse_args().count
    config = parse_config(CONFIG, {})
    sink = io.StringIO()
    configure_logging(LogsConfig(format="json", access_log=False), "INFO", ["sk-bench-upstream-key"], sink)
    rows = [("no observer", _per_call_us(None, count))]
    rows.append(("observer, metrics off, access log off", _per_call_us(Telemetry(config), count)))
    rows.append(("metrics", _per_call_us(Telemetry(config, metrics=Metrics(config, "")), count)))
    configure_logging(LogsConfig(format="json"), "INFO", ["sk-bench-upstream-key"], sink)
    rows.append(
        ("metrics + access log (JSON, masked)", _per_call_us(Telemetry(config, metrics=Metrics(config, "")), count))
    )
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: PLC0415

    from gateway.telemetry.tracing import Tracing  # noqa: PLC0415  # as the gateway does: only when tracing is on

    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(otlp_endpoint="http://127.0.0.1:9"), exporter)
    traced = Telemetry(config, metrics=Metrics(config, ""), tracing=tracing)
    rows.append(("metrics + access log + engine spans (4)", _per_call_us(traced, count // 4)))
    tracing.close()
    logging.getLogger().handlers.clear()
    width = max(len(name) for name, _ in rows)
    print(f"telemetry CPU per request, {count} calls each, least of {_ROUNDS} rounds (process time; noisy machine):")
    for name, us in rows:
        print(f"  {name:<{width}}  {us:7.1f} µs")


if __name__ == "__main__":
    main()
