"""A closed-loop load generator: `concurrency` workers each send one request, wait for the whole answer, repeat.

It shares the machine's cores with what it measures, so it stays cheap: one pooled ClientSession for the whole run,
pre-encoded request bodies, `await resp.read()` for plain answers and a line iterator over `resp.content` for
streams, parsing a stream's JSON only until its first content token has been seen. When asked, it notes one response
header of the first few good answers of a run (the limits targets' `x-ratelimit-remaining-requests`).
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, DummyCookieJar, TCPConnector

__all__ = ["Endpoint", "LoadResult", "Scenario", "make_session", "percentile", "request_headers", "run_load"]

_DATA = b"data:"
_DONE_LINE = b"data: [DONE]"
_MAX_ERROR_SAMPLES = 5
_HEADER_SAMPLES = 3  # answers per run whose `Endpoint.sample_header` is noted


@dataclass(frozen=True)
class Scenario:
    """What every request of a run asks for."""

    name: str  # "plain" or "stream"
    stream: bool
    chunks: int  # content chunks the upstream streams; a stream with fewer data events is an error
    model: str = "gpt-4o-mini"
    include_usage: bool = False

    def body(self, api: str = "chat") -> bytes:
        """The request body, for the chat completions API or (`api="responses"`) the Responses API."""
        if api == "responses":
            responses: dict[str, Any] = {
                "model": self.model,
                "instructions": "You are a benchmark.",
                "input": "Say hello to the gateway benchmark.",
                "store": False,  # a benchmark's answers are never continued
            }
            if self.stream:
                responses["stream"] = True
            return orjson.dumps(responses)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": "You are a benchmark."},
                {"role": "user", "content": "Say hello to the gateway benchmark."},
            ],
        }
        if self.stream:
            request["stream"] = True
            if self.include_usage:
                request["stream_options"] = {"include_usage": True}
        return orjson.dumps(request)


def request_headers(api_key: str) -> dict[str, str]:
    """The headers every request carries: a JSON body and the API key as a bearer token."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}


@dataclass(frozen=True)
class Endpoint:
    """Where a run's requests go, and the headers each one carries (built once, shared by every request)."""

    url: str
    headers: Mapping[str, str]
    sample_header: str | None = None  # a response header whose value to note on the first good answers of a run
    api: str = "chat"  # "chat" (/chat/completions) or "responses" (/responses)


@dataclass
class LoadResult:
    """The raw outcome of one run: per-request latencies (seconds) and the errors seen."""

    requests: int
    wall: float
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)  # answers other than 200, by status
    header_values: list[str | None] = field(default_factory=list)  # `sample_header` on the first good answers

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(message)

    def bad_status(self, status: int, data: bytes) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.error(f"HTTP {status}: {data[:200]!r}")

    def note_header(self, endpoint: Endpoint, headers: Mapping[str, str]) -> None:
        if endpoint.sample_header is not None and len(self.header_values) < _HEADER_SAMPLES:
            self.header_values.append(headers.get(endpoint.sample_header))


def make_session(max_connections: int) -> ClientSession:
    """The one session every run shares; its pool keeps connections open between runs."""
    return ClientSession(
        connector=TCPConnector(limit=max_connections, limit_per_host=max_connections),
        timeout=ClientTimeout(total=60),
        cookie_jar=DummyCookieJar(),
    )


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(len(sorted_values) * fraction))
    return sorted_values[min(len(sorted_values), rank) - 1]


def _has_content(line: bytes) -> bool:
    """Whether an SSE `data:` line is a chunk whose delta carries non-empty content (or a tool call)."""
    try:
        event = orjson.loads(line[5:])
    except orjson.JSONDecodeError:
        return False
    if not isinstance(event, dict):
        return False
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            return True
    return False


async def _plain(session: ClientSession, endpoint: Endpoint, body: bytes, result: LoadResult) -> None:
    start = time.perf_counter()
    async with session.post(endpoint.url, data=body, headers=endpoint.headers) as resp:
        data = await resp.read()
        status = resp.status
    elapsed = time.perf_counter() - start
    if status != 200:
        result.bad_status(status, data)
    elif not data.startswith(b"{") or (b'"output"' if endpoint.api == "responses" else b'"choices"') not in data:
        result.error(f"not a {endpoint.api} answer: {data[:200]!r}")
    else:
        result.latencies.append(elapsed)
        result.note_header(endpoint, resp.headers)


_TEXT_DELTA = b'"type":"response.output_text.delta"'
_COMPLETED = b'"type":"response.completed"'


async def _responses_stream(
    session: ClientSession, endpoint: Endpoint, body: bytes, result: LoadResult, chunks: int
) -> None:
    """A Responses stream: it must end with `response.completed`, after at least `chunks` text deltas."""
    start = time.perf_counter()
    ttft = 0.0
    deltas = 0
    last = b""
    async with session.post(endpoint.url, data=body, headers=endpoint.headers) as resp:
        if resp.status != 200:
            result.bad_status(resp.status, await resp.read())
            return
        result.note_header(endpoint, resp.headers)
        async for line in resp.content:
            if not line.startswith(_DATA):
                continue
            last = line
            if _TEXT_DELTA in line:
                deltas += 1
                ttft = ttft or time.perf_counter() - start
    elapsed = time.perf_counter() - start
    if _COMPLETED not in last:
        result.error(f"stream did not end with response.completed (last event {last[:200]!r})")
    elif deltas < chunks:
        result.error(f"short stream: {deltas} text deltas, expected at least {chunks}")
    else:
        result.latencies.append(elapsed)
        result.ttfts.append(ttft)


async def _stream(session: ClientSession, endpoint: Endpoint, body: bytes, result: LoadResult, chunks: int) -> None:
    start = time.perf_counter()
    ttft = 0.0
    events = 0
    previous = last = b""
    async with session.post(endpoint.url, data=body, headers=endpoint.headers) as resp:
        if resp.status != 200:
            result.bad_status(resp.status, await resp.read())
            return
        result.note_header(endpoint, resp.headers)
        async for line in resp.content:
            if not line.startswith(_DATA):
                continue
            events += 1
            previous, last = last, line
            if not ttft and _has_content(line):
                ttft = time.perf_counter() - start
    elapsed = time.perf_counter() - start
    if last.rstrip() != _DONE_LINE:
        result.error(f"stream did not end with data: [DONE] (last event {last[:200]!r})")
    elif b'"error":' in previous:
        result.error(f"in-band error event: {previous[:200]!r}")
    elif events - 1 < chunks:
        result.error(f"short stream: {events - 1} data events before [DONE], expected at least {chunks}")
    elif not ttft:
        result.error("stream carried no content")
    else:
        result.latencies.append(elapsed)
        result.ttfts.append(ttft)


async def run_load(
    session: ClientSession,
    endpoint: Endpoint,
    scenario: Scenario,
    requests: int,
    concurrency: int,
    on_start: Callable[[], None] | None = None,
) -> LoadResult:
    """Send `requests` requests from `concurrency` closed-loop workers; `on_start` runs just before the first."""
    body = scenario.body(endpoint.api)
    result = LoadResult(requests=requests, wall=0.0)
    remaining = requests

    def one() -> Awaitable[None]:
        if scenario.stream:
            stream = _responses_stream if endpoint.api == "responses" else _stream
            return stream(session, endpoint, body, result, scenario.chunks)
        return _plain(session, endpoint, body, result)

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await one()
            except (ClientError, TimeoutError, OSError, ValueError) as exc:
                result.error(f"{type(exc).__name__}: {exc}")

    gc.collect()
    if on_start is not None:
        on_start()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall = time.perf_counter() - start
    return result
