"""The one place the limiter's backend is chosen, from the configuration."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.ratelimit.backend import LimiterBackend
from gateway.ratelimit.failover import FailoverLimiter
from gateway.ratelimit.limiter import RateLimiter
from gateway.ratelimit.memory import MemoryBackend
from gateway.ratelimit.redis_backend import RedisBackend


def build_limiter(config: GatewayConfig, kept: LimiterBackend | None = None) -> RateLimiter | None:
    """None when no limit can apply: no rules, and no auth decision to bring a key's own limits. `kept`: the backend
    (and its counters) of the config a reload replaces, when `same_store` says it serves this one too."""
    limits = config.limits
    if not limits.rules and config.auth is None:
        return None
    backend: LimiterBackend
    if kept is not None:
        backend = kept
    elif limits.backend == "redis" and config.redis_url is not None:
        redis = RedisBackend(config.redis_url, namespace=limits.redis_prefix, timeout=limits.redis_timeout)
        backend = FailoverLimiter(redis, MemoryBackend(), fail_open=limits.fail_open)
    else:
        backend = MemoryBackend()
    return RateLimiter(limits, backend)


def same_store(old: GatewayConfig, new: GatewayConfig) -> bool:
    """Whether the counters of `old`'s limiter serve `new` (the same store, reached the same way; rules may differ)."""
    a, b = old.limits, new.limits
    if a.backend != b.backend or (a.backend == "redis" and old.redis_url != new.redis_url):
        return False
    return (a.fail_open, a.redis_timeout, a.redis_prefix) == (b.fail_open, b.redis_timeout, b.redis_prefix)
