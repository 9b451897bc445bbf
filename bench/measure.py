"""One measured run of a target: a warm-up, then a closed-loop load (bench.load) bracketed by /proc CPU readings of
the gateway's processes, of the servers it calls (apart) and of the whole machine, and the figures they make."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import ClientSession

from bench import figures
from bench.load import LoadResult, Scenario, make_session, percentile, run_load
from bench.procs import Service, cpu_seconds, peak_rss_kib, system_busy_seconds
from bench.targets import Target

__all__ = ["SETTLE_TIMEOUT", "RunSizes", "measure_each"]

SETTLE_TIMEOUT = 10.0  # seconds to wait for the stats server to have stored every record sent so far


class RunSizes(Protocol):
    """How many requests a run sends: a warm-up, then the measured ones at a concurrency."""

    @property
    def warmup(self) -> int: ...

    def requests_at(self, concurrency: int) -> int: ...


@dataclass
class _Snapshot:
    gateway: float = 0.0
    upstream: float = 0.0
    client: float = 0.0
    system: float = 0.0  # the whole machine's busy CPU time
    side: dict[str, float] = field(default_factory=dict)  # by side service name, and external process name


def _snapshot(target: Target, upstream: Service) -> _Snapshot:
    return _Snapshot(
        gateway=sum(cpu_seconds(service.pid) for service in target.services),
        upstream=cpu_seconds(upstream.pid),
        client=time.process_time(),
        system=system_busy_seconds(),
        side={service.name: cpu_seconds(service.pid) for service in target.side_services}
        | {name: _external_cpu(name, pid) for name, pid in target.external.items()},
    )


def _external_cpu(name: str, pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError as exc:  # not ours: it may have been restarted
        raise RuntimeError(f"{name} (pid {pid}) can no longer be read: {exc}") from exc


@dataclass
class _Used:
    """What one measured run cost, in CPU seconds, and how busy the rest of the machine was meanwhile."""

    gateway: float
    side: dict[str, float]
    upstream: float
    client: float
    background_pct: float  # in % of one core


def _used(before: _Snapshot, after: _Snapshot, settled: _Snapshot, wall: float) -> _Used:
    """CPU from `before` to `after`, but the gateway's and side servers' until `settled`: usage batches leave late."""
    ours = sum(after.side.values()) - sum(before.side.values())
    ours += (after.gateway - before.gateway) + (after.upstream - before.upstream) + (after.client - before.client)
    # Noise: other work, the kernel, steal.
    background = max(0.0, after.system - before.system - ours) * 100 / wall if wall > 0 else 0.0
    return _Used(
        gateway=settled.gateway - before.gateway,
        side={name: settled.side[name] - before.side[name] for name in before.side},
        upstream=after.upstream - before.upstream,
        client=after.client - before.client,
        background_pct=background,
    )


def _check_alive(services: Sequence[Service]) -> None:
    for service in services:
        if service.proc is None or service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} died during the benchmark:\n{service.log_tail()}")


def _figures(
    target: Target, scenario: Scenario, concurrency: int, result: LoadResult, warmup: LoadResult, used: _Used
) -> figures.RunFigures:
    latencies = sorted(result.latencies)
    ttfts = sorted(result.ttfts)
    n = result.requests
    gateway_cpu = used.gateway if target.services else None
    per_request = None if gateway_cpu is None else gateway_cpu * 1000 / n
    per_chunk = per_request * 1000 / scenario.chunks if per_request is not None and scenario.stream else None
    return figures.RunFigures(
        target=target.name,
        scenario=scenario.name,
        concurrency=concurrency,
        requests=n,
        chunks=scenario.chunks,
        errors=result.errors,
        warmup_errors=warmup.errors,
        error_samples=(warmup.error_samples + result.error_samples)[:5],
        wall_s=result.wall,
        rps=n / result.wall if result.wall > 0 else 0.0,
        p50_ms=percentile(latencies, 0.5) * 1000 if latencies else None,
        p99_ms=percentile(latencies, 0.99) * 1000 if latencies else None,
        ttft_p50_ms=percentile(ttfts, 0.5) * 1000 if ttfts else None,
        gateway_cpu_s=gateway_cpu,
        cpu_per_request_ms=per_request,
        cpu_per_chunk_us=per_chunk,
        upstream_cpu_per_request_ms=used.upstream * 1000 / n,
        client_cpu_per_request_ms=used.client * 1000 / n,
        peak_rss_kib={service.name: peak_rss_kib(service.pid) for service in target.services + target.side_services},
        background_cpu_pct=used.background_pct,
        services_cpu_per_request_ms={name: seconds * 1000 / n for name, seconds in used.side.items()},
        statuses=_statuses(warmup, result),
        header_samples=warmup.header_values + result.header_values,
    )


def _statuses(*results: LoadResult) -> dict[str, int]:
    """Answers other than 200 by status, over `results`."""
    counts: dict[str, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            counts[str(status)] = counts.get(str(status), 0) + count
    return counts


def _progress(run: figures.RunFigures) -> None:
    cpu = "" if run.cpu_per_request_ms is None else f"  CPU/req {run.cpu_per_request_ms:.3f} ms"
    cpu += "".join(f"  {name} {ms:.3f} ms" for name, ms in run.services_cpu_per_request_ms.items())
    ttft = "" if run.ttft_p50_ms is None else f"  TTFT {run.ttft_p50_ms:.2f} ms"
    errors = run.errors + run.warmup_errors
    print(
        f"  {run.target:<12} {run.scenario:<6} c={run.concurrency:<3} {run.requests:>5} req in {run.wall_s:5.1f}s"
        f"  {run.rps:7.0f} req/s  p50 {_ms(run.p50_ms)}  p99 {_ms(run.p99_ms)}{ttft}{cpu}"
        + (f"  !!! {errors} ERRORS" if errors else ""),
        file=sys.stderr,
        flush=True,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


async def _settle(target: Target, sent: int) -> None:
    """Count `sent` more requests to a target with a stats server, and wait until each one's record is stored."""
    if target.accounting is None:
        return
    target.accounting.sent += sent
    if not await target.accounting.settle(SETTLE_TIMEOUT):
        stored, expected = target.accounting.stored(), target.accounting.sent
        print(
            f"  {target.name}: {stored} of {expected} usage records stored after {SETTLE_TIMEOUT:.0f}s",
            file=sys.stderr,
        )


async def _measure_one(
    session: ClientSession, sizes: RunSizes, upstream: Service, target: Target, scenario: Scenario, concurrency: int
) -> figures.RunFigures:
    """A warm-up, then one measured run bracketed by CPU readings (with a stats server: until its records are in)."""
    endpoint = target.endpoint
    warm_n = max(sizes.warmup, 2 * concurrency) if sizes.warmup else 0
    warm = await run_load(session, target.warmup_endpoint, scenario, warm_n, concurrency)
    await _settle(target, warm.requests)  # the warm-up's records must not be stored during the measured run
    marks: list[_Snapshot] = []
    n = sizes.requests_at(concurrency)
    result = await run_load(
        session, endpoint, scenario, n, concurrency, lambda: marks.append(_snapshot(target, upstream))
    )
    after = _snapshot(target, upstream)
    await _settle(target, result.requests)
    settled = after if target.accounting is None else _snapshot(target, upstream)
    _check_alive([upstream, *target.services, *target.side_services])
    return _figures(target, scenario, concurrency, result, warm, _used(marks[0], after, settled, result.wall))


async def measure_each(
    sizes: RunSizes, upstream: Service, runs: Iterable[tuple[Scenario, int, Target]], connections: int
) -> list[figures.RunFigures]:
    """Each (scenario, concurrency, target) of `runs` measured in turn, on one session of `connections`."""
    measured: list[figures.RunFigures] = []
    session = make_session(connections)
    try:
        for scenario, concurrency, target in runs:
            run = await _measure_one(session, sizes, upstream, target, scenario, concurrency)
            _progress(run)
            measured.append(run)
    finally:
        await session.close()
    return measured
