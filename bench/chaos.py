"""`make chaos`: faults done to real processes, and the matrix of what each one cost.

Every scenario starts its own processes on loopback (a fake OpenAI upstream, the reference stats server, `tollgate`
in the topology it names), does one fault under a small load, and returns a `Row`: the requests sent, the errors
clients saw, the usage records expected (one per request whose answer the client got whole, or whose stream was cut
by a shutdown) and those stored and duplicated in the stats server's database, and the time until the fleet was back
(restarted and every record stored) or, for a shutdown, until the process exited. `check` says which of the targets
a row misses: no record lost after a SIGKILL, every shutdown within `shutdown_grace` + 1 s, no stream truncated
without an in-band error.

    python -m bench.chaos [--quick] [--only NAME ...]

Mid-stream faults (a target that resets, stalls, sends an error event or a malformed event after its first bytes,
before a sound target, with `stream_failover: true`) must cost no client an error: every stream is continued by the
sound target, and every record counts both attempts once (`resumed` is their count in the stats server). The e2e
suite runs the same scenarios small (`tests/e2e/test_chaos.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import Service, start_service, stop_all

GRACE = 2.0  # server.shutdown_grace of the gateways under test
CHUNKS = 20  # words in each of the fake upstream's answers
CUT_AFTER = 3  # words a faulty upstream sends before it breaks a stream
DRAIN_DELAY = 0.5
EXIT_TARGET = GRACE + 1.0
_DELIVERY_TIMEOUT = 20.0
_MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Sizes:
    """How much load a run puts on each scenario."""

    requests: int = 200  # per SIGKILL scenario
    concurrency: int = 10
    streams: int = 8  # in flight at SIGTERM
    cut_streams: int = 100  # per mid-stream scenario


QUICK = Sizes(requests=40, concurrency=5, streams=3, cut_streams=20)


@dataclass
class Row:
    """What one fault did."""

    fault: str
    requests: int = 0
    client_errors: int = 0  # requests that failed as the client saw it (a 5xx, a reset, a truncated stream)
    expected: int = 0  # usage records that must be stored
    stored: int = 0  # of the expected ones
    duplicated: int = 0  # request ids stored more than once
    resent: int | None = None  # records the restarted gateway sent that were stored already (the server's count)
    recover_s: float = 0.0
    truncated: int = 0  # streams that ended without an in-band error or their end marker
    resumed: int | None = None  # for mid-stream faults: streams another target continued (the records' count)
    exit_s: float | None = None  # for shutdowns: from the signal to the process's exit
    notes: list[str] = field(default_factory=list)

    def check(self) -> list[str]:
        """The targets this row misses."""
        missed = []
        if self.stored < self.expected:
            missed.append(f"{self.expected - self.stored} records lost")
        if self.duplicated:
            missed.append(f"{self.duplicated} records stored twice")
        if self.truncated:
            missed.append(f"{self.truncated} streams truncated silently")
        if self.exit_s is not None and self.exit_s > EXIT_TARGET:
            missed.append(f"exit took {self.exit_s:.2f}s > {EXIT_TARGET:g}s")
        return missed


class Cluster:
    """The processes of one scenario, in a scratch directory; `close` stops every one of them by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services: list[Service] = []
        self.stats_port = _free_port()
        self.db = root / "usage.db"
        self.upstream_url = ""

    async def start_upstream(self, chunk_delay: float = 0.0, latency: float = 0.0, cut: str = "") -> str:
        """A fake OpenAI upstream (the first one started is the gateway's in `config`); `cut` breaks every stream
        after CUT_AFTER chunks that way. Its base URL."""
        argv = [sys.executable, "-m", "gateway.testing.fake_openai", "--port", "0", "--chunks", str(CHUNKS)]
        argv += ["--chunk-delay", str(chunk_delay), "--latency", str(latency)]
        if cut:
            argv += ["--cut", cut, "--cut-after", str(CUT_AFTER)]
        service = self._start("upstream", argv)
        url = (await _wait_for(service, r"listening (\S+)")).group(1)
        self.upstream_url = self.upstream_url or url
        return url

    async def start_stats(self) -> Service:
        argv = [sys.executable, "-m", "gateway", "statssvc", "--db", str(self.db)]
        service = self._start("statssvc", [*argv, "--listen", f"127.0.0.1:{self.stats_port}"])
        await _wait_for(service, r"stats listening on")
        return service

    def config(self, **server: str) -> Path:
        """The gateway's config file: one upstream, the stats server (up or not), a spool in the scratch dir."""
        settings = {"shutdown_grace": f"{GRACE}s", "drain_delay": f"{DRAIN_DELAY}s", **server}
        server_yaml = ", ".join(f"{k}: {v}" for k, v in settings.items())
        path = self.root / "tollgate.yaml"
        path.write_text(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{{server_yaml}}}
stats: {{server: "127.0.0.1:{self.stats_port}", flush_interval: 100ms, retry_max: 300ms, timeout: 1s,
        spool_dir: "{self.root / "spool"}"}}
limits: {{backend: memory}}
backends:
  - {{name: up, provider: openai, base_url: "{self.upstream_url}", api_key: sk-chaos, read_timeout: 60s}}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: up, model: gpt-4o-mini}}]}}
""")
        return path

    def failover_config(self, faulty: str, sound: str) -> Path:
        """Two vLLM-like upstreams for one model with mid-stream failover, the faulty one first. Ejection is off so
        that every stream meets the fault (outlier ejection is tested in tests/engine/test_stream_health.py), and
        the retry budget allows a retry per request (by default 10 + 20% of requests: with ejection on, the faulty
        target is out after 5 failures and the budget is not reached)."""
        path = self.root / "tollgate.yaml"
        path.write_text(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{shutdown_grace: {GRACE}s, drain_delay: {DRAIN_DELAY}s}}
stats: {{server: "127.0.0.1:{self.stats_port}", flush_interval: 100ms, retry_max: 300ms, timeout: 1s,
        spool_dir: "{self.root / "spool"}"}}
routing:
  health: {{consecutive_failures: 1000000, error_rate_min_requests: 1000000}}
  retry: {{budget_ratio: 1.0}}
backends:
  - {{name: faulty, provider: vllm, base_url: "{faulty}", api_key: sk-chaos, read_timeout: 500ms}}
  - {{name: sound, provider: vllm, base_url: "{sound}", api_key: sk-chaos, read_timeout: 60s}}
models:
  - name: gpt-4o-mini
    stream_failover: true
    targets: [{{backend: faulty, model: qwen, priority: 0}}, {{backend: sound, model: qwen, priority: 1}}]
""")
        return path

    def usage(self) -> dict[str, tuple[int, int, int, int]]:
        """Stored usage by request id: (resumed, input tokens, output tokens, usage estimated)."""
        if not self.db.exists():
            return {}
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            query = "SELECT request_id, resumed, input_tokens, output_tokens, usage_estimated FROM usage"
            return {row[0]: tuple(row[1:]) for row in db.execute(query)}

    async def start_gateway(self, *args: str, name: str = "tollgate") -> tuple[Service, str]:
        """`tollgate ARGS --config ...`; the service and its HTTP base URL (empty for `engine`)."""
        argv = [sys.executable, "-m", "gateway", *args, "--config", str(self.root / "tollgate.yaml")]
        service = self._start(name, argv)
        kind = "grpc" if args[0] == "engine" else "http"
        port = (await _wait_for(service, rf"{kind} listening on 127\.0\.0\.1:(\d+)")).group(1)
        return service, f"{'http' if kind == 'http' else 'grpc'}://127.0.0.1:{port}"

    def records(self) -> dict[str, tuple[int, str, int]]:
        """Stored usage by request id: (times stored, error type, HTTP status)."""
        if not self.db.exists():
            return {}
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            query = "SELECT request_id, COUNT(*), MAX(error_type), MAX(http_status) FROM usage GROUP BY request_id"
            return {row[0]: (row[1], row[2], row[3]) for row in db.execute(query)}

    async def until_stored(self, expected: set[str]) -> bool:
        deadline = time.monotonic() + _DELIVERY_TIMEOUT
        while time.monotonic() < deadline:
            if expected <= self.records().keys():
                return True
            await asyncio.sleep(0.1)
        return False

    def close(self) -> list[str]:
        return stop_all(self.services)

    def _start(self, name: str, argv: list[str]) -> Service:
        service = start_service(f"{name}-{len(self.services)}", argv, self.root)
        self.services.append(service)
        return service


async def _wait_for(service: Service, pattern: str) -> re.Match[str]:
    return await asyncio.to_thread(service.wait_for, pattern)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fill(row: Row, cluster: Cluster, expected: set[str]) -> None:
    stored = cluster.records()
    row.expected = len(expected)
    row.stored = len(expected & stored.keys())
    row.duplicated = sum(1 for count, _, _ in stored.values() if count > 1)


# ---------------------------------------------------------------------------------------------------- clients


async def _complete(session: aiohttp.ClientSession, base: str) -> str | None:
    """One whole completion; its request id, or None when the client saw a failure."""
    body = {"model": "gpt-4o-mini", "messages": _MESSAGES}
    try:
        async with session.post(f"{base}/v1/chat/completions", json=body) as response:
            payload = await response.json()
            ok = response.status == 200 and bool(payload.get("choices"))
            return response.headers.get("x-request-id") if ok else None
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def _load(base: str, total: int, concurrency: int, done: list[str], errors: list[int]) -> None:
    queue = iter(range(total))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def worker() -> None:
            for _ in queue:
                request_id = await _complete(session, base)
                if request_id is None:
                    errors.append(1)
                else:
                    done.append(request_id)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass
class StreamResult:
    request_id: str = ""
    events: list[bytes] = field(default_factory=list)
    error: str = ""

    def ended_honestly(self, anthropic: bool) -> bool:
        """An in-band error then the end marker ([DONE]), or for Anthropic an `error` event last."""
        if anthropic:
            return any(e.startswith(b"event: error") for e in self.events[-1:])
        return len(self.events) >= 2 and self.events[-1] == b"data: [DONE]" and b'"error"' in self.events[-2]

    def text(self) -> str:
        """The content the stream's chunks carried, joined."""
        out = []
        for event in self.events:
            if event.startswith(b"data: {"):
                payload = json.loads(event[6:])
                out += [choice["delta"].get("content") or "" for choice in payload.get("choices", ())]
        return "".join(out)

    def completed(self, anthropic: bool) -> bool:
        """The stream ended as a whole answer does."""
        if anthropic:
            return bool(self.events) and self.events[-1].startswith(b"event: message_stop")
        return not self.error and self.events[-1:] == [b"data: [DONE]"] and not self.ended_honestly(anthropic)


async def _stream(base: str, anthropic: bool, started: asyncio.Event, result: StreamResult) -> None:
    path = "/v1/messages" if anthropic else "/v1/chat/completions"
    body: dict[str, object] = {"model": "gpt-4o-mini", "messages": _MESSAGES, "stream": True}
    if anthropic:
        body["max_tokens"] = 200
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(base + path, json=body) as response,
        ):
            result.request_id = response.headers.get("x-request-id", "")
            buffer = b""
            async for data in response.content.iter_any():
                buffer += data
                *whole, buffer = buffer.split(b"\n\n")
                result.events += [event.strip() for event in whole if event.strip()]
                if result.events:
                    started.set()
    except (TimeoutError, aiohttp.ClientError) as exc:
        result.error = type(exc).__name__
    finally:
        started.set()


# ---------------------------------------------------------------------------------------------------- scenarios


async def sigkill(cluster: Cluster, sizes: Sizes, *, stats_up: bool) -> Row:
    """SIGKILL `tollgate serve` in the middle of a load; restart it; every answered request's record is stored."""
    row = Row(f"SIGKILL under load, stats {'up' if stats_up else 'down'}")
    await cluster.start_upstream(latency=0.02)
    stats = await cluster.start_stats() if stats_up else None
    cluster.config()
    gateway, base = await cluster.start_gateway("serve")
    done: list[str] = []
    errors: list[int] = []
    load = asyncio.create_task(_load(base, sizes.requests, sizes.concurrency, done, errors))
    while len(done) < sizes.requests // 2 and not load.done():  # noqa: ASYNC110  # polling a list the load fills
        await asyncio.sleep(0.01)
    assert gateway.proc is not None
    gateway.proc.kill()  # by its own PID
    killed_at = time.monotonic()
    await load
    gateway.proc.wait()
    row.requests, row.client_errors = sizes.requests, len(errors)
    if stats is None:
        await cluster.start_stats()
    again, _ = await cluster.start_gateway("serve")  # the same spool: it delivers what the killed one left
    expected = set(done)
    if not await cluster.until_stored(expected):
        row.notes.append(f"not all stored after {_DELIVERY_TIMEOUT:g}s")
    row.recover_s = time.monotonic() - killed_at
    _fill(row, cluster, expected)
    await asyncio.to_thread(stop_all, [again])
    closed = re.search(r"usage reporter closed: \d+ submitted, \d+ delivered, (\d+) duplicates", again.log_tail())
    row.resent = int(closed.group(1)) if closed else None
    return row


async def sigterm_streams(cluster: Cluster, sizes: Sizes, *, topology: str = "serve") -> Row:
    """SIGTERM with long streams in flight (OpenAI and Anthropic framing): readiness fails at once, the listener
    serves through drain_delay, streams are cut in-band at the grace, the process exits by grace + 1 s, and each cut
    stream's record says it was a shutdown (a front door stopping alone too: it names its cuts to its engine)."""
    row = Row(f"SIGTERM, {sizes.streams} streams in flight ({topology})")
    await cluster.start_upstream(chunk_delay=1.0)  # 20 chunks: 20 s streams, far past the grace
    await cluster.start_stats()
    cluster.config()
    target, base = await _topology(cluster, topology)
    results = [StreamResult() for _ in range(sizes.streams)]
    firsts = [asyncio.Event() for _ in results]
    kinds = [i % 3 == 2 for i in range(len(results))]  # every third stream speaks Anthropic
    tasks = [asyncio.create_task(_stream(base, a, e, r)) for a, e, r in zip(kinds, firsts, results, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts)), 15)
    assert target.proc is not None
    target.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    if topology != "split":  # the process that got the signal has the HTTP port
        row.notes += await _while_draining(base)
    await asyncio.gather(*tasks)
    code = await asyncio.to_thread(target.proc.wait, EXIT_TARGET + 5)
    row.exit_s = row.recover_s = time.monotonic() - signalled
    if code != 0:
        row.notes.append(f"exit code {code}")
    row.requests = len(results)
    row.truncated = sum(1 for r, a in zip(results, kinds, strict=True) if not r.ended_honestly(a))
    row.client_errors = sum(1 for r, a in zip(results, kinds, strict=True) if not r.completed(a))
    expected = {r.request_id for r in results if r.request_id}
    await _restart_for_spool(cluster, topology)
    await cluster.until_stored(expected)
    _fill(row, cluster, expected)
    statuses = {cluster.records().get(i, (0, "", 0))[1] for i in expected}
    # A front door stopping alone names the calls it cuts to its engine, which records them as shutdown cuts too.
    wanted = {"shutting_down"}
    if statuses != wanted:
        row.notes.append(f"records' error types: {sorted(statuses)}")
    return row


# What the fake upstream answers "hello" with, and the usage a stream cut after its first K words and continued by
# the second upstream must be recorded with: the cut attempt's estimate (the prompt's characters / 4, at least 1; the
# role chunk and K words) plus the continuation's own count (the fake's: words + 3 a message, the K words' message
# included; the CHUNKS - K words it added). K is CUT_AFTER, or fewer when a reset lost what the socket still held.
_WORDS = ["This", "is", "a", "reply", "from", "the", "fake", "OpenAI", "server", "to:", "hello"]
WHOLE = "".join(_WORDS[i % len(_WORDS)] + " " for i in range(CHUNKS))
RESUMED_USAGE = {(1, 1 + (1 + 3) + (k + 3 if k else 0), 1 + k + CHUNKS - k, 1) for k in range(CUT_AFTER + 1)}


async def midstream(cluster: Cluster, sizes: Sizes, *, how: str) -> Row:
    """A target that breaks every stream after its first words (`how`: reset, stall past the read timeout, an
    error event, a malformed event) before a sound one, with mid-stream failover on: every client gets the whole
    answer, seamless, and every record counts both attempts once and says it was resumed."""
    row = Row(f"mid-stream {how}, failover on")
    faulty = await cluster.start_upstream(cut=how)
    sound = await cluster.start_upstream()
    await cluster.start_stats()
    cluster.failover_config(faulty, sound)
    _, base = await cluster.start_gateway("serve")
    results = [StreamResult() for _ in range(sizes.cut_streams)]
    slots = asyncio.Semaphore(sizes.concurrency)
    slowest = 0.0

    async def one(result: StreamResult) -> None:
        nonlocal slowest
        async with slots:
            began = time.monotonic()
            await _stream(base, False, asyncio.Event(), result)
            slowest = max(slowest, time.monotonic() - began)

    await asyncio.gather(*(one(r) for r in results))
    row.requests = len(results)
    row.truncated = sum(1 for r in results if not r.completed(False) and not r.ended_honestly(False))
    row.client_errors = sum(1 for r in results if not r.completed(False) or r.text() != WHOLE)
    expected = {r.request_id for r in results if r.request_id}
    await cluster.until_stored(expected)
    _fill(row, cluster, expected)
    usage = cluster.usage()
    row.resumed = sum(usage[i][0] for i in expected if i in usage)
    inexact = sum(1 for i in expected if i in usage and usage[i] not in RESUMED_USAGE)
    if inexact:
        row.notes.append(f"{inexact} records without both attempts' usage (resumed, in, out, estimated)")
    row.recover_s = slowest  # for a mid-stream fault, the longest a client waited for its whole answer
    return row


async def _topology(cluster: Cluster, topology: str) -> tuple[Service, str]:
    """Start the gateway as `topology` says; the process to signal, and the HTTP base URL."""
    if topology == "serve":
        return await cluster.start_gateway("serve")
    if topology == "workers":
        return await cluster.start_gateway("serve", "--workers", "2")
    engine, grpc_url = await cluster.start_gateway("engine", name="engine")
    front, base = await cluster.start_gateway("frontdoor", "--engine", grpc_url.removeprefix("grpc://"), name="front")
    return (front if topology == "frontdoor" else engine), base


async def _restart_for_spool(cluster: Cluster, topology: str) -> None:
    """Records left in the spool at exit (none, normally) are sent by the next start."""
    if topology in ("serve", "workers"):
        await cluster.start_gateway("serve", name="again")


async def _while_draining(base: str) -> list[str]:
    """During drain_delay: /readyz is 503 and a new request is still answered, with Connection: close."""
    notes = []
    async with aiohttp.ClientSession() as session:
        # The signal reaches the process a moment after it is sent: "at once" is within a tenth of drain_delay.
        deadline = time.monotonic() + DRAIN_DELAY / 10
        while True:
            async with session.get(f"{base}/readyz") as ready:
                if ready.status == 503 and ready.headers.get("Retry-After"):
                    break
            if time.monotonic() > deadline:
                notes.append(f"/readyz still answered {ready.status} {DRAIN_DELAY / 10:g}s after SIGTERM")
                break
            await asyncio.sleep(0.005)
        # A stream (as long as the others): its answer must begin, with `Connection: close`; it is cut later.
        body = {"model": "gpt-4o-mini", "messages": _MESSAGES, "stream": True}
        try:
            async with session.post(f"{base}/v1/chat/completions", json=body) as response:
                if response.status != 200 or response.headers.get("Connection", "").lower() != "close":
                    notes.append(f"request while draining: {response.status}, {response.headers.get('Connection')}")
        except aiohttp.ClientError as exc:
            notes.append(f"request while draining failed: {exc!r}")
    return notes


Scenario = Callable[[Cluster, Sizes], Awaitable[Row]]
SCENARIOS: dict[str, Scenario] = {
    "sigkill-stats-up": lambda c, s: sigkill(c, s, stats_up=True),
    "sigkill-stats-down": lambda c, s: sigkill(c, s, stats_up=False),
    "sigterm-serve": lambda c, s: sigterm_streams(c, s, topology="serve"),
    "sigterm-engine": lambda c, s: sigterm_streams(c, s, topology="split"),
    "sigterm-workers": lambda c, s: sigterm_streams(c, s, topology="workers"),
    "sigterm-frontdoor": lambda c, s: sigterm_streams(c, s, topology="frontdoor"),
    "midstream-reset": lambda c, s: midstream(c, s, how="reset"),
    "midstream-stall": lambda c, s: midstream(c, s, how="stall"),
    "midstream-malformed": lambda c, s: midstream(c, s, how="malformed"),
    "midstream-error": lambda c, s: midstream(c, s, how="error"),
}


@contextlib.asynccontextmanager
async def cluster_in(root: Path | None = None) -> AsyncIterator[Cluster]:
    """A cluster in `root` (a fresh temporary directory when None), stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="tollgate-chaos-") as scratch:
        cluster = Cluster(root or Path(scratch))
        try:
            yield cluster
        finally:
            await asyncio.to_thread(cluster.close)


async def run_scenarios(names: Sequence[str], sizes: Sizes) -> list[Row]:
    """Each named scenario in a cluster of its own."""
    rows = []
    for name in names:
        async with cluster_in() as cluster:
            rows.append(await SCENARIOS[name](cluster, sizes))
    return rows


def render(rows: Sequence[Row]) -> str:
    """The matrix, one line per fault, with the targets each row misses."""
    head = f"{'fault':<40} {'requests':>8} {'client errors':>13} {'expected':>8} {'stored':>6} {'dup':>4} "
    head += f"{'resent':>6} {'resumed':>7} {'recover':>8}"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.fault:<40} {row.requests:>8} {row.client_errors:>13} {row.expected:>8} {row.stored:>6} "
            f"{row.duplicated:>4} {'-' if row.resent is None else row.resent:>6} "
            f"{'-' if row.resumed is None else row.resumed:>7} {row.recover_s:>7.2f}s"
        )
        lines.extend(f"    ! {note}" for note in [*row.check(), *row.notes])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios, print the matrix; 1 when a row misses a target."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small loads (what the e2e suite runs)")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args(argv)
    os.environ.setdefault("TOLLGATE_LOG_LEVEL", "INFO")
    rows = asyncio.run(run_scenarios(args.only, QUICK if args.quick else Sizes()))
    print(render(rows))
    return 1 if any(row.check() for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
