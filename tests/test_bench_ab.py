"""`python -m bench.ab`'s report: every round's CPU per request, the medians against the floor's, and the added p50
at concurrency 1 against the direct call."""

from __future__ import annotations

from bench.ab import Sample, Sitting, report


def test_the_report_gives_each_round_the_median_ratio_and_the_added_latency() -> None:
    sitting = Sitting(rounds=3, scenarios=("plain",), concurrency=(1,), plain_requests=4, stream_requests=4, chunks=20)
    cpu = {"direct": (0.1, 0.1, 0.1), "floor": (0.2, 0.1, 0.3), "A": (0.5, 0.4, 0.6), "B": (0.3, 0.4, 0.2)}
    p50 = {"direct": 1.0, "floor": 1.5, "A": 2.0, "B": 1.25}
    samples = {("plain", 1, name): [Sample(c, p50[name], 0) for c in runs] for name, runs in cpu.items()}
    lines = report(samples, sitting).splitlines()
    assert "plain      1 A       0.500 / 0.400 / 0.600  0.500  2.50x" in lines
    assert "plain      1 B       0.300 / 0.400 / 0.200  0.300  1.50x" in lines
    assert any(line.endswith("B       +p50 over a direct call 0.250 ms") for line in lines)
    assert lines[-1] == "errors: 0"


def test_split_runs_show_each_process_median() -> None:
    sitting = Sitting(rounds=2, scenarios=("plain",), concurrency=(50,), plain_requests=4, stream_requests=4, chunks=20)
    samples = {
        ("plain", 50, "floor"): [Sample(0.2, 1.0, 0, (0.2,)), Sample(0.2, 1.0, 0, (0.2,))],
        ("plain", 50, "A"): [Sample(0.4, 1.0, 0, (0.25, 0.15)), Sample(0.5, 1.0, 0, (0.25, 0.25))],
        ("plain", 50, "B"): [Sample(0.3, 1.0, 0, (0.2, 0.1)), Sample(0.3, 1.0, 0, (0.2, 0.1))],
    }
    lines = report(samples, sitting).splitlines()
    assert "             A       by process (engine + front door), medians: 0.250 + 0.200" in lines
    assert "             B       by process (engine + front door), medians: 0.200 + 0.100" in lines
    assert not any("floor" in line and "by process" in line for line in lines)
