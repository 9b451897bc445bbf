"""The `redis:` setting: one Redis or a Redis Cluster, as a URL or a mapping; bad values name the field, never a
password."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.redis_client import parse_cluster_url

BASE = """
backends:
  - {name: local, provider: openai, base_url: "http://127.0.0.1:8000/v1"}
models:
  - {name: small, targets: [{backend: local, model: Qwen/Qwen3-8B}]}
"""


def _redis(setting: str, env: dict[str, str] | None = None) -> str | None:
    return parse_config(f"redis: {setting}\n{BASE}", env or {}).redis_url


@pytest.mark.parametrize(
    "setting",
    ["redis://127.0.0.1:6379/0", "rediss://user:pw@cache.internal:6380/2", "unix:///run/redis.sock"],
)
def test_a_single_redis_url_is_kept_as_written(setting: str) -> None:
    assert _redis(setting) == setting
    assert parse_cluster_url(setting) is None


def test_a_cluster_url_lists_its_seed_nodes() -> None:
    url = _redis("redis+cluster://10.0.0.5:6379,10.0.0.6:6380")
    assert url == "redis+cluster://10.0.0.5:6379,10.0.0.6:6380"
    target = parse_cluster_url(url)
    assert target is not None
    assert target.seeds == (("10.0.0.5", 6379), ("10.0.0.6", 6380))
    assert (target.username, target.password, target.tls) == (None, None, False)


def test_the_mapping_form_builds_the_cluster_url_with_quoted_credentials() -> None:
    url = _redis(
        '{cluster: ["a.internal:7000", "b.internal"], username: app, password: "${PW}", tls: true}', {"PW": "p@ss:w/rd"}
    )
    assert url is not None and url.startswith("rediss+cluster://app:")
    target = parse_cluster_url(url)
    assert target is not None
    assert target.seeds == (("a.internal", 7000), ("b.internal", 6379))
    assert (target.username, target.password, target.tls) == ("app", "p@ss:w/rd", True)


def test_the_mapping_form_may_name_one_redis() -> None:
    assert _redis("{url: redis://10.0.0.5:6379/1}") == "redis://10.0.0.5:6379/1"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("localhost:6379", "redis: expected a redis://"),
        ("redis+cluster://10.0.0.5:notaport", "redis: expected seed nodes as host:port"),
        ("redis+cluster://10.0.0.5:6379/3", "redis: a cluster URL takes seed nodes only"),
        ("redis://10.0.0.5:port/0", "redis: bad port"),
        ("{cluster: []}", "redis.cluster: at least one seed node"),
        ("{cluster: [a:1], url: redis://a:1}", "redis: expected exactly one of `url` or `cluster`"),
        ("{}", "redis: expected exactly one of `url` or `cluster`"),
        ("{cluster: [a:1], port: 3}", "redis.port: unknown field"),
        ("{cluster: [a:99999]}", "redis.cluster: expected seed nodes as host:port"),
        ("{url: redis://a:1, password: x}", "redis: with `url`, put the credentials"),
    ],
)
def test_a_bad_setting_names_the_field(setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _redis(setting)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_bad_setting_never_repeats_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        _redis("redis+cluster://app:hunter2@10.0.0.5:xx")
    assert "hunter2" not in str(caught.value)
    assert "app:***@" in str(caught.value)


def test_limits_and_cache_on_redis_need_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"limits\.backend: redis needs the top-level `redis:`"):
        parse_config("limits: {backend: redis}\n" + BASE, {})
