"""Turn the measured runs into tables: plain text for the terminal, markdown for the README, JSON for the record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench import telemetry
from bench.figures import (
    CACHE,
    LIMITS,
    TRANSLATED,
    AddedCost,
    Comparison,
    LimitsCheck,
    RunFigures,
    UsageCheck,
    added_cost,
    limits_checks,
)

__all__ = ["error_banner", "markdown", "text_report", "to_json"]

_DASH = "-"
_NOISY_BACKGROUND_PCT = 20.0
_MIN_NOISE_SECONDS = 0.05


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return _DASH if value is None else f"{value:.{digits}f}{suffix}"


def _signed(value: float | None, digits: int = 2) -> str:
    # Adding 0.0 turns a rounded -0.0 into 0.0, so a zero difference shows as +0.000, not -0.000.
    return _DASH if value is None else f"{round(value, digits) + 0.0:+.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align_left: int = 1) -> list[str]:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.ljust(widths[i]) if i < align_left else cell.rjust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _scenario_title(scenario: str, chunks: int) -> str:
    return "non-streaming" if scenario == "plain" else f"streaming, {chunks} chunks"


def _run_rows(runs: Sequence[RunFigures], stream: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    for run in runs:
        row = [
            run.target,
            str(run.concurrency),
            str(run.requests),
            f"{run.rps:.0f}",
            _f(run.p50_ms),
            _f(run.p99_ms),
        ]
        if stream:
            row.append(_f(run.ttft_p50_ms))
        row.append(_f(run.cpu_per_request_ms, 3))
        if stream:
            row.append(_f(run.cpu_per_chunk_us, 1))
        row += [
            _f(run.upstream_cpu_per_request_ms, 3),
            _f(run.client_cpu_per_request_ms, 3),
            f"{run.background_cpu_pct:.0f}",
            str(run.errors + run.warmup_errors) + (" !!" if run.errors + run.warmup_errors else ""),
        ]
        rows.append(row)
    return rows


def _comparison_rows(comparisons: Sequence[Comparison], stream: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    for c in comparisons:
        row = [c.target, str(c.concurrency), _signed(c.added_p50_ms), _signed(c.added_p99_ms)]
        if stream:
            row.append(_signed(c.added_ttft_ms))
        row += [_f(c.cpu_per_request_ms, 3), _f(c.cpu_per_request_vs_floor, 2, "x")]
        if stream:
            row += [
                _f(c.cpu_per_chunk_us, 1),
                _f(c.cpu_per_chunk_vs_floor, 2, "x"),
                _f(c.marginal_chunk_us, 1),
                _f(c.marginal_chunk_vs_floor, 2, "x"),
            ]
        rows.append(row)
    return rows


def _service_names(costs: Sequence[AddedCost]) -> list[str]:
    names: dict[str, None] = {}
    for cost in costs:
        names.update(dict.fromkeys(cost.services_cpu_per_request_ms))
    return list(names)


def _added_cost_rows(costs: Sequence[AddedCost], names: Sequence[str], with_target: bool = False) -> list[list[str]]:
    return [
        [
            *([cost.target] if with_target else []),
            cost.scenario,
            str(cost.concurrency),
            _signed(cost.added_p50_ms),
            _f(cost.cpu_per_request_ms, 3),
            _signed(cost.added_cpu_per_request_ms, 3),
            *(_f(cost.services_cpu_per_request_ms.get(name), 3) for name in names),
        ]
        for cost in costs
    ]


def _added_cost_lines(costs: Sequence[AddedCost], usage: UsageCheck | None) -> list[str]:
    names = _service_names(costs)
    header = ["mode", "c", "+p50 ms", "CPU/req ms", "+CPU/req ms", *(f"{name} CPU/req ms" for name in names)]
    lines = ["== auth + stats: secured against tollgate (gateway CPU; the servers' CPU apart) =="]
    lines += _table(header, _added_cost_rows(costs, names))
    lines.append(
        "servers' CPU is measured until the stats server has stored every record of the run (batched inserts)."
    )
    if usage is not None:
        lines.append(usage.line() + ("" if usage.ok else "  !!! MISMATCH"))
    lines.append("")
    return lines


_LIMITS_RULES = (
    "every request is checked and settled against a global requests + tokens limit and a per-model concurrency "
    "limit, none ever reached (no spend budget: it needs auth and prices)."
)
_REDIS_NOTE = (
    "Redis's own CPU is not ours to measure (a shared server): redis-server CPU/req, when shown, is the whole local "
    "server's while the run lasted, anyone else's work included."
)


def _limits_lines(costs: Sequence[AddedCost], checks: Sequence[LimitsCheck]) -> list[str]:
    names = _service_names(costs)
    header = ["target", "mode", "c", "+p50 ms", "CPU/req ms", "+CPU/req ms", *(f"{name} CPU/req ms" for name in names)]
    lines = ["== limits: against tollgate (gateway CPU; redis-server's apart) =="]
    lines += _table(header, _added_cost_rows(costs, names, with_target=True))
    lines += [_LIMITS_RULES]
    lines += [_REDIS_NOTE] if any(cost.target != LIMITS[0] for cost in costs) else []
    lines += [check.line() + ("" if check.ok else "  !!! FAILED") for check in checks]
    lines.append("")
    return lines


def _cache_lines(costs: Sequence[AddedCost], runs: Sequence[RunFigures]) -> list[str]:
    names = _service_names(costs)
    header = ["target", "mode", "c", "+p50 ms", "CPU/req ms", "+CPU/req ms", *(f"{name} CPU/req ms" for name in names)]
    lines = ["== response cache: every request a hit, against tollgate going upstream (negative: saved) =="]
    lines += _table(header, _added_cost_rows(costs, names, with_target=True))
    samples = sorted({str(v) for run in runs if run.target in CACHE for v in run.header_samples})
    seen = ", ".join(samples) or "none"
    lines += [f"x-tollgate-cache on the first answers (warm-up refreshes: miss; measured: hit): {seen}", ""]
    return lines


def _translation_lines(costs: Sequence[AddedCost], chunks: int) -> list[str]:
    """The translation's cost: the translated target's CPU against plain tollgate's, per request and per chunk."""
    header = ["target", "mode", "c", "+p50 ms", "CPU/req ms", "+CPU/req ms", "+CPU/chunk µs"]
    rows = []
    for cost in costs:
        per_chunk = None
        if cost.scenario == "stream" and cost.added_cpu_per_request_ms is not None and chunks:
            per_chunk = cost.added_cpu_per_request_ms * 1000 / chunks
        row = _added_cost_rows([cost], [], with_target=True)[0]
        rows.append([*row, _signed(per_chunk, 1)])
    lines = ["== translation: OpenAI client -> Anthropic backend, against tollgate -> OpenAI backend =="]
    lines += _table(header, rows)
    lines += ["+CPU/chunk = +CPU/req / chunks on streams: the translation's cost per streamed chunk.", ""]
    return lines


def text_report(
    runs: Sequence[RunFigures],
    comparisons: Sequence[Comparison],
    peak_rss: dict[str, int],
    meta: dict[str, Any],
    usage: UsageCheck | None = None,
) -> str:
    """The full terminal report."""
    lines = [
        f"tollgate bench: {meta['cpus']} CPUs, Python {meta['python']}, {meta['chunks']} chunks a stream, "
        f"CPU clock tick {meta['clock_tick_ms']:.0f} ms",
        "CPU figures are the gateway process(es) only (split: engine + front door summed; secured: the gateway, not",
        "its auth and stats servers; limits-redis: not Redis); 'up' is the fake upstream, 'client' the load generator,",
        "'bg' what everything else on the machine used meanwhile (% of one core).",
        "Latencies are client-side wall time. Each CPU reading is +-1 clock tick.",
        f"load average at start: {meta['loadavg_at_start'][0]:.2f}",
        *(f"skipped {name}: {why}" for name, why in meta.get("skipped", {}).items()),
        "",
    ]
    for scenario in ("plain", "stream"):
        chosen = [run for run in runs if run.scenario == scenario]
        if not chosen:
            continue
        stream = scenario == "stream"
        header = ["target", "c", "requests", "req/s", "p50 ms", "p99 ms"]
        header += ["TTFT p50 ms"] if stream else []
        header += ["CPU/req ms", *(["CPU/chunk µs"] if stream else [])]
        header += ["up CPU/req", "client CPU/req", "bg CPU %", "errors"]
        lines.append(f"== {_scenario_title(scenario, chosen[0].chunks)} ==")
        lines += _table(header, _run_rows(chosen, stream))
        lines.append("")
    for scenario in ("plain", "stream"):
        chosen_c = [c for c in comparisons if c.scenario == scenario]
        if not chosen_c:
            continue
        stream = scenario == "stream"
        header = ["target", "c", "+p50 ms", "+p99 ms"] + (["+TTFT ms"] if stream else [])
        header += ["CPU/req ms", "vs floor"]
        header += ["CPU/chunk µs", "vs floor", "marginal/chunk µs", "vs floor"] if stream else []
        lines.append(f"== overhead, {_scenario_title(scenario, meta['chunks'])}: latency vs direct, CPU vs floor ==")
        lines += _table(header, _comparison_rows(chosen_c, stream))
        lines.append("")
    if any(c.scenario == "stream" for c in comparisons):
        lines.append("marginal/chunk = (stream CPU/req - non-stream CPU/req) / chunks, at the same concurrency.")
        lines.append("")
    costs = added_cost(runs)
    if costs:
        lines += _added_cost_lines(costs, usage)
    limit_costs = added_cost(runs, LIMITS)
    if limit_costs:
        lines += _limits_lines(limit_costs, limits_checks(runs))
    cache_costs = added_cost(runs, CACHE)
    if cache_costs:
        lines += _cache_lines(cache_costs, runs)
    if translated := added_cost(runs, TRANSLATED):
        lines += _translation_lines(translated, int(meta["chunks"]))
    telemetry_costs = added_cost(runs, telemetry.TARGETS)
    if telemetry_costs:
        header = ["target", "mode", "c", "+p50 ms", "CPU/req ms", "+CPU/req ms"]
        lines += ["== telemetry: against tollgate (gateway CPU) =="]
        lines += _table(header, _added_cost_rows(telemetry_costs, (), with_target=True))
        lines += [telemetry.NOTE, ""]
    noisy = [
        run
        for run in runs
        if run.background_cpu_pct > _NOISY_BACKGROUND_PCT
        and run.background_cpu_pct * run.wall_s / 100 > _MIN_NOISE_SECONDS  # not just a clock tick or two
    ]
    if noisy:
        lines.append(
            f"NOTE: other work used more than {_NOISY_BACKGROUND_PCT:.0f}% of a core during {len(noisy)} of "
            f"{len(runs)} runs (bg CPU column): req/s and latency are skewed there; CPU/req much less so."
        )
        lines.append("")
    lines.append("== peak RSS (VmHWM) ==")
    lines += _table(["process", "MiB"], [[name, f"{kib / 1024:.1f}"] for name, kib in peak_rss.items()])
    return "\n".join(lines)


def markdown(runs: Sequence[RunFigures], comparisons: Sequence[Comparison], meta: dict[str, Any]) -> str:
    """A compact markdown table for the README."""
    by_key = {(c.target, c.scenario, c.concurrency): c for c in comparisons}
    lines = [
        f"Measured by `make bench` on {meta['cpus']} cores against a local fake upstream "
        f"({meta['chunks']}-chunk streams, no upstream delay). CPU is the gateway's own; "
        "the floor is a bare aiohttp+orjson passthrough proxy.",
        "",
        "| target | mode | c | req/s | p50 ms | +p50 vs direct | p99 ms | TTFT p50 ms | CPU/req ms | CPU vs floor |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        comp = by_key.get((run.target, run.scenario, run.concurrency))
        mode = "plain" if run.scenario == "plain" else f"stream ({run.chunks})"
        cells = [
            run.target,
            mode,
            str(run.concurrency),
            f"{run.rps:.0f}",
            _f(run.p50_ms),
            _signed(comp.added_p50_ms) if comp else _DASH,
            _f(run.p99_ms),
            _f(run.ttft_p50_ms),
            _f(run.cpu_per_request_ms, 3),
            _f(comp.cpu_per_request_vs_floor, 2, "x") if comp else _DASH,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    costs = added_cost(runs)
    if costs:
        intro = (
            "Auth + stats: `secured` (tollgate with the reference auth and stats servers) against `tollgate`. "
            "CPU/req is the gateway process; the servers' CPU is their own."
        )
        lines += ["", *_added_cost_markdown(costs, intro)]
    limit_costs = added_cost(runs, LIMITS)
    if limit_costs:
        intro = (
            "Rate limits: `limits` (in memory) and `limits-redis` against `tollgate`: " + _LIMITS_RULES + " CPU/req "
            "is the gateway process. " + _REDIS_NOTE
        )
        lines += ["", *_added_cost_markdown(limit_costs, intro, with_target=True)]
    telemetry_costs = added_cost(runs, telemetry.TARGETS)
    if telemetry_costs:
        lines += ["", *_added_cost_markdown(telemetry_costs, telemetry.NOTE, with_target=True)]
    return "\n".join(lines)


def _added_cost_markdown(costs: Sequence[AddedCost], intro: str, with_target: bool = False) -> list[str]:
    names = _service_names(costs)
    header = [
        *(["target"] if with_target else []),
        "mode",
        "c",
        "+p50 vs tollgate",
        "CPU/req ms",
        "+CPU/req vs tollgate",
        *(f"{n} CPU/req ms" for n in names),
    ]
    left = 2 if with_target else 1  # columns of names; the rest are figures
    lines = [intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * left + "--:|" * (len(header) - left)]
    lines += ["| " + " | ".join(row) + " |" for row in _added_cost_rows(costs, names, with_target)]
    return lines


def error_banner(runs: Sequence[RunFigures], usage: UsageCheck | None = None) -> str | None:
    """A loud message when any run saw an error, usage records went missing (or were doubled), or a limits target's
    answers lacked their headers or were refused; else None."""
    bad = [run for run in runs if run.errors or run.warmup_errors]
    lost = usage is not None and not usage.ok
    failed_limits = [check for check in limits_checks(runs) if not check.ok]
    if not bad and not lost and not failed_limits:
        return None
    total = sum(run.errors + run.warmup_errors for run in bad)
    lines = ["!" * 100]
    if bad:
        lines.append(f"!!! {total} ERRORS: these figures are not valid")
    if usage is not None and lost:
        lines.append(f"!!! USAGE RECORDS LOST OR COUNTED TWICE by the secured target: {usage.line()}")
    lines += [f"!!! LIMITS CHECK FAILED: {check.line()}" for check in failed_limits]
    lines.append("!" * 100)
    for run in bad:
        lines.append(
            f"!!! {run.target} {run.scenario} c={run.concurrency}: {run.errors} errors "
            f"(+{run.warmup_errors} in warm-up), e.g.:"
        )
        lines += [f"!!!     {sample}" for sample in run.error_samples]
    if bad:
        lines.append("!" * 100)
    return "\n".join(lines)


def to_json(
    runs: Sequence[RunFigures],
    comparisons: Sequence[Comparison],
    peak_rss: dict[str, int],
    meta: dict[str, Any],
    usage: UsageCheck | None = None,
) -> dict[str, Any]:
    """Everything, raw, for `--json`."""
    return {
        "meta": meta,
        "runs": [asdict(run) for run in runs],
        "comparisons": [asdict(c) for c in comparisons],
        "secured_vs_tollgate": [asdict(cost) for cost in added_cost(runs)],
        "limits_vs_tollgate": [asdict(cost) for cost in added_cost(runs, LIMITS)],
        "cache_vs_tollgate": [asdict(cost) for cost in added_cost(runs, CACHE)],
        "usage_records": None if usage is None else {**asdict(usage), "ok": usage.ok},
        "limits_checks": [{**asdict(check), "ok": check.ok} for check in limits_checks(runs)],
        "peak_rss_kib": peak_rss,
    }
