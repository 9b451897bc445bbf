"""`python -m bench.spool_cost` (part of `make bench`): what writing every usage record ahead to the spool costs.

Two measures, each with `stats.write_ahead` on and off:

- **per request**: `tollgate serve` with the reference stats server, non-streaming requests to a fake upstream at
  concurrency 10; the gateway's CPU (from /proc, its own process only) over the run and until the stats server has
  stored every record, divided by the requests. The two configurations run alternately, `--rounds` times each, and
  the medians are compared, so drift on a shared machine touches both alike.
- **per record**: `UsageReporter.submit` alone, in this process, with the stats server down (nothing delivered):
  the cost on a request's own path.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from bench.load import Endpoint, Scenario, make_session, run_load
from bench.procs import HTTP_READY, Service, cpu_seconds, start_service, stop_all
from gateway.config import StatsConfig
from gateway.stats import UsageReporter
from tollgate.stats.v1 import stats_pb2

_CONCURRENCY = 10
_SETTLE = 20.0


def _config(root: Path, upstream: str, stats_port: int, write_ahead: bool) -> Path:
    path = root / f"tollgate-{'on' if write_ahead else 'off'}.yaml"
    path.write_text(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
stats: {{server: "127.0.0.1:{stats_port}", spool_dir: "{root / "spool"}", write_ahead: {str(write_ahead).lower()}}}
backends: [{{name: up, provider: openai, base_url: "{upstream}", api_key: sk-bench}}]
models: [{{name: gpt-4o-mini, targets: [{{backend: up, model: gpt-4o-mini}}]}}]
""")
    return path


def _stored(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)) as conn:
        return int(conn.execute("SELECT count(*) FROM usage").fetchone()[0])


async def _one_round(root: Path, config: Path, db: Path, requests: int, name: str) -> float:
    """CPU milliseconds per request of one gateway run (its records delivered included)."""
    gateway = start_service(name, [sys.executable, "-m", "gateway", "serve", "--config", str(config)], root)
    try:
        port = (await asyncio.to_thread(gateway.wait_for, HTTP_READY)).group(1)
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", {"Content-Type": "application/json"})
        scenario = Scenario("plain", stream=False, chunks=8)
        async with make_session(_CONCURRENCY) as session:
            await run_load(session, endpoint, scenario, max(100, requests // 10), _CONCURRENCY)  # warm-up
            before_stored = _stored(db)
            before = cpu_seconds(gateway.pid)
            result = await run_load(session, endpoint, scenario, requests, _CONCURRENCY)
        deadline = time.monotonic() + _SETTLE
        while _stored(db) < before_stored + requests and time.monotonic() < deadline:  # noqa: ASYNC110  # a file
            await asyncio.sleep(0.05)
        used = cpu_seconds(gateway.pid) - before
        if result.errors:
            raise RuntimeError(f"{name}: {result.errors} errors: {result.error_samples[:3]}")
        return used * 1000 / requests
    finally:
        stop_all([gateway])


async def per_request(requests: int, rounds: int) -> dict[bool, list[float]]:
    """CPU ms per request, `rounds` runs each of write-ahead on and off, alternating."""
    with tempfile.TemporaryDirectory(prefix="tollgate-spool-bench-") as scratch:
        root = Path(scratch)
        services: list[Service] = []
        try:
            upstream = start_service(
                "upstream", [sys.executable, "-m", "gateway.testing.fake_openai", "--port", "0"], root
            )
            services.append(upstream)
            url = (await asyncio.to_thread(upstream.wait_for, r"listening (\S+)")).group(1)
            db = root / "usage.db"
            stats = start_service(
                "statssvc",
                [sys.executable, "-m", "gateway", "statssvc", "--db", str(db), "--listen", "127.0.0.1:0"],
                root,
            )
            services.append(stats)
            stats_port = int((await asyncio.to_thread(stats.wait_for, r"stats listening on \S+:(\d+)")).group(1))
            figures: dict[bool, list[float]] = {True: [], False: []}
            for i in range(rounds):
                for write_ahead in (False, True):
                    config = _config(root, url, stats_port, write_ahead)
                    name = f"tollgate-{'on' if write_ahead else 'off'}-{i}"
                    figures[write_ahead].append(await _one_round(root, config, db, requests, name))
            return figures
        finally:
            stop_all(services)


async def per_record(records: int) -> dict[bool, float]:
    """CPU microseconds of one `submit`, write-ahead on and off, with nothing delivered."""
    record = stats_pb2.UsageRecord(
        request_id="req_0123456789abcdef01234567",
        key_id="key_1",
        user="alice",
        team="search",
        operation="chat",
        requested_model="gpt-4o-mini",
        backend="openai",
        provider="openai",
        provider_model="gpt-4o-mini-2024-07-18",
        input_tokens=120,
        output_tokens=40,
        cost_usd=0.0001,
        outcome=stats_pb2.OUTCOME_COMPLETED,
        http_status=200,
    )
    out: dict[bool, float] = {}
    for write_ahead in (False, True):
        with tempfile.TemporaryDirectory(prefix="tollgate-spool-bench-") as scratch:
            config = StatsConfig(server="127.0.0.1:1", spool_dir=scratch, buffer=records, write_ahead=write_ahead)
            reporter = UsageReporter(config)
            await reporter.start()  # its task gets no turn while the loop below runs: submit alone is timed
            started = time.process_time()
            for _ in range(records):
                reporter.submit(record)
            out[write_ahead] = (time.process_time() - started) * 1e6 / records
            await reporter.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print both figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.spool_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=50_000, help="submits timed per configuration")
    args = parser.parse_args(argv)
    record = asyncio.run(per_record(args.records))
    request = asyncio.run(per_request(args.requests, args.rounds))
    print("usage records written ahead to the spool (stats.write_ahead), on vs off")
    print(f"  submit(), CPU per record:       off {record[False]:.2f} µs   on {record[True]:.2f} µs")
    off, on = statistics.median(request[False]), statistics.median(request[True])
    print(
        f"  gateway CPU per request (c={_CONCURRENCY}): off {off:.3f} ms   on {on:.3f} ms   "
        f"added {on - off:+.3f} ms (medians of {args.rounds} rounds of {args.requests})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
