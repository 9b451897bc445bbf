"""Before and after in one sitting: `tollgate serve` from two source trees side by side, with the floor, on one fake
upstream, measured in alternating order: `python -m bench.ab --base /path/to/main/checkout`.

Each round runs every scenario and concurrency against the floor, `A` (the `--base` tree) and `B` (this tree), in
the order floor, A, B on even rounds and floor, B, A on odd ones, so that a machine getting busier or quieter during
the sitting favours neither. CPU per request is the process's own (`/proc/PID/stat`); at concurrency 1 the fake
upstream is measured too, for the added p50 latency of each target. The base tree needs no install of its own: it
runs on this tree's interpreter with its own directory first on the path (`git archive main | tar -x -C DIR` makes
one without touching the checkout).

    python -m bench.ab --base /tmp/main --rounds 3 --concurrency 1,10,50
    python -m bench.ab --base /tmp/main --scenarios stream --concurrency 200 --chunks 50 --chunk-delay 0.02 \\
        --latency 0.1 --stream-requests 1000        # realistic streams
    python -m bench.ab --base /tmp/main --split --scenarios plain --concurrency 50 --rounds 6  # split mode

With `--split`, each tree runs as `tollgate engine` and `tollgate frontdoor` (its CPU is both processes', and the
report gives each process's median too).

A is started first, and on this machine the gateway started first measures 6-13% lower with the same code (A/A
sittings; docs/benchmarks.md, Round 7): run a comparison both ways before believing a few per cent.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.load import Endpoint, Scenario, make_session, percentile, request_headers, run_load
from bench.procs import GRPC_READY, HTTP_READY, URL_READY, Service, cpu_seconds, start_service, stop_all
from bench.targets import tollgate_config

_HOST = "127.0.0.1"
_HERE = Path(__file__).resolve().parent.parent
_WARMUP = 100


@dataclass(frozen=True)
class Sitting:
    """What one sitting measures."""

    rounds: int
    scenarios: tuple[str, ...]
    concurrency: tuple[int, ...]
    plain_requests: int
    stream_requests: int
    chunks: int


@dataclass(frozen=True)
class Sample:
    """One run: CPU milliseconds per request of the target's process, and the p50 latency in milliseconds."""

    cpu_ms: float
    p50_ms: float
    errors: int
    by_process: tuple[float, ...] = ()  # the same, each process's (split mode: the engine's, then the front door's)


Key = tuple[str, int, str]  # scenario, concurrency, target


def _python(*args: str) -> list[str]:
    return [str(_HERE / ".venv" / "bin" / "python"), *args]


def _gateway(name: str, tree: Path, config_path: Path, split: bool, log_dir: Path, services: list[Service]) -> str:
    """One tree's gateway, started (in split mode its engine, then its front door): its URL."""
    config = ["--config", str(config_path)]
    if not split:
        serve = _python("-m", "gateway", "serve", *config, "--http", f"{_HOST}:0", "--grpc", f"{_HOST}:0")
        services.append(start_service(name, serve, log_dir, tree))
    else:
        engine = start_service(
            f"{name}-engine", _python("-m", "gateway", "engine", *config, "--grpc", f"{_HOST}:0"), log_dir, tree
        )
        services.append(engine)
        port = engine.wait_for(GRPC_READY)[1]
        door = _python("-m", "gateway", "frontdoor", *config, "--http", f"{_HOST}:0", "--engine", f"{_HOST}:{port}")
        services.append(start_service(f"{name}-frontdoor", door, log_dir, tree))
    return f"http://{_HOST}:{services[-1].wait_for(HTTP_READY)[1]}/v1"


def _start(
    base: Path, args: argparse.Namespace, log_dir: Path, services: list[Service]
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The upstream, the floor and both gateways, started; their URLs and PIDs by target name."""
    fake = ["-m", "gateway.testing.fake_openai", "--host", _HOST, "--port", "0", "--chunks", str(args.chunks)]
    delays = ["--chunk-delay", str(args.chunk_delay), "--latency", str(args.latency)]
    upstream = start_service("upstream", _python(*fake, *delays), log_dir, _HERE)
    services.append(upstream)
    base_url = upstream.wait_for(URL_READY)[1]
    config = tollgate_config(base_url)
    config["backends"][0]["max_connections"] = args.pool
    config_path = log_dir / "ab.yaml"
    config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
    floor_argv = ["-m", "bench.floor_proxy", "--upstream", base_url, "--host", _HOST, "--port", "0"]
    floor = start_service("floor", _python(*floor_argv, "--max-connections", str(args.pool)), log_dir, _HERE)
    services.append(floor)
    urls: dict[str, str] = {"direct": base_url, "floor": floor.wait_for(URL_READY)[1]}
    pids: dict[str, tuple[int, ...]] = {"direct": (upstream.pid,), "floor": (floor.pid,)}
    for name, tree in (("A", base), ("B", _HERE)):
        first = len(services)
        urls[name] = _gateway(name, tree, config_path, args.split, log_dir, services)
        pids[name] = tuple(service.pid for service in services[first:])
    return urls, pids


def _cpu(pids: tuple[int, ...]) -> list[float]:
    return [cpu_seconds(pid) for pid in pids]


async def _run(
    sitting: Sitting, urls: dict[str, str], pids: dict[str, tuple[int, ...]], pool: int
) -> dict[Key, list[Sample]]:
    session = make_session(pool)
    headers = request_headers("bench")
    samples: dict[Key, list[Sample]] = {}
    try:
        for round_no in range(sitting.rounds):
            order = ["floor", "A", "B"] if round_no % 2 == 0 else ["floor", "B", "A"]
            for name in sitting.scenarios:
                stream = name == "stream"
                scenario = Scenario(name, stream, sitting.chunks)
                for concurrency in sitting.concurrency:
                    total = sitting.stream_requests if stream else sitting.plain_requests
                    requests = max(1, total // 4) if concurrency == 1 else total
                    for target in (["direct"] if concurrency == 1 else []) + order:
                        endpoint = Endpoint(f"{urls[target]}/chat/completions", headers)
                        await run_load(session, endpoint, scenario, min(_WARMUP, requests), min(concurrency, _WARMUP))
                        before = _cpu(pids[target])
                        result = await run_load(session, endpoint, scenario, requests, concurrency)
                        spent = tuple(
                            (a - b) * 1000 / requests for a, b in zip(_cpu(pids[target]), before, strict=True)
                        )
                        cpu_ms = sum(spent)
                        latencies = sorted(result.latencies)
                        p50 = percentile(latencies, 0.5) * 1000 if latencies else float("nan")
                        samples.setdefault((name, concurrency, target), []).append(
                            Sample(cpu_ms, p50, result.errors, spent)
                        )
                        print(
                            f"round {round_no} {name:6} c={concurrency:<3} {target:6} CPU/req {cpu_ms:.3f} ms"
                            f"  p50 {p50:.2f} ms  errors {result.errors}",
                            flush=True,
                        )
    finally:
        await session.close()
    return samples


def report(samples: dict[Key, list[Sample]], sitting: Sitting) -> str:
    """Each target's CPU per request in every round, the medians' ratios to the floor, and the added p50 at c=1."""
    lines = ["scenario  c  target  CPU ms/request by round  median  vs floor"]
    for name in sitting.scenarios:
        for concurrency in sitting.concurrency:
            floor = statistics.median(s.cpu_ms for s in samples[(name, concurrency, "floor")])
            for target in ("floor", "A", "B"):
                runs = samples[(name, concurrency, target)]
                median = statistics.median(s.cpu_ms for s in runs)
                by_round = " / ".join(f"{s.cpu_ms:.3f}" for s in runs)
                lines.append(f"{name:8} {concurrency:3} {target:6}  {by_round}  {median:.3f}  {median / floor:.2f}x")
                if len(runs[0].by_process) > 1:  # split: where it went
                    parts = zip(*(s.by_process for s in runs), strict=True)
                    medians = " + ".join(f"{statistics.median(part):.3f}" for part in parts)
                    lines.append(f"{'':8} {'':3} {target:6}  by process (engine + front door), medians: {medians}")
            if concurrency == 1:
                direct = statistics.median(s.p50_ms for s in samples[(name, 1, "direct")])
                for target in ("floor", "A", "B"):
                    added = statistics.median(s.p50_ms for s in samples[(name, 1, target)]) - direct
                    lines.append(f"{'':8} {'':3} {target:6}  +p50 over a direct call {added:.3f} ms")
    errors = sum(s.errors for runs in samples.values() for s in runs)
    lines.append(f"errors: {errors}")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", type=Path, required=True, help="the source tree measured as A (before)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", default="plain,stream", help="plain,stream (default both)")
    parser.add_argument("--concurrency", default="10", help="a comma-separated list (default 10)")
    parser.add_argument("--plain-requests", type=int, default=3000, help="measured plain requests a run")
    parser.add_argument("--stream-requests", type=int, default=1500, help="measured streams a run")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks a stream (default 20)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks upstream")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the upstream's first byte")
    parser.add_argument("--pool", type=int, default=600, help="connections per client and upstream pool")
    parser.add_argument("--split", action="store_true", help="each tree as an engine and a front door over gRPC")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sitting and print its report; exit 1 when any request failed."""
    args = _parse_args(argv)
    sitting = Sitting(
        rounds=args.rounds,
        scenarios=tuple(args.scenarios.split(",")),
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        plain_requests=args.plain_requests,
        stream_requests=args.stream_requests,
        chunks=args.chunks,
    )
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-ab-") as log_dir:
        try:
            urls, pids = _start(args.base.resolve(), args, Path(log_dir), services)
            samples = asyncio.run(_run(sitting, urls, pids, args.pool))
        finally:
            stop_all(services)
    print(report(samples, sitting))
    return 1 if any(s.errors for runs in samples.values() for s in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
