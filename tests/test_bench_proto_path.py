"""`make bench`'s issue-18 table: each goal computed from the runs' figures, with its verdict."""

from __future__ import annotations

from bench.figures import RunFigures
from bench.grpc_direct import GrpcFigures
from bench.proto_path import goals, table
from bench.realistic import RealisticFigures


def run(target: str, scenario: str, concurrency: int, cpu: float | None, p50: float = 1.0) -> RunFigures:
    return RunFigures(
        target=target,
        scenario=scenario,
        concurrency=concurrency,
        requests=100,
        chunks=20,
        errors=0,
        warmup_errors=0,
        error_samples=[],
        wall_s=1.0,
        rps=100.0,
        p50_ms=p50,
        p99_ms=p50 * 2,
        ttft_p50_ms=None,
        gateway_cpu_s=None if cpu is None else cpu / 10,
        cpu_per_request_ms=cpu,
        cpu_per_chunk_us=None,
        upstream_cpu_per_request_ms=0.0,
        client_cpu_per_request_ms=0.0,
    )


def realistic(target: str, per_s: float, p50: float, p99: float, rest: float, flight: float) -> RealisticFigures:
    return RealisticFigures(
        target=target,
        streams=1000,
        concurrency=500,
        errors=0,
        streams_per_s=per_s,
        ttft_p50_ms=p50,
        ttft_p99_ms=p99,
        cpu_per_stream_ms=None if target == "direct" else 2.0,
        in_flight=1000,
        rss_rest_mib={} if target == "direct" else {target: rest},
        rss_in_flight_mib={} if target == "direct" else {target: flight},
    )


RUNS = [
    run("direct", "plain", 1, None, p50=1.0),
    run("floor", "plain", 1, 0.3, p50=1.2),
    run("tollgate", "plain", 1, 0.4, p50=1.3),
    run("floor", "plain", 50, 0.2),
    run("tollgate", "plain", 50, 0.4),
    run("split", "plain", 50, 0.5),
    run("floor", "stream", 50, 1.0),
    run("tollgate", "stream", 50, 1.2),
    run("split", "stream", 50, 2.4),
]
GRPC = [GrpcFigures("batches", 50, 100, 0, 1.0, 1.1)]
REAL = [
    realistic("direct", 400, 110, 160, 0, 0),
    realistic("floor", 360, 200, 300, 40, 60),
    realistic("tollgate", 300, 300, 500, 70, 145),
    realistic("split", 280, 320, 600, 75, 130),
    realistic("workers-2", 370, 135, 200, 85, 100),
]


def test_each_goal_is_judged_on_its_ratio() -> None:
    verdicts = {goal.name: (goal.measured, goal.met) for goal in goals(RUNS, GRPC, REAL)}
    assert verdicts["split CPU / plain request <= 1.5x one process (c=50)"] == ("0.500 / 0.400 = 1.25x", True)
    assert verdicts["split CPU / stream <= 1.5x one process (c=50)"] == ("2.400 / 1.200 = 2.00x", False)
    assert verdicts["one process CPU / plain request <= 1.5x floor (c=50)"][1] is False  # 2.0x
    assert verdicts["one process CPU / stream <= 1.3x floor (c=50)"][1] is True  # 1.2x
    assert verdicts["gRPC client (batches): engine CPU / stream <= one process over HTTP (c=50)"][1] is True
    # The two latency goals show the floor's own figure from the same run beside tollgate's.
    assert verdicts["one process: added p50 at c=1 <= 0.4 ms"] == ("0.30 ms (the floor's 0.20)", True)
    assert verdicts["split realistic streams/s >= 0.9x one process"] == ("280 / 300 = 0.93x", True)
    assert verdicts["split realistic TTFT p99 <= one process + 50 ms"] == ("+100 ms", False)
    assert verdicts["--workers 2: streams/s >= the floor's"][1] is True
    assert verdicts["--workers 2: TTFT p50 <= direct + 30 ms"] == ("+25 ms (the floor's +90)", True)
    assert verdicts["workers-2: RSS per process at rest <= 80 MB"] == ("89 MB", False)
    assert verdicts["split: RSS per process with 1000 streams in flight <= 150 MB"] == ("136 MB", True)
    # The goals are in MB: 145 MiB of VmRSS is 152 MB, over 150.
    assert verdicts["tollgate: RSS per process with 1000 streams in flight <= 150 MB"] == ("152 MB", False)


def test_a_goal_without_its_figures_is_not_judged() -> None:
    only_split = [run("split", "plain", 50, 0.5)]
    verdicts = {goal.name: goal for goal in goals(only_split, [], [])}
    goal = verdicts["split CPU / plain request <= 1.5x one process (c=50)"]
    assert goal.met is None and goal.measured == "not measured"


def test_the_table_has_a_row_per_measured_target() -> None:
    lines = table(RUNS, GRPC, REAL, 20).splitlines()
    assert lines[0].startswith("| | plain c=50 req/s")
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines[2:]]
    assert rows == [
        "direct to the mock",
        "bare aiohttp passthrough (the floor)",
        "tollgate, one process",
        "tollgate split (front door + engine over gRPC)",
        "gRPC client of the engine, in batches (engine CPU)",
        "tollgate serve --workers 2",
    ]
    split = next(line for line in lines if line.startswith("| tollgate split"))
    assert "| 2.40 |" in split and "| 320 / 600 |" in split


def test_the_cpu_goals_are_judged_on_the_medians_of_the_rounds() -> None:
    rounds = [
        run("floor", "plain", 50, 0.20),
        run("tollgate", "plain", 50, 0.28),
        run("split", "plain", 50, 0.40),
        run("split", "plain", 50, 0.44),
        run("tollgate", "plain", 50, 0.29),
        run("floor", "plain", 50, 0.19),
        run("floor", "plain", 50, 0.30),  # one noisy round of the floor is outvoted
        run("tollgate", "plain", 50, 0.40),
        run("split", "plain", 50, 0.42),
    ]
    verdicts = {goal.name: (goal.measured, goal.met) for goal in goals(RUNS, GRPC, REAL, rounds)}
    assert verdicts["one process CPU / plain request <= 1.5x floor (c=50)"] == ("0.290 / 0.200 = 1.45x", True)
    assert verdicts["split CPU / plain request <= 1.5x one process (c=50)"] == ("0.420 / 0.290 = 1.45x", True)
    # No stream in the rounds: nothing to judge the stream goals on, rather than the main runs' single figures.
    assert verdicts["one process CPU / stream <= 1.3x floor (c=50)"][1] is None
