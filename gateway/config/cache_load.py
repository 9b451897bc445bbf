"""Reading the cache sections of a configuration: the top-level `cache:` (the tiers) and each model's `cache:` (TTL,
scope, semantic matching). Every problem names the path of the bad field."""

from __future__ import annotations

from gateway.config.fields import (
    ConfigError,
    _bool,
    _name,
    _Node,
    _positive_int,
    _positive_number,
    _size,
    _str,
    parse_duration,
)
from gateway.config.model import CacheConfig, ModelCacheConfig, ModelConfig, SemanticCacheConfig

# Defaults, read off instances: slotted dataclasses keep no class-level default values.
_CACHE, _MODEL_CACHE = CacheConfig(), ModelCacheConfig()
_CACHE_SCOPES = ("key", "user", "team", "global")


def _cache(node: _Node) -> CacheConfig:
    cache = CacheConfig(
        l1_max_bytes=node.get("l1_max_bytes", _size, _CACHE.l1_max_bytes),
        max_entry_bytes=node.get("max_entry_bytes", _size, _CACHE.max_entry_bytes),
        redis=node.get("redis", _bool, _CACHE.redis),
        redis_timeout=node.get("redis_timeout", parse_duration, _CACHE.redis_timeout),
        compress_over=node.get("compress_over", _size, _CACHE.compress_over),
        key_prefix=node.get("key_prefix", _str, _CACHE.key_prefix),
    )
    node.done()
    return cache


def _model_cache(node: _Node) -> ModelCacheConfig:
    scope = node.get("scope", _str, _MODEL_CACHE.scope)
    if scope and scope not in _CACHE_SCOPES:
        raise ConfigError(f"{node.at('scope')}: expected one of {', '.join(_CACHE_SCOPES)}, got {scope!r}")
    cache = ModelCacheConfig(
        ttl=node.get("ttl", parse_duration, _MODEL_CACHE.ttl),
        scope=scope,
        semantic=node.get("semantic", lambda v, p: _semantic(_Node(v, p)), None),
    )
    node.done()
    return cache


def _semantic(node: _Node) -> SemanticCacheConfig:
    threshold = node.get("threshold", _positive_number, 0.95)
    if threshold > 1:
        raise ConfigError(f"{node.at('threshold')}: a cosine similarity is at most 1, got {threshold!r}")
    semantic = SemanticCacheConfig(
        embedding_model=node.require("embedding_model", _name),
        threshold=threshold,
        max_entries=node.get("max_entries", _positive_int, 10_000),
    )
    node.done()
    return semantic


def _check_semantic(model: ModelConfig, names: set[str], path: str) -> None:
    semantic = model.cache.semantic if model.cache is not None else None
    if semantic is not None and semantic.embedding_model not in names:
        raise ConfigError(f"{path}: unknown model {semantic.embedding_model!r}")
