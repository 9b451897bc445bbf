"""The table of issue 18 (the proto path as fast as the in-process path): direct, the floor, one process, split, a
gRPC client of the engine and `--workers 2`, from the runs of the same bench, then each goal with its measured ratio.

The plain and 20-chunk stream columns come from the main runs at their highest concurrency; the realistic columns
from bench.realistic; the gRPC client rows from bench.grpc_direct (the engine's CPU alone). The CPU ratios of the
floor, one process and split are judged on the medians of `GOAL_ROUNDS` rounds measured apart, the three in
alternating order (`_goal_rounds` in bench.run): one run of each is a coin toss near a goal on a shared machine.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.figures import DIRECT, FLOOR, TOLLGATE, RunFigures
from bench.grpc_direct import GrpcFigures
from bench.realistic import RealisticFigures

__all__ = ["GOAL_ROUNDS", "GOAL_TARGETS", "Goal", "goals", "report", "table"]

SPLIT = "split"
WORKERS = "workers-2"
GOAL_ROUNDS = 5
GOAL_TARGETS = (FLOOR, TOLLGATE, SPLIT)
_ROWS = (
    (DIRECT, "direct to the mock"),
    (FLOOR, "bare aiohttp passthrough (the floor)"),
    (TOLLGATE, "tollgate, one process"),
    (SPLIT, "tollgate split (front door + engine over gRPC)"),
    ("grpc:chunks", "gRPC client of the engine, chunk by chunk (engine CPU)"),
    ("grpc:batches", "gRPC client of the engine, in batches (engine CPU)"),
    ("grpc:exchange", "gRPC client of the engine, in batches over one Exchange (engine CPU)"),
    (WORKERS, "tollgate serve --workers 2"),
)
# The memory goals are in MB (10^6 bytes); VmRSS is read in MiB (2^20), 4.9% larger a unit.
RSS_REST_MB = 80.0
RSS_IN_FLIGHT_MB = 150.0
_MB_PER_MIB = 1.048576


@dataclass(frozen=True)
class Goal:
    """One goal of the issue: what it asks, what was measured, and whether it holds (None: not measured)."""

    name: str
    measured: str
    met: bool | None


def _run(runs: Sequence[RunFigures], target: str, scenario: str, concurrency: int) -> RunFigures | None:
    return next(
        (r for r in runs if r.target == target and r.scenario == scenario and r.concurrency == concurrency), None
    )


def _top(runs: Sequence[RunFigures]) -> int:
    return max((r.concurrency for r in runs), default=0)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rss(values: dict[str, float]) -> str:
    return "-" if not values else f"{max(values.values()):.0f}"


def table(
    runs: Sequence[RunFigures], grpc: Sequence[GrpcFigures], realistic: Sequence[RealisticFigures], chunks: int
) -> str:
    """The issue's table, for the rows this run measured."""
    c = _top(runs)
    real = {figure.target: figure for figure in realistic}
    real_c = realistic[0].concurrency if realistic else 0
    in_flight = realistic[0].in_flight if realistic else 0
    header = (
        f"| | plain c={c} req/s | CPU ms / plain request | CPU ms / {chunks}-chunk stream "
        f"| realistic c={real_c} streams/s | TTFT p50 / p99 ms | max RSS MiB at rest | "
        f"with {in_flight} streams in flight | errors |"
    )
    lines = [header, "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key, label in _ROWS:
        plain = _run(runs, key, "plain", c)
        stream = _run(runs, key, "stream", c)
        grpc_run = next((g for g in grpc if f"grpc:{g.kind}" == key and g.concurrency == c), None)
        figure = real.get(key)
        if plain is None and stream is None and grpc_run is None and figure is None:
            continue
        stream_cpu = stream.cpu_per_request_ms if stream else None
        if grpc_run is not None:
            stream_cpu = grpc_run.engine_cpu_per_stream_ms
        errors = sum(r.errors + r.warmup_errors for r in (plain, stream) if r is not None)
        errors += grpc_run.errors if grpc_run else 0
        errors += figure.errors + figure.in_flight_errors if figure else 0
        ttft = "-" if figure is None else f"{_f(figure.ttft_p50_ms, 0)} / {_f(figure.ttft_p99_ms, 0)}"
        lines.append(
            f"| {label} | {_f(plain.rps if plain else None, 0)} | {_f(plain.cpu_per_request_ms if plain else None)} "
            f"| {_f(stream_cpu)} | {_f(figure.streams_per_s if figure else None, 0)} | {ttft} "
            f"| {_rss(figure.rss_rest_mib) if figure else '-'} | {_rss(figure.rss_in_flight_mib) if figure else '-'} "
            f"| {errors} |"
        )
    return "\n".join(lines)


def _ratio(name: str, value: float | None, base: float | None, limit: float) -> Goal:
    if value is None or not base:
        return Goal(name, "not measured", None)
    ratio = value / base
    return Goal(name, f"{value:.3f} / {base:.3f} = {ratio:.2f}x", ratio <= limit)


def _cpu_values(runs: Sequence[RunFigures], target: str, scenario: str, c: int) -> list[float]:
    """The CPU a request of each of `target`'s runs at concurrency `c`, in run order."""
    return [
        r.cpu_per_request_ms
        for r in runs
        if r.target == target and r.scenario == scenario and r.concurrency == c and r.cpu_per_request_ms is not None
    ]


def _cpu(runs: Sequence[RunFigures], target: str, scenario: str, c: int) -> float | None:
    """The CPU a request of `target`'s runs at concurrency `c`: the median when there are several (goal rounds)."""
    values = _cpu_values(runs, target, scenario, c)
    return statistics.median(values) if values else None


def goals(
    runs: Sequence[RunFigures],
    grpc: Sequence[GrpcFigures],
    realistic: Sequence[RealisticFigures],
    rounds: Sequence[RunFigures] = (),
) -> list[Goal]:
    """Every goal of the issue, from this run's figures; the CPU ratios from the goal `rounds` when there are any."""
    c = _top(runs)
    cpu_runs = rounds or runs
    one_plain, one_stream = _cpu(cpu_runs, TOLLGATE, "plain", c), _cpu(cpu_runs, TOLLGATE, "stream", c)
    floor_plain, floor_stream = _cpu(cpu_runs, FLOOR, "plain", c), _cpu(cpu_runs, FLOOR, "stream", c)
    split_plain, split_stream = _cpu(cpu_runs, SPLIT, "plain", c), _cpu(cpu_runs, SPLIT, "stream", c)
    found = [
        _ratio(f"split CPU / plain request <= 1.5x one process (c={c})", split_plain, one_plain, 1.5),
        _ratio(f"split CPU / stream <= 1.5x one process (c={c})", split_stream, one_stream, 1.5),
        _ratio(f"one process CPU / plain request <= 1.5x floor (c={c})", one_plain, floor_plain, 1.5),
        _ratio(f"one process CPU / stream <= 1.3x floor (c={c})", one_stream, floor_stream, 1.3),
    ]
    found.extend(
        _ratio(
            f"gRPC client ({g.kind}): engine CPU / stream <= one process over HTTP (c={c})",
            g.engine_cpu_per_stream_ms,
            one_stream,
            1.0,
        )
        for g in grpc
        if g.concurrency == c
    )
    direct_1, one_1 = _run(runs, DIRECT, "plain", 1), _run(runs, TOLLGATE, "plain", 1)
    if direct_1 and one_1 and direct_1.p50_ms is not None and one_1.p50_ms is not None:
        added = one_1.p50_ms - direct_1.p50_ms
        floor_1 = _run(runs, FLOOR, "plain", 1)
        floors = _floors(floor_1.p50_ms if floor_1 else None, direct_1.p50_ms, ".2f")
        found.append(Goal("one process: added p50 at c=1 <= 0.4 ms", f"{added:.2f} ms{floors}", added <= 0.4))
    found += _realistic_goals({figure.target: figure for figure in realistic})
    return found


def _floors(floor: float | None, direct: float, spec: str) -> str:
    """The floor's own figure over direct from the same run, to print beside a latency goal ("" if not measured)."""
    return "" if floor is None else f" (the floor's {format(floor - direct, spec)})"


def _realistic_goals(real: dict[str, RealisticFigures]) -> list[Goal]:
    found: list[Goal] = []
    one, split, workers = real.get(TOLLGATE), real.get(SPLIT), real.get(WORKERS)
    direct, floor = real.get(DIRECT), real.get(FLOOR)
    if one and split:
        ratio = split.streams_per_s / one.streams_per_s if one.streams_per_s else 0.0
        found.append(
            Goal(
                "split realistic streams/s >= 0.9x one process",
                f"{split.streams_per_s:.0f} / {one.streams_per_s:.0f} = {ratio:.2f}x",
                ratio >= 0.9,
            )
        )
        if split.ttft_p99_ms is not None and one.ttft_p99_ms is not None:
            added = split.ttft_p99_ms - one.ttft_p99_ms
            found.append(Goal("split realistic TTFT p99 <= one process + 50 ms", f"{added:+.0f} ms", added <= 50))
    if workers:
        bad = workers.errors + workers.in_flight_errors
        found.append(Goal("--workers 2: realistic streams with 0 errors", f"{bad} errors", bad == 0))
        if floor:
            ok = workers.streams_per_s >= floor.streams_per_s
            found.append(
                Goal(
                    "--workers 2: streams/s >= the floor's",
                    f"{workers.streams_per_s:.0f} vs {floor.streams_per_s:.0f}",
                    ok,
                )
            )
        if direct and workers.ttft_p50_ms is not None and direct.ttft_p50_ms is not None:
            added = workers.ttft_p50_ms - direct.ttft_p50_ms
            floors = _floors(floor.ttft_p50_ms if floor else None, direct.ttft_p50_ms, "+.0f")
            found.append(Goal("--workers 2: TTFT p50 <= direct + 30 ms", f"{added:+.0f} ms{floors}", added <= 30))
    for figure in real.values():
        if figure.target in (DIRECT, FLOOR) or not figure.rss_rest_mib:
            continue
        rest = max(figure.rss_rest_mib.values()) * _MB_PER_MIB
        flight = max(figure.rss_in_flight_mib.values(), default=0.0) * _MB_PER_MIB
        found.append(Goal(f"{figure.target}: RSS per process at rest <= 80 MB", f"{rest:.0f} MB", rest <= RSS_REST_MB))
        found.append(
            Goal(
                f"{figure.target}: RSS per process with {figure.in_flight} streams in flight <= 150 MB",
                f"{flight:.0f} MB",
                flight <= RSS_IN_FLIGHT_MB,
            )
        )
    return found


def _rounds_note(rounds: Sequence[RunFigures]) -> list[str]:
    """What the CPU ratios were judged on: each target's figures in the goal rounds, and their medians."""
    if not rounds:
        return []
    count, c = max(Counter((r.target, r.scenario) for r in rounds).values()), _top(rounds)
    lines = [f"CPU ms a request in {count} alternating rounds at c={c} (the goals' ratios are of the medians):"]
    for scenario in ("plain", "stream"):
        for target in GOAL_TARGETS:
            if values := _cpu_values(rounds, target, scenario, c):
                figures = " / ".join(f"{v:.3f}" for v in values)
                lines.append(f"  {scenario:<7} {target:<9} {figures}   median {statistics.median(values):.3f}")
    return [*lines, ""]


def report(
    runs: Sequence[RunFigures],
    grpc: Sequence[GrpcFigures],
    realistic: Sequence[RealisticFigures],
    chunks: int,
    rounds: Sequence[RunFigures] = (),
) -> str:
    """The table and the goals, as printed at the end of `make bench`."""
    lines = ["== the proto path (issue 18): tollgate's rows ==", table(runs, grpc, realistic, chunks), ""]
    lines += _rounds_note(rounds)
    lines.append("goal                                                                         measured            ")
    for goal in goals(runs, grpc, realistic, rounds):
        verdict = "-" if goal.met is None else ("ok" if goal.met else "OVER")
        lines.append(f"{goal.name:<76} {goal.measured:<28} {verdict}")
    return "\n".join(lines)
