"""What a provider call costs its caller, with aiohttp's client and with tollgate's: `python -m bench.upstream_client`.

Both call the same fake OpenAI upstream (another process) from one event loop, with 50 calls in flight: a plain
completion read whole, and a 20-chunk stream read piece by piece through `sse_data`, as the providers do. The
figure is this process's CPU a call (the upstream's own is not counted), the least of a few alternating rounds so
that both clients meet the same machine. The floor proxy (bench.floor_proxy) calls its upstream through aiohttp's
client; tollgate through its own (gateway.providers.transport).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import uvloop
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, TCPConnector

from gateway.providers.http import sse_data
from gateway.providers.transport import UpstreamClient

_CONCURRENCY = 50
_CHUNKS = 20
_READ_BUFFER = 4 * 1024 * 1024
_HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json", "Accept": "application/json"}

Call = Callable[[bytes], Awaitable[int]]  # one call with a body: the bytes (or events) it read


def _body(stream: bool) -> bytes:
    request: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    }
    if stream:
        request["stream"] = True
    return orjson.dumps(request)


def aiohttp_calls(session: ClientSession, url: str) -> tuple[Call, Call]:
    """A plain call and a stream call through aiohttp's `ClientSession`, as tollgate's providers made them before
    tollgate had its own client (the stream read by the same `sse_data`)."""

    async def plain(body: bytes) -> int:
        async with session.post(url, data=body) as resp:
            return len(await resp.read())

    async def stream(body: bytes) -> int:
        async with session.post(url, data=body) as resp:
            return sum([1 async for _ in sse_data(resp.content)])

    return plain, stream


def tollgate_calls(client: UpstreamClient, url: str) -> tuple[Call, Call]:
    """A plain call and a stream call through tollgate's `UpstreamClient`, the stream read by `sse_data`."""

    async def plain(body: bytes) -> int:
        async with client.post(url, body) as answer:
            return len(await answer.read())

    async def stream(body: bytes) -> int:
        async with client.post(url, body) as answer:
            return sum([1 async for _ in sse_data(answer)])

    return plain, stream


async def cpu_per_call(call: Call, body: bytes, calls: int) -> float:
    """µs of this process's CPU a call, `calls` calls from `_CONCURRENCY` workers."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            if not await call(body):
                raise RuntimeError("an empty answer")

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(_CONCURRENCY)))
    return (time.process_time() - started) / calls * 1e6


async def measure(base_url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """{client: {"plain": µs, "stream": µs}}, the least of `rounds` alternating rounds."""
    url = base_url + "/chat/completions"
    # The session exactly as tollgate's providers configured it before (gateway/providers/http.py at 2162311).
    session = ClientSession(
        connector=TCPConnector(limit=200, ttl_dns_cache=300, keepalive_timeout=30, enable_cleanup_closed=True),
        headers=_HEADERS,
        timeout=ClientTimeout(total=None, sock_connect=5, sock_read=60),
        read_bufsize=_READ_BUFFER,
        max_line_size=_READ_BUFFER,
        max_field_size=_READ_BUFFER,
        skip_auto_headers=("User-Agent",),
        cookie_jar=DummyCookieJar(),
    )
    client = UpstreamClient(limit=200, connect_timeout=5, read_timeout=60, headers=_HEADERS)
    contenders = {"aiohttp": aiohttp_calls(session, url), "tollgate": tollgate_calls(client, url)}
    best: dict[str, dict[str, float]] = {name: {"plain": float("inf"), "stream": float("inf")} for name in contenders}
    try:
        for plain, stream in contenders.values():  # warm both: connections open, code paths hot
            await cpu_per_call(plain, _body(False), 500)
            await cpu_per_call(stream, _body(True), 200)
        for _ in range(rounds):
            for name, (plain, stream) in contenders.items():
                figures = best[name]
                figures["plain"] = min(figures["plain"], await cpu_per_call(plain, _body(False), calls))
                figures["stream"] = min(figures["stream"], await cpu_per_call(stream, _body(True), calls // 4))
    finally:
        await session.close()
        await client.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=4000, help="plain calls a round (streams: a quarter; default 4000)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fake = [sys.executable, "-m", "gateway.testing.fake_openai", "--host", "127.0.0.1", "--port", "0"]
    fake += ["--chunks", str(_CHUNKS), "--chunk-delay", "0", "--latency", "0"]
    upstream = subprocess.Popen(fake, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    try:
        assert upstream.stdout is not None
        ready = re.search(r"listening (http://\S+)", upstream.stdout.readline().decode())
        if ready is None:
            raise SystemExit("the fake upstream did not start")
        best = uvloop.run(measure(ready[1], args.calls, args.rounds))
    finally:
        upstream.terminate()
        upstream.wait()
    print(f"a provider call's CPU in its caller, {_CONCURRENCY} in flight, least of {args.rounds} rounds:")
    print(f"{'client':<10} {'plain µs':>10} {f'{_CHUNKS}-chunk stream µs':>22}")
    for name, figures in best.items():
        print(f"{name:<10} {figures['plain']:>10.1f} {figures['stream']:>22.1f}")
    ours, theirs = best["tollgate"], best["aiohttp"]
    plain, stream = ours["plain"] / theirs["plain"], ours["stream"] / theirs["stream"]
    print(f"tollgate / aiohttp: {plain:.2f}x plain, {stream:.2f}x stream")


if __name__ == "__main__":
    main()
