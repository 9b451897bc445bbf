"""The fleet run's traffic and its accounting: plain and streamed chat completions through the load balancer, each
tagged with its own `x-request-id`, and the usage records the stats server stored for them.

A request is a *client error* when the client did not get a complete answer from a gateway: a transport error, a 5xx
(the gateway's or HAProxy's), a stream cut short or carrying an in-band error. A 429 is an answer (the limiter said
no), not an error. Every answer that came from a gateway (it carries the gateway's `x-request-id`) must leave exactly
one usage record, found in the stats server's SQLite by the client's id (`labels.client_request_id`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

__all__ = ["Outcome", "Records", "Traffic", "count_records", "run_traffic"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One client request: its id, whether it got a complete answer, and what it was."""

    client_id: str
    status: int  # 0: no HTTP answer at all
    answered_by_gateway: bool
    error: str  # "" when the answer was complete
    tokens: int  # total_tokens of the answer's usage, 0 if none


@dataclass(frozen=True, slots=True)
class Traffic:
    """What to send: `total` requests (or until `seconds` pass), `concurrency` at once, some streamed."""

    base_url: str
    api_key: str
    model: str = "fast"
    total: int = 100
    seconds: float = 0.0  # > 0: keep going until then instead of stopping at `total`
    concurrency: int = 4
    stream_every: int = 2
    long_model: str = ""  # when set, every `long_every`-th request streams from this (slow) model
    long_every: int = 5
    max_tokens: int = 16
    pause: float = 0.0  # seconds each client waits between its requests (keeps the load small and steady)


@dataclass
class Records:
    """The usage records the stats server holds for a set of client ids."""

    expected: int
    stored: int
    duplicated: int  # client ids with more than one record from one replica's config: one call recorded twice
    tokens: int  # total tokens of the stored records
    statuses: Counter[int] = field(default_factory=Counter)
    configs: Counter[str] = field(default_factory=Counter)  # records by the gateway config they ran on
    # Client ids with records from several configs (each replica has its own): the load balancer sent the request
    # again after a replica died without answering (`retry-on empty-response`), two upstream calls each recorded once.
    resent: int = 0


async def run_traffic(traffic: Traffic) -> list[Outcome]:
    """Send the traffic; every request's outcome, in completion order."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + traffic.seconds
    counter = iter(range(10**9))
    timeout = aiohttp.ClientTimeout(total=60, sock_read=30)
    headers = {"authorization": f"Bearer {traffic.api_key}"}
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:

        async def client() -> None:
            while True:
                n = next(counter)
                if (traffic.seconds and time.monotonic() >= deadline) or (not traffic.seconds and n >= traffic.total):
                    return
                outcomes.append(await _one(session, traffic, n))
                if traffic.pause:
                    await asyncio.sleep(traffic.pause)

        await asyncio.gather(*(client() for _ in range(traffic.concurrency)))
    return outcomes


async def _one(session: aiohttp.ClientSession, traffic: Traffic, n: int) -> Outcome:
    client_id = f"fleet-{uuid.uuid4().hex}"
    long = bool(traffic.long_model) and n % traffic.long_every == traffic.long_every - 1
    stream = long or n % traffic.stream_every == traffic.stream_every - 1
    body: dict[str, object] = {
        "model": traffic.long_model if long else traffic.model,
        "messages": [{"role": "user", "content": f"fleet request {n}"}],
        "max_tokens": traffic.max_tokens,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    try:
        async with session.post(
            f"{traffic.base_url}/v1/chat/completions", json=body, headers={"x-request-id": client_id}
        ) as response:
            by_gateway = "x-request-id" in response.headers
            if response.status != 200:
                await response.read()
                error = "" if response.status == 429 else f"HTTP {response.status}"
                return Outcome(client_id, response.status, by_gateway, error, 0)
            if not stream:
                usage = (await response.json()).get("usage") or {}
                return Outcome(client_id, 200, by_gateway, "", int(usage.get("total_tokens", 0)))
            error, tokens = await _read_stream(response)
            return Outcome(client_id, 200, by_gateway, error, tokens)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(client_id, 0, False, type(exc).__name__, 0)


async def _read_stream(response: aiohttp.ClientResponse) -> tuple[str, int]:
    """Read SSE events to `[DONE]`: ("", tokens) when complete, else what went wrong."""
    tokens = 0
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return "", tokens
        event = json.loads(data)
        if "error" in event:
            return f"in-band error: {event['error'].get('type', '?')}", tokens
        tokens = int((event.get("usage") or {}).get("total_tokens", tokens))
    return "stream cut short", tokens


def count_records(db: Path, outcomes: list[Outcome], *, wait: float = 15.0) -> Records:
    """Look the gateway-answered requests up in the stats server's database, waiting up to `wait` seconds for the
    replicas' reporters (and spools) to deliver them."""
    expected = {o.client_id for o in outcomes if o.answered_by_gateway}
    deadline = time.monotonic() + wait
    while True:
        rows = _rows(db, expected)
        found = {client_id for client_id, _, _, _ in rows}
        if found >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    per_call = Counter((client_id, config) for client_id, _, _, config in rows)
    configs_per_id = Counter(client_id for client_id, _ in per_call)
    return Records(
        expected=len(expected),
        stored=len(found & expected),
        duplicated=sum(1 for count in per_call.values() if count > 1),
        resent=sum(1 for count in configs_per_id.values() if count > 1),
        tokens=sum(tokens for _, tokens, _, _ in rows),
        statuses=Counter(status for _, _, status, _ in rows),
        configs=Counter(config for _, _, _, config in rows),
    )


def _rows(db: Path, ids: set[str]) -> list[tuple[str, int, int, str]]:
    if not ids or not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        connection.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY)")
        connection.executemany("INSERT INTO wanted VALUES (?)", [(i,) for i in ids])
        query = """
            SELECT json_extract(labels, '$.client_request_id'), input_tokens + output_tokens, http_status, config_hash
            FROM usage JOIN wanted ON wanted.id = json_extract(usage.labels, '$.client_request_id')
        """
        return [(str(a), int(b), int(c), str(d)) for a, b, c, d in connection.execute(query)]
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        connection.close()
