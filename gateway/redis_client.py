"""The one place a Redis client is made from the `redis:` setting: a single Redis, or a Redis Cluster.

The setting is a URL (the loader turns the mapping form into one, see `cluster_url`):

- `redis://[user:password@]host:port/db`, `rediss://…` (TLS), `unix:///path/redis.sock` — one Redis;
- `redis+cluster://[user:password@]host:port[,host:port…]`, `rediss+cluster://…` — a Redis Cluster, reached through
  any of the seed nodes listed (the client learns the rest with CLUSTER SLOTS and follows failovers).

The limiter, the response cache's shared tier and the semantic cache's shared streams all connect through `connect`,
so they accept the same settings and fail the same way: every error they can see is one of `redis_errors()`.

redis-py (and the OpenTelemetry SDK it imports) is ≈ 11 MiB of a process's memory, so it is imported here only when
a client is made or its errors are caught, never by a config that uses no Redis: the URL checks need none of it, and
everything else names its types under `TYPE_CHECKING`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    RedisClient: TypeAlias = aioredis.Redis | RedisCluster

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_DEFAULT_PORT = 6379


class RedisUrlError(ValueError):
    """A `redis:` setting that names no Redis; the message never repeats a password."""


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A Redis Cluster: where to start, and how to log in."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool


def parse_cluster_url(url: str) -> ClusterTarget | None:
    """The cluster a `redis+cluster://` URL names; None for a single-Redis URL; `RedisUrlError` when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SINGLE_SCHEMES + CLUSTER_SCHEMES:
        raise RedisUrlError(
            f"expected a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL, got {redact(url)!r}"
        )
    if scheme in SINGLE_SCHEMES:
        return None
    rest = rest.rstrip("/")
    if rest.endswith("/0"):  # a cluster has database 0 only
        rest = rest[:-2]
    if "/" in rest or "?" in rest:
        raise RedisUrlError(f"a cluster URL takes seed nodes only (no database but 0, no options): {redact(url)!r}")
    credentials, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    seeds = tuple(_seed(part, url) for part in hosts.split(","))
    return ClusterTarget(seeds, username, password, scheme == "rediss+cluster")


def cluster_url(
    seeds: list[str], *, username: str | None = None, password: str | None = None, tls: bool = False
) -> str:
    """The `redis+cluster://` URL of the mapping form `{cluster: [host:port…], username, password, tls}`."""
    scheme = "rediss+cluster" if tls else "redis+cluster"
    credentials = ""
    if username or password:
        credentials = quote(username or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
    url = f"{scheme}://{credentials}{','.join(seeds)}"
    parse_cluster_url(url)  # every seed is host:port
    return url


def validate(url: str) -> None:
    """Raise `RedisUrlError` unless `url` names a Redis or a Redis Cluster."""
    if parse_cluster_url(url) is None:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  # raises on a port that is not a number
        except ValueError as exc:
            raise RedisUrlError(f"bad port in {redact(url)!r}") from exc
        if parts.scheme != "unix" and not parts.hostname:
            raise RedisUrlError(f"no host in {redact(url)!r}")


def redact(url: str) -> str:
    """`url` with its password replaced by `***`, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hosts}"


@cache
def redis_errors() -> tuple[type[Exception], ...]:
    """What a call to either client may raise when Redis cannot answer: RedisClusterException is not a RedisError.

    A function so that redis-py is imported only where a client exists; in an `except` clause it is called only once
    something was raised.
    """
    from redis.exceptions import RedisClusterException, RedisError  # noqa: PLC0415 - see the module's docstring

    return (RedisError, RedisClusterException, OSError, TimeoutError)


def connect(url: str, *, timeout: float, max_connections: int) -> RedisClient:
    """A client for `url` whose every call gives up after `timeout` seconds and is never retried silently (a slow
    answer is an answer of "unavailable"; the caller decides what that means). `max_connections` is per node.

    No connection is opened here: the first call does, inside the running loop its connections will belong to.
    """
    # The one place redis-py is imported for a client (see the module's docstring).
    import redis.asyncio as aioredis  # noqa: PLC0415
    from redis.asyncio.cluster import ClusterNode, RedisCluster  # noqa: PLC0415
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415

    no_retry = Retry(NoBackoff(), 0)
    cluster = parse_cluster_url(url)
    if cluster is None:
        pool = aioredis.ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=no_retry,
        )
        return aioredis.Redis.from_pool(pool)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.seeds],
        username=cluster.username,
        password=cluster.password,
        ssl=cluster.tls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=max_connections,
        retry=no_retry,
        # A slot map with a dead primary still serves the other slots while its replica is promoted.
        require_full_coverage=False,
    )


def _seed(part: str, url: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        host, port = port, str(_DEFAULT_PORT)
    host = host.strip("[]")  # an IPv6 literal
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"expected seed nodes as host:port in {redact(url)!r}, got {part!r}")
    return host, int(port)
