"""The brown-out scenario: two backends answer in 5 ms until one slows to 500 ms. How much traffic does the slow one
keep, and what p99 does the client see, under latency-aware (peak-EWMA, power of two choices) vs weighted balancing?

Both fake upstreams run in this process (so the bench can slow one down mid-run); tollgate runs as `tollgate serve`
with one model per policy over the same two backends. Each policy gets a short warm-up at 5 ms, then the slow
backend goes to 500 ms and a closed loop of `concurrency` clients runs for `seconds`. Run alone with
`python -m bench.brownout` (`--help` for the options); `make bench` runs it after the overhead runs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import ClientSession

from bench.load import make_session, percentile
from bench.procs import HTTP_READY, Service, start_service, stop_all
from gateway.testing.fake_openai import FakeOpenAI

__all__ = ["BrownoutFigures", "main", "run_brownout", "text_report"]

_REPO = Path(__file__).resolve().parents[1]
_HOST = "127.0.0.1"
_FAST, _SLOW = 0.005, 0.5
_WARMUP_SECONDS = 1.0
POLICIES = ("weighted", "latency")
_BODY = orjson.dumps({"model": "", "messages": [{"role": "user", "content": "Say hello to the brown-out."}]})


@dataclass(frozen=True)
class BrownoutFigures:
    """One policy's run after the slow-down."""

    policy: str
    requests: int
    slow_share: float  # of the requests sent upstream, the share that went to the slow backend
    p50_ms: float
    p99_ms: float
    errors: int


def _config(fast_url: str, slow_url: str) -> dict[str, Any]:
    def model(policy: str) -> dict[str, Any]:
        targets = [{"backend": name, "model": f"m-{policy}"} for name in ("fast", "slow")]
        return {"name": f"brownout-{policy}", "balancing": policy, "targets": targets}

    backends = [
        {"name": name, "provider": "openai", "base_url": url, "api_key": "bench", "max_connections": 200}
        for name, url in (("fast", fast_url), ("slow", slow_url))
    ]
    return {"auth": "none", "backends": backends, "models": [model(policy) for policy in POLICIES]}


async def _load(
    session: ClientSession, url: str, model: str, seconds: float, concurrency: int
) -> tuple[list[float], int]:
    body = _BODY.replace(b'"model":""', b'"model":"' + model.encode() + b'"')
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    latencies: list[float] = []
    errors = 0
    until = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < until:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    continue
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def _sent(fake: FakeOpenAI, model: str) -> int:
    return sum(1 for r in fake.requests if isinstance(r.json, dict) and r.json.get("model") == model)


async def run_brownout(
    seconds: float, concurrency: int, log_dir: Path, services: list[Service]
) -> list[BrownoutFigures]:
    """Each policy in turn; every process started is appended to `services` for the caller to stop."""
    async with FakeOpenAI(latency=_FAST) as fast, FakeOpenAI(latency=_FAST) as slow:
        path = log_dir / "brownout.yaml"
        path.write_bytes(orjson.dumps(_config(fast.base_url, slow.base_url)))
        listen = ("--http", f"{_HOST}:0", "--grpc", f"{_HOST}:0")
        argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path), *listen]
        gateway = start_service("brownout-tollgate", argv, log_dir, _REPO)
        services.append(gateway)
        port = (await asyncio.to_thread(gateway.wait_for, HTTP_READY))[1]
        url = f"http://{_HOST}:{port}/v1/chat/completions"
        session = make_session(concurrency + 10)
        try:
            return [await _policy(session, url, policy, (fast, slow), seconds, concurrency) for policy in POLICIES]
        finally:
            await session.close()


async def _policy(
    session: ClientSession,
    url: str,
    policy: str,
    upstreams: tuple[FakeOpenAI, FakeOpenAI],
    seconds: float,
    concurrency: int,
) -> BrownoutFigures:
    """A warm-up with both backends fast, then the measured run with one slow."""
    fast, slow = upstreams
    slow.latency = _FAST
    await _load(session, url, f"brownout-{policy}", _WARMUP_SECONDS, concurrency)
    slow.latency = _SLOW  # the brown-out begins
    provider_model = f"m-{policy}"
    before = (_sent(fast, provider_model), _sent(slow, provider_model))
    latencies, errors = await _load(session, url, f"brownout-{policy}", seconds, concurrency)
    to_fast = _sent(fast, provider_model) - before[0]
    to_slow = _sent(slow, provider_model) - before[1]
    latencies.sort()
    return BrownoutFigures(
        policy=policy,
        requests=len(latencies) + errors,
        slow_share=to_slow / max(1, to_fast + to_slow),
        p50_ms=percentile(latencies, 0.5) * 1000 if latencies else 0.0,
        p99_ms=percentile(latencies, 0.99) * 1000 if latencies else 0.0,
        errors=errors,
    )


def text_report(figures: Sequence[BrownoutFigures], seconds: float, concurrency: int) -> str:
    """The brown-out table."""
    lines = [
        f"== brown-out: one of two backends slows from {_FAST * 1000:.0f} ms to {_SLOW * 1000:.0f} ms; "
        f"{seconds:g} s at concurrency {concurrency} ==",
        f"{'policy':<10} {'requests':>9} {'slow share':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}",
    ]
    lines += [
        f"{f.policy:<10} {f.requests:>9} {f.slow_share:>10.1%} {f.p50_ms:>8.1f} {f.p99_ms:>8.1f} {f.errors:>7}"
        for f in figures
    ]
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.brownout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per policy (default 10)")
    parser.add_argument("--concurrency", type=int, default=10, help="closed-loop clients (default 10)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the brown-out scenario alone and print its table."""
    args = _parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="tollgate-brownout-"))
    services: list[Service] = []
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = runner.run(run_brownout(args.seconds, args.concurrency, log_dir, services))
    finally:
        for problem in stop_all(services):
            print(f"warning: {problem}", file=sys.stderr)
    print(text_report(figures, args.seconds, args.concurrency))
    shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if any(f.errors for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
