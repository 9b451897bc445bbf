"""The typed, immutable configuration of a tollgate process.

Frozen dataclasses, built and validated by `gateway.config.load`; a reload builds a new `GatewayConfig` and swaps it
whole. Nothing here reads the environment or a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.config.routing import ExperimentConfig, RoutingConfig
from gateway.config.routing_wake import WakeConfig
from gateway.config.shaping import RequestShaping
from gateway.config.telemetry import TelemetryConfig
from gateway.config.tls import ClientTLS, TLSConfig


class Secret:
    """A credential that never prints: `repr` and `str` show only that it is set."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _frozen_map() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where the process listens: `host:port` each; `grpc` empty when the engine serves no gRPC."""

    http: str = "127.0.0.1:8080"
    grpc: str = "127.0.0.1:50051"
    # Networks (CIDR, or single addresses) the front doors call the engine's gRPC port from: only their
    # `tollgate-client-address` is believed. Empty: any caller's (keep the port internal, or require mTLS).
    front_doors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Front-door limits and lifecycle."""

    max_body_bytes: int = 8 * 1024 * 1024
    shutdown_grace: float = 10.0  # in-flight requests get this long in total after SIGTERM; streams are then cut
    drain_delay: float = 2.0  # after SIGTERM, keep accepting (while readiness says no) so load balancers notice
    header_timeout: float = 10.0  # the longest a client may take to send a request's line and headers
    body_timeout: float = 60.0  # the longest a client may take to send a request's body
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this
    max_connections: int = 10_000  # open connections per process; past it new ones are closed at once
    # The largest audio file a transcription may upload (OpenAI's own limit), checked by both doors. Under the
    # engine's gRPC message limit (64 MiB), so a split front door can pass it on.
    max_audio_bytes: int = 25 * 1024 * 1024
    reload_poll: float = 2.0  # how often the config file is checked for a change (0: only SIGHUP and the admin API)
    # After a reload, the old config's calls in flight run on at most this long before its backends are closed.
    reload_grace: float = 300.0


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One provider endpoint: a provider type and how to reach it."""

    name: str
    provider: str
    base_url: str = ""
    api_key: Secret | None = None
    # Extra headers may carry credentials: they are kept out of repr, like the key.
    headers: Mapping[str, str] = field(default_factory=_frozen_map, repr=False)
    connect_timeout: float = 5.0
    # Idle-based: the longest wait for the next byte of an answer, not for the whole answer.
    read_timeout: float = 60.0
    max_connections: int = 100
    # Provider-specific settings, validated by the provider's own factory.
    options: Mapping[str, Any] = field(default_factory=_frozen_map)
    # Request fields set when absent, forced, or dropped before the adapter translates (gateway.providers.shaping).
    shaping: RequestShaping = field(default_factory=RequestShaping)
    wake: WakeConfig | None = None  # on-demand boot of a backend that sleeps (gateway.providers.wake)
    # How the backend continues an answer from its beginning (mid-stream failover): "prefill", "vllm", "prefix" or
    # "none"; empty: its provider type's default (the registry resolves it, gateway.providers.registry).
    continuation: str = ""


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """A backend and the model name the backend knows it by."""

    backend: str
    model: str
    weight: float = 1.0
    priority: int = 0  # a lower tier is used only while every target of the tiers below it is unhealthy


@dataclass(frozen=True, slots=True)
class SemanticCacheConfig:
    """A model's semantic cache: prompts whose embeddings are at least `threshold` alike share an answer."""

    embedding_model: str  # a model of this gateway's config that serves embeddings
    threshold: float = 0.95  # cosine similarity, in (0, 1]
    max_entries: int = 10_000  # per model; past it the oldest vectors are forgotten


@dataclass(frozen=True, slots=True)
class ModelCacheConfig:
    """A model's response cache (opt-in): how long answers live and who may share them (see docs/caching.md)."""

    ttl: float = 600.0
    scope: str = ""  # "key", "user", "team" or "global"; empty: the narrowest the auth decision allows
    semantic: SemanticCacheConfig | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model name clients ask for, the targets that serve it, and the models to fall back to."""

    name: str
    targets: tuple[TargetConfig, ...]
    fallback: tuple[str, ...] = ()
    owned_by: str = "tollgate"
    cache: ModelCacheConfig | None = None  # None: answers of this model are never cached
    aliases: tuple[str, ...] = ()  # other names clients may use for this model
    balancing: str = "weighted"  # "weighted", "least_outstanding" or "latency" (peak-EWMA, power of two choices)
    context_fallback: tuple[str, ...] = ()  # models with a larger context window, for context-length errors
    experiment: ExperimentConfig | None = None
    # A stream cut after its first byte is continued by another target that can continue it (docs/routing.md).
    stream_failover: bool = False


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The external auth server (`tollgate.auth.v1.AuthService`) and how its decisions are cached."""

    server: str  # host:port
    timeout: float = 0.25  # the deadline of one Check call; past it the request fails closed with a 503
    cache_ttl: float = 30.0  # how long a decision is reused when the server names no TTL of its own
    negative_ttl: float = 5.0  # how long a denial (bad key, revoked...) is reused
    cache_size: int = 10_000  # decisions kept at most; the least recently used go first
    headers: tuple[str, ...] = ()  # request headers forwarded to the server, lower case
    tls: ClientTLS | None = None  # None: plaintext


@dataclass(frozen=True, slots=True)
class StatsConfig:
    """The external stats server (`tollgate.stats.v1.StatsService`) and how usage records reach it."""

    server: str  # host:port
    flush_interval: float = 1.0  # the longest a record waits in memory before its batch is sent
    max_batch: int = 500  # records per Report call
    buffer: int = 100_000  # records held in memory; past it they go to the spool
    timeout: float = 5.0  # the deadline of one Report call
    retry_max: float = 30.0  # the longest wait between retries while the server is down
    spool_dir: str = ".tollgate/spool"  # append-only files for what memory cannot hold, and for restarts
    spool_max_bytes: int = 1 << 30  # past it records are dropped (counted and logged)
    write_ahead: bool = True  # every record is appended to the spool as it is submitted: a crash loses none
    fsync_interval: float = 1.0  # the spool is fsynced this often: what a power loss can take
    tls: ClientTLS | None = None  # None: plaintext


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens; cached input defaults to the input price; an image's price, for the models
    that generate them (`per_image`, US dollars)."""

    input: float
    output: float
    cached_input: float | None = None
    per_image: float = 0.0


@dataclass(frozen=True, slots=True)
class LimitRule:
    """Limits on the requests that `match`, counted per value of `per` (one counter per user, per team...)."""

    per: str  # "key", "user", "team", "model" or "global"
    match: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_map)  # dimension -> globs; all must match
    requests: int = 0  # per window; 0: no limit
    tokens: int = 0  # input + output tokens per window; 0: no limit
    window: float = 60.0
    concurrent: int = 0  # requests in flight at once; 0: no limit
    budget_usd: float = 0.0  # spend per period; 0: no budget
    budget_period: str = "month"  # "day", "week", "month" or "total"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Where limit counters live, what happens when that store is down, and the configured rules."""

    backend: str = "memory"  # "memory" (one process) or "redis" (shared by replicas, through `redis:`)
    fail_open: bool = True  # Redis down: True limits per process until it is back; False answers 503
    # The longest a limit check waits for Redis. A healthy Redis answers in well under a millisecond, but the check
    # also waits its turn on a busy event loop: too tight a bound turns load into false outages.
    redis_timeout: float = 0.5
    redis_prefix: str = "tollgate:rl"  # every counter's key starts with it: deployments sharing a Redis differ here
    output_tokens_estimate: int = 256  # what an answer is assumed to cost when the request sets no max_tokens
    max_request_seconds: float = 600.0  # a concurrency lease outlives a crashed replica by at most this
    rules: tuple[LimitRule, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The response cache's tiers, shared by every model that opts in with its own `cache:`."""

    l1_max_bytes: int = 64 << 20  # the in-process LRU holds at most this much (stored bytes)
    max_entry_bytes: int = 1 << 20  # a bigger answer is not cached
    redis: bool = False  # also keep answers in Redis (the top-level `redis:`), shared by replicas
    redis_timeout: float = 0.05  # the longest a lookup waits for Redis before answering from L1 alone
    compress_over: int = 4096  # values bigger than this go to Redis zlib-compressed
    key_prefix: str = "tollgate:cache"  # every Redis key starts with it


@dataclass(frozen=True, slots=True)
class ResponsesConfig:
    """Where stored responses (`POST /v1/responses` with `store`) are kept: in Redis when the config names one (every
    replica sees them), else in this process, for `ttl` seconds."""

    ttl: float = 30 * 86400.0  # as long as OpenAI keeps a stored response
    max_items: int = 10_000  # in process: the oldest go first beyond this many (Redis keeps them all, for the TTL)
    key_prefix: str = "tollgate:responses"  # every Redis key starts with it


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole configuration."""

    listen: ListenConfig = field(default_factory=ListenConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    # None is `auth: none`: every caller is anonymous and may use every model.
    auth: AuthConfig | None = None
    # None when the config has no `stats` section: no usage is reported.
    stats: StatsConfig | None = None
    # By model name: the provider's name for it first, then the name clients ask for.
    prices: Mapping[str, Price] = field(default_factory=_frozen_map)
    # Limits from the config; the auth decision adds each key's own.
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # The top-level `redis:` as a URL: redis://, rediss://, unix:// or redis+cluster:// (see gateway.redis_client).
    redis_url: str | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    backends: tuple[BackendConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    # Backends switched off with `enabled: false`, and the models dropped with them, for the startup log.
    disabled: tuple[str, ...] = ()
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)

    def backend(self, name: str) -> BackendConfig:
        """The backend called `name` (validated to exist at load)."""
        return next(b for b in self.backends if b.name == name)
