"""The sections for the services around the engine: auth, stats, prices and limits, each bad field named."""

from __future__ import annotations

import pytest

from gateway.config import (
    AuthConfig,
    ConfigError,
    LimitRule,
    LimitsConfig,
    Price,
    StatsConfig,
    parse_config,
)

BASE = """
backends:
  - {name: local, provider: openai, base_url: "http://127.0.0.1:8000/v1"}
models:
  - {name: small, targets: [{backend: local, model: Qwen/Qwen3-8B}]}
"""


def test_auth_stats_and_prices_read_into_typed_fields() -> None:
    text = (
        """
auth: {server: "127.0.0.1:50061", timeout: 100ms, cache_ttl: 1m, negative_ttl: 2s, cache_size: 50,
       headers: [User-Agent, X-Forwarded-For]}
stats: {server: "127.0.0.1:50062", flush_interval: 250ms, max_batch: 100, buffer: 1000, timeout: 2s,
        retry_max: 10s, spool_dir: /var/lib/tollgate/spool, spool_max: 64MiB}
prices:
  gpt-4o-mini: {input: 0.15, output: 0.6, cached_input: 0.075}
  Qwen/Qwen3-8B: {input: 0, output: 0}
"""
        + BASE
    )
    config = parse_config(text, {})
    assert config.auth == AuthConfig(
        server="127.0.0.1:50061",
        timeout=0.1,
        cache_ttl=60.0,
        negative_ttl=2.0,
        cache_size=50,
        headers=("user-agent", "x-forwarded-for"),
    )
    assert config.stats == StatsConfig(
        server="127.0.0.1:50062",
        flush_interval=0.25,
        max_batch=100,
        buffer=1000,
        timeout=2.0,
        retry_max=10.0,
        spool_dir="/var/lib/tollgate/spool",
        spool_max_bytes=64 << 20,
    )
    assert config.prices == {
        "gpt-4o-mini": Price(input=0.15, output=0.6, cached_input=0.075),
        "Qwen/Qwen3-8B": Price(input=0.0, output=0.0),
    }


def test_auth_none_and_an_absent_stats_section_turn_both_off() -> None:
    config = parse_config("auth: none\n" + BASE, {})
    assert config.auth is None
    assert config.stats is None
    assert config.prices == {}


def test_limits_read_into_typed_fields() -> None:
    text = (
        """
redis: redis://127.0.0.1:6379/0
limits:
  backend: redis
  on_redis_error: closed
  redis_timeout: 250ms
  redis_prefix: "prod:rl"
  output_tokens_estimate: 512
  max_request_seconds: 5m
  rules:
    - {per: user, requests: 100}
    - {per: team, match: {team: ml, model: ["gpt-4o*", "o1"]}, tokens: 200000, window: 1h, concurrent: 50}
    - {per: key, budget: {usd: 100, period: week}}
"""
        + BASE
    )
    limits = parse_config(text, {}).limits
    assert (limits.backend, limits.fail_open, limits.redis_timeout, limits.redis_prefix) == (
        "redis",
        False,
        0.25,
        "prod:rl",
    )
    assert (limits.output_tokens_estimate, limits.max_request_seconds) == (512, 300.0)
    assert limits.rules == (
        LimitRule(per="user", requests=100),
        LimitRule(
            per="team", match={"team": ("ml",), "model": ("gpt-4o*", "o1")}, tokens=200000, window=3600.0, concurrent=50
        ),
        LimitRule(per="key", budget_usd=100.0, budget_period="week"),
    )
    assert parse_config(BASE, {}).limits == LimitsConfig()


@pytest.mark.parametrize(
    ("limits", "prefix"),
    [
        pytest.param("{backend: disk}", "limits.backend: expected memory or redis", id="backend"),
        pytest.param("{backend: redis}", "limits.backend: redis needs the top-level `redis:` URL", id="no-redis"),
        pytest.param("{on_redis_error: maybe}", "limits.on_redis_error: expected open or closed", id="policy"),
        pytest.param("{rules: [{per: tenant, requests: 1}]}", "limits.rules[0].per: expected one of", id="per"),
        pytest.param("{rules: [{per: user}]}", "limits.rules[0]: a rule needs at least one of", id="empty-rule"),
        pytest.param("{rules: [{per: user, requests: -1}]}", "limits.rules[0].requests: expected a positive", id="neg"),
        pytest.param(
            "{rules: [{per: user, requests: 1, match: {org: x}}]}",
            "limits.rules[0].match.org: unknown",
            id="match-dimension",
        ),
        pytest.param(
            "{rules: [{per: key, budget: {usd: 5, period: year}}]}",
            "limits.rules[0].budget.period: expected one of",
            id="period",
        ),
        pytest.param(
            "{rules: [{per: key, budget: {period: day}}]}", "limits.rules[0].budget.usd: required", id="budget-usd"
        ),
    ],
)
def test_bad_limits_name_the_field(limits: str, prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"limits: {limits}\n" + BASE, {})
    assert str(caught.value).startswith(prefix)
