"""The one place the limiter's backend is chosen, from the configuration."""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.ratelimit.backend import LimiterBackend
from gateway.ratelimit.failover import FailoverLimiter
from gateway.ratelimit.limiter import RateLimiter
from gateway.ratelimit.memory import MemoryBackend
from gateway.ratelimit.redis_backend import RedisBackend


def build_limiter(config: GatewayConfig) -> RateLimiter | None:
    """None when no limit can apply: no rules, and no auth decision to bring a key's own limits."""
    limits = config.limits
    if not limits.rules and config.auth is None:
        return None
    backend: LimiterBackend
    if limits.backend == "redis" and config.redis_url is not None:
        redis = RedisBackend(config.redis_url, namespace=limits.redis_prefix, timeout=limits.redis_timeout)
        backend = FailoverLimiter(redis, MemoryBackend(), fail_open=limits.fail_open)
    else:
        backend = MemoryBackend()
    return RateLimiter(limits, backend)
