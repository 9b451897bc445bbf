"""The top-level `redis:` setting: a URL, or a mapping naming a cluster's seed nodes; either way a URL afterwards.

    redis: redis://10.0.0.5:6379/0                              # one Redis
    redis: redis+cluster://10.0.0.5:6379,10.0.0.6:6379          # a Redis Cluster, from any of these seeds
    redis: {cluster: [10.0.0.5:6379, 10.0.0.6:6379], password: "${REDIS_PASSWORD}", tls: true}

See `gateway.redis_client` for what each form connects to.
"""

from __future__ import annotations

from typing import Any

from gateway.config.fields import ConfigError, _bool, _Node, _str, _str_list
from gateway.redis_client import RedisUrlError, cluster_url, validate


def redis_url(value: Any, path: str) -> str:
    """The setting as a URL; `ConfigError` with the path of the bad field (never with a password) otherwise."""
    if isinstance(value, dict):
        return _mapping(_Node(value, path))
    url = _str(value, path)
    try:
        validate(url)
    except RedisUrlError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return url


def _mapping(node: _Node) -> str:
    url = node.get("url", _str, None)
    seeds = node.get("cluster", _str_list, None)
    username = node.get("username", _str, None)
    password = node.get("password", _str, None)
    tls = node.get("tls", _bool, False)
    node.done()
    if (url is None) == (seeds is None):
        raise ConfigError(f"{node.path}: expected exactly one of `url` or `cluster` (a list of host:port seed nodes)")
    if url is not None:
        if username or password or tls:
            raise ConfigError(f"{node.path}: with `url`, put the credentials and rediss:// in the URL")
        return redis_url(url, node.at("url"))
    if not seeds:
        raise ConfigError(f"{node.at('cluster')}: at least one seed node (host:port) is required")
    try:
        return cluster_url(list(seeds), username=username, password=password, tls=tls)
    except RedisUrlError as exc:
        raise ConfigError(f"{node.at('cluster')}: {exc}") from None
