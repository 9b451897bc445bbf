"""Realistic streams (issue 18): an upstream that waits 100 ms for the first byte, then sends 50 chunks 20 ms apart,
and many of them at once.

Its own fake upstream (`--latency 0.1 --chunk-delay 0.02 --chunks 50`) and its own gateways, started for this
scenario: `direct` (the upstream itself), `floor` (bench.floor_proxy), `tollgate` (one process), `split` (engine +
front door over gRPC) and `workers-2` (`tollgate serve --workers 2`: a supervisor and two workers sharing the port).
Every gateway's upstream pool allows more connections than streams in flight, so no pool limit queues them.

For each target: a warm-up; its resident memory at rest (VmRSS of every process, summed for `workers-2`'s workers
and supervisor, shown per process as the largest); `streams` streams from `concurrency` closed-loop clients, with
errors, streams a second, time to first content token (p50/p99) and the gateway's CPU per stream; then `in_flight`
streams all at once, VmRSS sampled every 0.2 s while they run (the largest per process).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.load import Endpoint, Scenario, make_session, percentile, request_headers, run_load
from bench.procs import GRPC_READY, HTTP_READY, URL_READY, Service, cpu_seconds, start_service
from bench.targets import MODEL, tollgate_config

__all__ = ["TARGETS", "RealisticFigures", "run_realistic"]

TARGETS = ("direct", "floor", "tollgate", "split", "workers-2")
CHUNKS = 50
CHUNK_DELAY = 0.02
FIRST_BYTE = 0.1
_HOST = "127.0.0.1"
_REPO = Path(__file__).resolve().parents[1]
_POOL = 2000  # upstream connections each gateway may open: more than streams in flight
_RSS_EVERY = 0.2


@dataclass
class RealisticFigures:
    """One target's realistic run."""

    target: str
    streams: int
    concurrency: int
    errors: int
    streams_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    cpu_per_stream_ms: float | None  # None for direct
    in_flight: int
    rss_rest_mib: dict[str, float] = field(default_factory=dict)  # process -> MiB
    rss_in_flight_mib: dict[str, float] = field(default_factory=dict)
    in_flight_errors: int = 0
    error_samples: list[str] = field(default_factory=list)


@dataclass
class _Gateway:
    name: str
    base_url: str
    services: list[Service]

    def pids(self) -> dict[str, int]:
        """Every process of the gateway, by name; a supervisor's workers too."""
        pids: dict[str, int] = {}
        for service in self.services:
            pids[service.name] = service.pid
            for index, child in enumerate(_children(service.pid)):
                pids[f"{service.name}/worker-{index + 1}"] = child
        return pids


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        return []
    return sorted(children)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _start(wanted: tuple[str, ...], log_dir: Path, services: list[Service]) -> tuple[str, list[_Gateway]]:
    fake = ("-m", "gateway.testing.fake_openai", "--host", _HOST, "--port", "0", "--chunks", str(CHUNKS))
    delays = ("--chunk-delay", str(CHUNK_DELAY), "--latency", str(FIRST_BYTE))
    upstream = start_service("realistic-upstream", _python(*fake, *delays), log_dir, _REPO)
    services.append(upstream)
    base = upstream.wait_for(URL_READY)[1]
    config = tollgate_config(base)
    config["backends"][0]["max_connections"] = _POOL
    config_path = log_dir / "realistic.yaml"
    config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
    serve = ("-m", "gateway", "serve", "--config", str(config_path), "--http", f"{_HOST}:0", "--grpc", f"{_HOST}:0")
    pending: list[tuple[str, Service, str]] = []

    def begin(name: str, argv: list[str], ready: str) -> None:
        service = start_service(f"realistic-{name}", argv, log_dir, _REPO)
        services.append(service)
        pending.append((name, service, ready))

    if "floor" in wanted:
        floor = ("-m", "bench.floor_proxy", "--upstream", base, "--host", _HOST, "--port", "0")
        begin("floor", _python(*floor, "--max-connections", str(_POOL)), URL_READY)
    if "tollgate" in wanted:
        begin("tollgate", _python(*serve), HTTP_READY)
    if "workers-2" in wanted:
        begin("workers-2", _python(*serve, "--workers", "2"), HTTP_READY)
    if "split" in wanted:
        engine = ("-m", "gateway", "engine", "--config", str(config_path), "--grpc", f"{_HOST}:0")
        begin("split", _python(*engine), GRPC_READY)
    gateways = [_Gateway("direct", base, [])] if "direct" in wanted else []
    for name, service, ready in pending:
        found = service.wait_for(ready)[1]
        if name == "floor":
            gateways.append(_Gateway(name, found, [service]))
        elif name == "split":
            argv = _python("-m", "gateway", "frontdoor", "--config", str(config_path), "--http", f"{_HOST}:0")
            frontdoor = start_service("realistic-split-frontdoor", [*argv, "--engine", f"{_HOST}:{found}"], log_dir)
            services.append(frontdoor)
            port = frontdoor.wait_for(HTTP_READY)[1]
            gateways.append(_Gateway(name, f"http://{_HOST}:{port}/v1", [service, frontdoor]))
        else:
            gateways.append(_Gateway(name, f"http://{_HOST}:{found}/v1", [service]))
    gateways.sort(key=lambda gateway: TARGETS.index(gateway.name))
    return base, gateways


async def _in_flight(gateway: _Gateway, endpoint: Endpoint, scenario: Scenario, n: int) -> tuple[int, dict[str, float]]:
    """`n` streams at once, the gateway's VmRSS sampled while they run: errors and the largest VmRSS per process."""
    session = make_session(n + 10)
    peaks: dict[str, float] = {}
    try:
        load = asyncio.create_task(run_load(session, endpoint, scenario, n, n))
        while not load.done():
            for name, pid in gateway.pids().items():
                peaks[name] = max(peaks.get(name, 0.0), _rss_mib(pid))
            await asyncio.wait([load], timeout=_RSS_EVERY)
        result = await load
    finally:
        await session.close()
    return result.errors, peaks


async def _measure(gateway: _Gateway, streams: int, concurrency: int, in_flight: int, warmup: int) -> RealisticFigures:
    scenario = Scenario("stream", stream=True, chunks=CHUNKS, model=MODEL)
    endpoint = Endpoint(f"{gateway.base_url}/chat/completions", request_headers("bench"))
    session = make_session(concurrency + 10)
    try:
        warm = await run_load(session, endpoint, scenario, warmup, min(warmup, concurrency))
        await asyncio.sleep(0.5)
        rest = {name: _rss_mib(pid) for name, pid in gateway.pids().items()}
        pids = list(gateway.pids().values())
        before = sum(cpu_seconds(pid) for pid in pids)
        result = await run_load(session, endpoint, scenario, streams, concurrency)
        used = sum(cpu_seconds(pid) for pid in pids) - before
    finally:
        await session.close()
    flight_errors, peaks = await _in_flight(gateway, endpoint, scenario, in_flight)
    ttfts = sorted(result.ttfts)
    return RealisticFigures(
        target=gateway.name,
        streams=streams,
        concurrency=concurrency,
        errors=result.errors + warm.errors,
        streams_per_s=streams / result.wall if result.wall > 0 else 0.0,
        ttft_p50_ms=percentile(ttfts, 0.5) * 1000 if ttfts else None,
        ttft_p99_ms=percentile(ttfts, 0.99) * 1000 if ttfts else None,
        cpu_per_stream_ms=used * 1000 / streams if gateway.services else None,
        in_flight=in_flight,
        rss_rest_mib=rest,
        rss_in_flight_mib=peaks,
        in_flight_errors=flight_errors,
        error_samples=(warm.error_samples + result.error_samples)[:5],
    )


async def run_realistic(
    wanted: tuple[str, ...],
    streams: int,
    concurrency: int,
    in_flight: int,
    log_dir: Path,
    services: list[Service],
) -> list[RealisticFigures]:
    """Start the realistic upstream and the wanted gateways, and measure each in turn."""
    _, gateways = _start(wanted, log_dir, services)
    figures: list[RealisticFigures] = []
    for gateway in gateways:
        figure = await _measure(gateway, streams, concurrency, in_flight, warmup=min(100, streams))
        print(
            f"  realistic {figure.target:<10} {figure.streams} streams c={figure.concurrency}"
            f"  {figure.streams_per_s:6.0f} streams/s  TTFT p50 {figure.ttft_p50_ms or 0:.0f} ms"
            f" p99 {figure.ttft_p99_ms or 0:.0f} ms"
            + ("" if figure.cpu_per_stream_ms is None else f"  CPU/stream {figure.cpu_per_stream_ms:.2f} ms")
            + (
                f"  !!! {figure.errors + figure.in_flight_errors} ERRORS"
                if figure.errors + figure.in_flight_errors
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )
        figures.append(figure)
    return figures
