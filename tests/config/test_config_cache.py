"""The cache's sections: the top-level tiers and each model's own `cache:`, each bad field named."""

from __future__ import annotations

import re

import pytest

from gateway.config import CacheConfig, ConfigError, ModelCacheConfig, SemanticCacheConfig, parse_config


def config_text(model_cache: str = "", top: str = "") -> str:
    cache = f", cache: {model_cache}" if model_cache else ""
    return f"""
{top}
backends:
  - {{name: local, provider: openai, base_url: "http://127.0.0.1:8000/v1"}}
models:
  - {{name: small, targets: [{{backend: local}}]{cache}}}
  - {{name: embedder, targets: [{{backend: local}}]}}
"""


def test_defaults_cache_nothing() -> None:
    config = parse_config(config_text(), {})
    assert config.cache == CacheConfig()
    assert all(m.cache is None for m in config.models)


def test_the_sections_read_into_typed_fields() -> None:
    top = """redis: redis://127.0.0.1:6379/0
cache: {l1_max_bytes: 8MiB, max_entry_bytes: 256KiB, redis: true, redis_timeout: 20ms, compress_over: 1KiB,
        key_prefix: "prod:cache"}"""
    semantic = "{embedding_model: embedder, threshold: 0.9, max_entries: 500}"
    config = parse_config(config_text(f"{{ttl: 5m, scope: team, semantic: {semantic}}}", top), {})
    assert config.cache == CacheConfig(8 << 20, 256 << 10, True, 0.02, 1024, "prod:cache")
    assert config.models[0].cache == ModelCacheConfig(300.0, "team", SemanticCacheConfig("embedder", 0.9, 500))
    assert parse_config(config_text("{}"), {}).models[0].cache == ModelCacheConfig()


@pytest.mark.parametrize(
    ("model_cache", "top", "error"),
    [
        ("{scope: tenant}", "", "models[0].cache.scope: expected one of key, user, team, global, got 'tenant'"),
        ("{ttl: 0}", "", "models[0].cache.ttl: must be more than zero"),
        ("{ttls: 1m}", "", "models[0].cache.ttls: unknown field"),
        ("{semantic: {threshold: 0.9}}", "", "models[0].cache.semantic.embedding_model: required"),
        (
            "{semantic: {embedding_model: nope}}",
            "",
            "models[0].cache.semantic.embedding_model: unknown model 'nope'",
        ),
        (
            "{semantic: {embedding_model: embedder, threshold: 1.5}}",
            "",
            "models[0].cache.semantic.threshold: a cosine similarity is at most 1",
        ),
        ("", "cache: {redis: true}", "cache.redis: true needs the top-level `redis:` URL"),
        ("", "cache: {l1_max_bytes: lots}", "cache.l1_max_bytes: expected a size"),
        ("", "cache: {l2: yes}", "cache.l2: unknown field"),
    ],
)
def test_bad_fields_are_named(model_cache: str, top: str, error: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(error)):
        parse_config(config_text(model_cache, top), {})
