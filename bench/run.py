"""`python -m bench`: direct vs the floor proxy vs tollgate (one process; with rate limits, in memory and in Redis;
with auth + stats; and split over gRPC).

Every server is a subprocess of this one, so its CPU time is its own (bench.targets says which is which); only a
Redis is not ours: the `limits-redis` target uses the one at `REDIS_URL` (else the local default), is skipped when
none answers, and deletes its own keys at the end (bench.limits). The load generator runs here, on uvloop. Each
(target, scenario, concurrency) gets a warm-up, then a measured closed-loop run bracketed by /proc CPU readings of
the gateway process(es) and, apart, of the servers the gateway calls (bench.measure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import orjson
import uvloop

from bench import brownout, figures, grpc_direct, limits, prompt_routing, proto_path, realistic, report
from bench.load import Scenario
from bench.measure import SETTLE_TIMEOUT, measure_each
from bench.procs import CLOCK_TICKS, Service, peak_rss_kib, stop_all
from bench.targets import ALL_TARGETS, MODEL, Target, start_targets

__all__ = ["main"]

T = TypeVar("T")

_LIMITS_REDIS = "limits-redis"
_REDIS_TARGETS = (_LIMITS_REDIS, "cache-redis")  # the targets that need the Redis
_DEFAULT_REQUESTS = 2000
_QUICK_DIVISOR = 5
_BROWNOUT_SECONDS = 10.0  # measured seconds per balancing policy in the brown-out scenario


@dataclass(frozen=True)
class Plan:
    targets: tuple[str, ...]
    concurrencies: tuple[int, ...]
    requests: int  # per measured run at concurrency > 1
    single_requests: int  # per measured run at concurrency 1
    warmup: int
    chunks: int
    include_usage: bool
    scenarios: tuple[str, ...] = ("plain", "stream")
    realistic_streams: int = 1000
    realistic_concurrency: int = 500
    in_flight: int = 1000

    def requests_at(self, concurrency: int) -> int:
        return self.single_requests if concurrency == 1 else self.requests


def _csv(kind: type[int] | type[str]) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(kind(part) for part in text.split(",") if part.strip())

    return parse


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark tollgate against a direct call to a fake upstream and a bare aiohttp proxy.",
    )
    parser.add_argument("--quick", action="store_true", help="5x fewer requests: a smoke run of about 15 s")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"measured requests per run at concurrency > 1 (default {_DEFAULT_REQUESTS}; "
        "concurrency 1 gets a quarter of it); --quick divides it by 5",
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests before each run (default 100)")
    parser.add_argument("--concurrency", type=_csv(int), default=(1, 10, 50), help="comma-separated (default 1,10,50)")
    parser.add_argument(
        "--targets", type=_csv(str), default=ALL_TARGETS, help=f"comma-separated subset of {','.join(ALL_TARGETS)}"
    )
    parser.add_argument(
        "--scenarios",
        type=_csv(str),
        default=("plain", "stream", "brownout", "realistic"),
        help="plain,stream,brownout,realistic (default all; brownout: see bench.brownout; realistic: bench.realistic)",
    )
    parser.add_argument(
        "--realistic-streams", type=int, default=1000, help="measured realistic streams per target (default 1000)"
    )
    parser.add_argument(
        "--realistic-concurrency", type=int, default=500, help="realistic streams at once (default 500)"
    )
    parser.add_argument(
        "--in-flight", type=int, default=1000, help="streams held at once while RSS is sampled (default 1000)"
    )
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer (default 20)")
    parser.add_argument(
        "--include-usage", action="store_true", help="clients ask for stream_options.include_usage on streams"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the raw figures here as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="print where the servers' logs are and keep them")
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown or not args.targets:
        parser.error(f"--targets: unknown {sorted(unknown)}; choose from {','.join(ALL_TARGETS)}")
    if set(args.scenarios) - {"plain", "stream", "brownout", "realistic"} or not args.scenarios:
        parser.error("--scenarios: choose from plain,stream,brownout,realistic")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency: positive integers")
    return args


def _plan(args: argparse.Namespace) -> Plan:
    requests = args.requests if args.requests is not None else _DEFAULT_REQUESTS
    warmup = args.warmup if args.warmup is not None else 100
    if args.quick:
        requests = max(1, requests // _QUICK_DIVISOR)
        warmup = args.warmup if args.warmup is not None else 40
    return Plan(
        targets=tuple(t for t in ALL_TARGETS if t in args.targets),
        concurrencies=tuple(args.concurrency),
        requests=requests,
        single_requests=max(1, requests // 4),
        warmup=warmup,
        chunks=args.chunks,
        include_usage=args.include_usage,
        scenarios=tuple(args.scenarios),
        realistic_streams=max(1, args.realistic_streams // (_QUICK_DIVISOR if args.quick else 1)),
        realistic_concurrency=max(1, args.realistic_concurrency // (_QUICK_DIVISOR if args.quick else 1)),
        in_flight=max(1, args.in_flight // (_QUICK_DIVISOR if args.quick else 1)),
    )


def _scenarios(plan: Plan) -> list[Scenario]:
    """The plain and streamed scenarios the plan wants."""
    return [
        Scenario(name, stream=stream, chunks=plan.chunks, model=MODEL, include_usage=stream and plan.include_usage)
        for name, stream in (("plain", False), ("stream", True))
        if name in plan.scenarios
    ]


async def _measure(plan: Plan, upstream: Service, targets: list[Target]) -> list[figures.RunFigures]:
    """Every target back to back for each (scenario, concurrency), so compared figures share machine conditions."""
    wanted = ((s, c, t) for s in _scenarios(plan) for c in plan.concurrencies for t in targets)
    runs = await measure_each(plan, upstream, wanted, max(plan.concurrencies) + 10)
    order = {target.name: index for index, target in enumerate(targets)}
    runs.sort(key=lambda run: (run.scenario != "plain", order[run.target], run.concurrency))
    return runs


# ---------------------------------------------------------------------------------------------------- main


def _meta(plan: Plan) -> dict[str, Any]:
    """Taken before anything starts: the load average then says what else the machine was doing."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "clock_tick_ms": 1000 / CLOCK_TICKS,
        "chunks": plan.chunks,
        "requests": plan.requests,
        "single_requests": plan.single_requests,
        "warmup": plan.warmup,
        "concurrencies": list(plan.concurrencies),
        "targets": list(plan.targets),
        "include_usage": plan.include_usage,
        "model": MODEL,
    }


async def _grpc_direct(plan: Plan, targets: Sequence[Target]) -> list[grpc_direct.GrpcFigures]:
    """A gRPC client of the split target's engine, at the highest concurrency: the engine's CPU per stream."""
    split = next((target for target in targets if target.name == "split"), None)
    if split is None or "stream" not in plan.scenarios:
        return []
    concurrency = max(plan.concurrencies)
    runs = await grpc_direct.measure(
        split.grpc_address, split.services[0].pid, plan.chunks, plan.requests, plan.warmup, concurrency
    )
    for run in runs:
        print(
            f"  grpc-direct  {run.kind:<7} c={run.concurrency:<3} {run.streams:>5} streams in {run.wall_s:5.1f}s"
            f"  {run.streams_per_s:7.0f} streams/s  engine CPU/stream {run.engine_cpu_per_stream_ms:.3f} ms"
            + (f"  !!! {run.errors} ERRORS {run.error_samples}" if run.errors else ""),
            file=sys.stderr,
            flush=True,
        )
    return runs


async def _realistic(plan: Plan, log_dir: Path, services: list[Service]) -> list[realistic.RealisticFigures]:
    """The realistic streams against the wanted targets that have a realistic counterpart, and `--workers 2`."""
    wanted = tuple(name for name in realistic.TARGETS if name in plan.targets or name == "workers-2")
    return await realistic.run_realistic(
        wanted, plan.realistic_streams, plan.realistic_concurrency, plan.in_flight, log_dir, services
    )


async def _goal_rounds(plan: Plan, upstream: Service, targets: Sequence[Target]) -> list[figures.RunFigures]:
    """The floor, one process and split at the highest concurrency, plain and streamed, in `GOAL_ROUNDS` rounds whose
    order alternates (forwards, then backwards), so that a machine getting busier or quieter favours none: issue 18's
    CPU ratios are judged on their medians."""
    chosen = [target for target in targets if target.name in proto_path.GOAL_TARGETS]
    if len(chosen) < 2:
        return []
    top = max(plan.concurrencies)
    wanted = (
        (scenario, top, target)
        for round_index in range(proto_path.GOAL_ROUNDS)
        for scenario in _scenarios(plan)
        for target in (chosen if round_index % 2 == 0 else chosen[::-1])
    )
    return await measure_each(plan, upstream, wanted, top + 10)


async def _proto_path_runs(
    plan: Plan,
    upstream: Service,
    targets: Sequence[Target],
    log_dir: Path,
    services: list[Service],
    meta: dict[str, Any],
) -> tuple[list[figures.RunFigures], list[grpc_direct.GrpcFigures], list[realistic.RealisticFigures]]:
    """The runs of issue 18's table beyond the main ones: the goal rounds, the gRPC client of the engine, the
    realistic streams."""
    rounds = await _goal_rounds(plan, upstream, targets)
    meta["goal_rounds"] = [asdict(run) for run in rounds]
    grpc_runs = await _grpc_direct(plan, targets)
    meta["grpc_direct"] = [asdict(run) for run in grpc_runs]
    real = await _realistic(plan, log_dir, services) if "realistic" in plan.scenarios else []
    meta["realistic"] = [asdict(figure) for figure in real]
    return rounds, grpc_runs, real


def _failed(grpc_runs: Sequence[grpc_direct.GrpcFigures], real: Sequence[realistic.RealisticFigures]) -> bool:
    """Whether a gRPC or realistic stream failed (printed, like the main runs' errors)."""
    problems = [f"grpc-direct {run.kind}: {run.errors} errors {run.error_samples}" for run in grpc_runs if run.errors]
    problems += [
        f"realistic {figure.target}: {figure.errors + figure.in_flight_errors} errors {figure.error_samples}"
        for figure in real
        if figure.errors or figure.in_flight_errors
    ]
    for problem in problems:
        print(f"!!! {problem}")
    return bool(problems)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Outside the event loop (starting servers, reporting): unwind to main()'s finally, which stops them.
    raise KeyboardInterrupt(f"signal {signum}")


async def _until_signalled(work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, cancelling it on SIGTERM (an exception raised in a signal handler would be lost in uvloop)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _terminate)


def _peak_rss(targets: Sequence[Target], runs: Sequence[figures.RunFigures]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for run in runs:
        for name, kib in run.peak_rss_kib.items():
            peaks[name] = max(peaks.get(name, 0), kib)
    for target in targets:
        for service in target.services + target.side_services:
            if service.proc is not None and service.proc.poll() is None:
                peaks[service.name] = max(peaks.get(service.name, 0), peak_rss_kib(service.pid))
    return peaks


async def _measure_and_check(
    plan: Plan, upstream: Service, targets: list[Target]
) -> tuple[list[figures.RunFigures], figures.UsageCheck | None]:
    """Every run, then (with the secured target) whether its stats server stored one record per request sent."""
    runs = await _measure(plan, upstream, targets)
    for target in targets:
        if target.accounting is not None:
            return runs, await target.accounting.check(SETTLE_TIMEOUT)
    return runs, None


def _report(
    meta: dict[str, Any],
    targets: Sequence[Target],
    runs: list[figures.RunFigures],
    usage: figures.UsageCheck | None,
    json_path: Path | None,
) -> int:
    comparisons = figures.compare(runs)
    peaks = _peak_rss(targets, runs)
    print()
    print(report.text_report(runs, comparisons, peaks, meta, usage))
    print()
    print("== markdown (for the README) ==")
    print(report.markdown(runs, comparisons, meta))
    if json_path is not None:
        document = report.to_json(runs, comparisons, peaks, meta, usage)
        json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"\nraw figures written to {json_path}")
    banner = report.error_banner(runs, usage)
    if banner is not None:
        print()
        print(banner)
        return 1
    return 0


def _connect_redis(plan: Plan) -> tuple[Plan, limits.BenchRedis | None, str | None]:
    """The Redis for `limits-redis` if that target is wanted and a Redis answers; else the plan without it, and why."""
    if not any(name in plan.targets for name in _REDIS_TARGETS):
        return plan, None, None
    store = limits.BenchRedis(limits.redis_url(os.environ))
    problem = store.ping()
    if problem is None:
        return plan, store, None
    store.close()
    why = f"no Redis answers PING at {limits.redacted(store.url)} ({problem}); set REDIS_URL to use another"
    print(f"note: skipping {', '.join(_REDIS_TARGETS)}: {why}", file=sys.stderr)
    return replace(plan, targets=tuple(name for name in plan.targets if name not in _REDIS_TARGETS)), None, why


def _redis_meta(store: limits.BenchRedis | None, skipped: str | None) -> dict[str, Any]:
    """For the record: which Redis `limits-redis` used and under which prefix, or why it was skipped."""
    if store is not None:
        return {"limits_redis": {"url": limits.redacted(store.url), "prefix": store.prefix}}
    return {"skipped": {_LIMITS_REDIS: skipped}} if skipped else {}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark; 0 when every response was good, 1 on errors, 130 when interrupted."""
    args = _parse_args(argv)
    plan, store, skipped = _connect_redis(_plan(args))
    meta = _meta(plan) | _redis_meta(store, skipped)
    previous = signal.signal(signal.SIGTERM, _terminate)
    services: list[Service] = []
    log_dir = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    started = time.monotonic()
    status = 2
    try:
        print(f"starting servers (logs in {log_dir}) ...", file=sys.stderr, flush=True)
        upstream, targets = start_targets(plan.targets, plan.chunks, log_dir, services, store)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runs, usage = runner.run(_until_signalled(_measure_and_check(plan, upstream, targets)))
            proto_runs = _proto_path_runs(plan, upstream, targets, log_dir, services, meta)
            rounds, grpc_runs, real = runner.run(_until_signalled(proto_runs))
            seconds = _BROWNOUT_SECONDS / (_QUICK_DIVISOR if args.quick else 1)
            if "brownout" in plan.scenarios:
                figures = runner.run(_until_signalled(brownout.run_brownout(seconds, 10, log_dir, services)))
                meta["brownout"] = {"seconds": seconds, "concurrency": 10, "figures": [asdict(f) for f in figures]}
        status = _report(meta, targets, runs, usage, args.json)
        if "brownout" in plan.scenarios:
            print(f"\n{brownout.text_report(figures, seconds, 10)}")
            status = status or int(any(f.errors for f in figures))
        print(f"\n{proto_path.report(runs, grpc_runs, real, plan.chunks, rounds)}")
        status = status or int(_failed(grpc_runs, real))
        print(f"\n{prompt_routing.report(args.quick)}")  # in process: the semantic decision, held requests
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted", file=sys.stderr)
        status = 130
    except RuntimeError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        status = 2
    finally:
        # A second Ctrl-C or SIGTERM must not leave servers behind: stopping them is not interruptible.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for problem in stop_all(services):
            print(f"warning: {problem}", file=sys.stderr)
        if store is not None:
            print(f"{'/'.join(_REDIS_TARGETS)}: {store.cleanup()}", file=sys.stderr)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
        if args.keep_logs or status not in (0, 130):
            print(f"server logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)  # logs, and the secured target's key file, database and spool
    print(f"\nbench finished in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return status
