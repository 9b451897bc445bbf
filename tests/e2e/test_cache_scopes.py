"""Cache isolation with the real auth server: an entry is shared within its scope and never across it, in both
modes; and the real stats server's usage records mark the hits, with no tokens and no cost."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from authsvc.keyfile import KeyFile, KeyRecord, save_key_file
from authsvc.keys import generate_key
from authsvc.server import AuthServer, start_auth_server
from gateway.testing.fake_openai import FakeOpenAI
from statssvc.server import StatsServer, start_stats_server
from tests.conftest import StartGateway
from tests.e2e.test_cache import ask, cached, sdk, upstream_chats

PAST = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Servers:
    auth: AuthServer
    stats: StatsServer
    keys: dict[str, str]  # name -> raw key
    db: Path
    spool: Path

    def config(self, upstream: FakeOpenAI, scope: str) -> str:
        cache = f"{{ttl: 10m, scope: {scope}}}" if scope else "{ttl: 10m}"
        return cached(upstream, cache).replace(
            "auth: none",
            f"""auth: {{server: "127.0.0.1:{self.auth.port}", timeout: 500ms, cache_ttl: 60s}}
stats: {{server: "127.0.0.1:{self.stats.port}", flush_interval: 20ms, timeout: 1s, spool_dir: "{self.spool}"}}
prices: {{gpt-4o-mini: {{input: 0.15, output: 0.6}}}}""",
        )

    def rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM usage ORDER BY start_time")]


def _key(user: str, team: str) -> tuple[str, KeyRecord]:
    key = generate_key()
    return key.raw, KeyRecord(id=key.id, hash=key.hash, user=user, team=team, created=PAST)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    made = {
        "alice": _key("alice", "ml"),
        "alice-2": _key("alice", "ml"),  # a second key of the same user
        "erin": _key("erin", "ml"),  # the same team, another user
        "bob": _key("bob", "ops"),  # another team
    }
    keys_path = tmp_path / "keys.yaml"
    save_key_file(keys_path, KeyFile(tuple(record for _, record in made.values())))
    auth = await start_auth_server(keys_path, "127.0.0.1:0", cache_ttl=60.0)
    stats = await start_stats_server(tmp_path / "usage.db", "127.0.0.1:0")
    yield Servers(auth, stats, {n: raw for n, (raw, _) in made.items()}, tmp_path / "usage.db", tmp_path / "spool")
    await stats.stop(0)
    await auth.stop(0)


@pytest.mark.parametrize(
    ("scope", "shared_with"),
    [
        ("", {"alice"}),  # by default the narrowest: the key
        ("key", {"alice"}),
        ("user", {"alice", "alice-2"}),
        ("team", {"alice", "alice-2", "erin"}),
        ("global", {"alice", "alice-2", "erin", "bob"}),
    ],
)
async def test_a_hit_never_crosses_the_scope(
    start_gateway: StartGateway, upstream: FakeOpenAI, servers: Servers, scope: str, shared_with: set[str]
) -> None:
    gateway = await start_gateway(servers.config(upstream, scope))
    _, status = await ask(sdk(gateway, servers.keys["alice"]))
    assert status == "miss"
    for name in ("alice", "alice-2", "erin", "bob"):
        _, status = await ask(sdk(gateway, servers.keys[name]))
        assert status == ("hit" if name in shared_with else "miss"), name
    # Upstream: alice's first ask, and one ask per key outside the scope.
    assert upstream_chats(upstream) == 1 + 4 - len(shared_with)


async def test_usage_records_mark_hits_with_no_tokens_and_no_cost(
    start_gateway: StartGateway, upstream: FakeOpenAI, servers: Servers
) -> None:
    gateway = await start_gateway(servers.config(upstream, "team"))
    for name in ("alice", "erin"):
        await ask(sdk(gateway, servers.keys[name]))
    stream = await sdk(gateway, servers.keys["alice"]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello."}], temperature=0, stream=True
    )
    assert [c async for c in stream]
    async with asyncio.timeout(10):
        while len(servers.rows()) < 3:  # noqa: ASYNC110  # records arrive on the reporter's schedule
            await asyncio.sleep(0.02)
    miss, hit, streamed_hit = servers.rows()
    assert not miss["cache_hit"] and miss["input_tokens"] > 0 and miss["cost_usd"] > 0
    for row in (hit, streamed_hit):
        assert row["cache_hit"] and row["user"] in ("alice", "erin")
        assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (0, 0, 0)
        assert row["outcome"] == miss["outcome"]  # completed
    assert streamed_hit["stream"]
    assert upstream_chats(upstream) == 1


async def test_a_denied_caller_never_reaches_the_cache(
    start_gateway: StartGateway, upstream: FakeOpenAI, servers: Servers
) -> None:
    gateway = await start_gateway(servers.config(upstream, "global"))
    await ask(sdk(gateway, servers.keys["alice"]))
    with pytest.raises(openai.AuthenticationError):
        await ask(sdk(gateway, "sk-not-a-key"))
