"""The `limits` and `limits-redis` targets' own parts: rules every request pays for and none ever reaches, the Redis.

Both targets run `tollgate serve` with the `tollgate` target's configuration plus a `limits:` section: a global
requests + tokens rule and a concurrency rule on the bench's model, each far above what the bench can send, so every
request is checked and settled against three counters and none is refused. (A spend budget needs auth and prices;
it is left out.) `limits` keeps the counters in memory. `limits-redis` keeps them in Redis (`REDIS_URL`, else the
local default) under a prefix of its own, fails closed so that a Redis problem shows up as errors rather than as a
silent fallback to memory, and deletes exactly the keys under its prefix at the end (SCAN + DEL, never a FLUSH).

Redis is a shared server, so its CPU is not the gateway's: when it runs on this machine and /proc/PID/stat can be
read (PID from `INFO server`), the bench reports its CPU apart, as it does the secured target's auth and stats servers.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

from bench.procs import cpu_seconds

__all__ = ["DEFAULT_REDIS_URL", "BenchRedis", "limits_config", "redacted", "redis_url"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_PREFIX = "tollgate-bench"
_TIMEOUT = 2.0  # seconds, for the bench's own calls: PING, INFO, SCAN, DEL
_SCAN_COUNT = 1000
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Far above what the bench sends in a minute (a few thousand requests, a few hundred tokens each): never reached.
_RULES: tuple[dict[str, Any], ...] = (
    {"per": "global", "requests": 100_000_000, "tokens": 100_000_000_000, "window": "1m"},
    {"per": "model", "concurrent": 100_000},  # `match` (the bench's model) is added by `limits_config`
)


def redis_url(environ: Mapping[str, str]) -> str:
    """The Redis the `limits-redis` target uses: `REDIS_URL` when set, else the local default."""
    return environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def redacted(url: str) -> str:
    """`url` with its password replaced, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def limits_config(base: dict[str, Any], model: str, store: BenchRedis | None = None) -> dict[str, Any]:
    """The `tollgate` target's configuration plus limits on every request: in memory, or in `store` (failing closed)."""
    rules = [dict(_RULES[0]), {**_RULES[1], "match": {"model": model}}]
    if store is None:
        return {**base, "limits": {"backend": "memory", "rules": rules}}
    limits = {"backend": "redis", "on_redis_error": "closed", "redis_prefix": store.prefix, "rules": rules}
    return {**base, "redis": store.url, "limits": limits}


class BenchRedis:
    """The Redis of the `limits-redis` target, seen from the bench: is it there, where is it, and the cleanup."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"{_PREFIX}:{secrets.token_hex(8)}"  # this run's keys, and only they, start with it
        self._client = redis.Redis.from_url(url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT)

    def ping(self) -> str | None:
        """None when Redis answers PING; else why not."""
        try:
            self._client.ping()
        except (RedisError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def local_pid(self) -> int | None:
        """redis-server's PID when it runs on this machine and its CPU can be read from /proc; else None."""
        options = self._client.connection_pool.connection_kwargs
        if options.get("host") not in _LOOPBACK and not options.get("path"):
            return None
        try:
            pid = int(self._client.info("server")["process_id"])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cpu_seconds(pid)
        except (RedisError, OSError, KeyError, ValueError):
            return None
        # In another PID namespace (a container) the number may name some other process here.
        return pid if comm.startswith("redis") else None

    def delete_keys(self) -> int:
        """Delete every key under this run's prefix (the counters the gateway left); how many there were."""
        deleted = 0
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=f"*{self.prefix}*", count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                deleted += int(self._client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(self._client.delete(*batch))
        return deleted

    def cleanup(self) -> str:
        """Delete this run's keys and close; what was done, or why it could not be, in a line."""
        try:
            deleted = self.delete_keys()
            return f"deleted {deleted} key{'' if deleted == 1 else 's'} under {self.prefix}* in Redis"
        except (RedisError, OSError) as exc:
            return f"could not delete the keys under {self.prefix}* in Redis: {type(exc).__name__}: {exc}"
        finally:
            self.close()

    def close(self) -> None:
        """Drop the bench's connections."""
        self._client.close()
