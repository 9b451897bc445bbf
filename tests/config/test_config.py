"""Configuration: the embedded default, `${VAR}` expansion, and every bad field reported with its path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.config import (
    BackendConfig,
    ConfigError,
    GatewayConfig,
    ListenConfig,
    ModelConfig,
    Secret,
    ServerConfig,
    TargetConfig,
    default_config_text,
    load_config,
    parse_config,
    parse_duration,
)

OPENAI_KEY = "sk-proj-3xAmPl3kEyTh4tMustN3v3rPr1nt"

# A small valid config; the bad ones below each change one thing.
BASE = """
backends:
  - {name: local, provider: openai, base_url: "http://127.0.0.1:8000/v1"}
models:
  - {name: small, targets: [{backend: local, model: Qwen/Qwen3-8B}]}
"""


def test_embedded_default_without_a_key_serves_only_the_demo() -> None:
    config = load_config(None, {})
    assert [m.name for m in config.models] == ["demo"]
    assert config.models[0].targets == (TargetConfig(backend="demo", model="tollgate-demo", weight=1.0),)
    assert [b.name for b in config.backends] == ["demo"]
    assert config.backend("demo").provider == "mock"
    assert config.disabled == ("openai",)
    assert config.listen == ListenConfig(http="127.0.0.1:8080", grpc="127.0.0.1:50051")
    assert config.auth is None


def test_front_doors_are_networks() -> None:
    config = parse_config("listen: {front_doors: [10.1.2.3/8, 192.168.0.7, 'fd00::/8']}\n" + BASE, {})
    assert config.listen.front_doors == ("10.0.0.0/8", "192.168.0.7/32", "fd00::/8")


def test_embedded_default_with_a_key_switches_openai_on() -> None:
    config = load_config(None, {"OPENAI_API_KEY": OPENAI_KEY})
    assert [m.name for m in config.models] == ["demo", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    openai = config.backend("openai")
    assert openai.base_url == "https://api.openai.com/v1"
    assert isinstance(openai.api_key, Secret)
    assert openai.api_key.reveal() == OPENAI_KEY
    assert config.disabled == ()
    mini = next(m for m in config.models if m.name == "gpt-4o-mini")
    assert mini.fallback == ("demo",)
    assert mini.targets == (TargetConfig(backend="openai", model="gpt-4o-mini"),)


def test_the_key_never_prints() -> None:
    config = load_config(None, {"OPENAI_API_KEY": OPENAI_KEY})
    for text in (repr(config), str(config), repr(config.backend("openai")), f"{config.backends}"):
        assert OPENAI_KEY not in text
        assert "Secret('********')" in text


def test_default_text_is_the_packaged_file() -> None:
    text = default_config_text()
    assert "${OPENAI_API_KEY:+true}" in text
    assert parse_config(text, {}) == load_config(None, {})


def test_an_empty_key_is_no_key() -> None:
    """`OPENAI_API_KEY=` (set but empty) counts as unset for both `:-` and `:+`."""
    config = load_config(None, {"OPENAI_API_KEY": ""})
    assert [m.name for m in config.models] == ["demo"]


# ---------------------------------------------------------------------------------------------------- expansion


def _expanded(value: str, env: dict[str, str]) -> str:
    config = parse_config(BASE.replace("model: Qwen/Qwen3-8B", f'model: "{value}"'), env)
    return config.models[0].targets[0].model


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        pytest.param("${MODEL}", {"MODEL": "qwen3"}, "qwen3", id="plain"),
        pytest.param("${MODEL}", {"MODEL": ""}, "", id="plain-empty"),
        pytest.param("org/${MODEL}-${SIZE}", {"MODEL": "qwen3", "SIZE": "8b"}, "org/qwen3-8b", id="several"),
        pytest.param("${MODEL:-qwen3}", {}, "qwen3", id="default-unset"),
        pytest.param("${MODEL:-qwen3}", {"MODEL": ""}, "qwen3", id="default-empty"),
        pytest.param("${MODEL:-qwen3}", {"MODEL": "llama"}, "llama", id="default-set"),
        pytest.param("${MODEL:-}", {}, "", id="default-nothing"),
        pytest.param("x${FLAG:+-fast}", {"FLAG": "1"}, "x-fast", id="alternate-set"),
        pytest.param("x${FLAG:+-fast}", {}, "x", id="alternate-unset"),
        pytest.param("x${FLAG:+-fast}", {"FLAG": ""}, "x", id="alternate-empty"),
        pytest.param("$MODEL", {"MODEL": "qwen3"}, "$MODEL", id="no-braces-is-literal"),
        pytest.param("${MODEL}", {"MODEL": "${OTHER}"}, "${OTHER}", id="values-are-not-expanded-again"),
    ],
)
def test_expansion(value: str, env: dict[str, str], expected: str) -> None:
    assert _expanded(value, env) == expected


def test_expansion_cannot_change_the_document_structure() -> None:
    """A value is expanded after parsing: YAML in it stays a string."""
    assert _expanded("${MODEL}", {"MODEL": "a, b: [c]\nd: e"}) == "a, b: [c]\nd: e"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            BASE.replace("model: Qwen/Qwen3-8B", "model: '${MODEL}'"),
            "models[0].targets[0].model: environment variable MODEL is not set",
            id="target-model",
        ),
        pytest.param(
            BASE.replace('base_url: "http://127.0.0.1:8000/v1"', "api_key: '${VLLM_KEY}'"),
            "backends[0].api_key: environment variable VLLM_KEY is not set",
            id="api-key",
        ),
        pytest.param(
            "listen: {http: '${HOST}:8080'}\n" + BASE,
            "listen.http: environment variable HOST is not set",
            id="listen",
        ),
    ],
)
def test_missing_variable_names_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    assert str(caught.value) == message


def test_environment_can_enable_a_backend_and_set_durations() -> None:
    text = """
backends:
  - name: local
    provider: openai
    base_url: "${VLLM_URL:-http://127.0.0.1:8000/v1}"
    read_timeout: "${READ_TIMEOUT:-30s}"
    enabled: "${VLLM_ON:+true}"
  - {name: demo, provider: mock}
models:
  - {name: small, targets: [{backend: local}], fallback: [tiny]}
  - {name: tiny, targets: [{backend: demo}]}
"""
    off = parse_config(text, {})
    assert [m.name for m in off.models] == ["tiny"]
    on = parse_config(text, {"VLLM_ON": "yes", "READ_TIMEOUT": "250ms", "VLLM_URL": "https://vllm.internal/v1/"})
    local = on.backend("local")
    assert local.read_timeout == 0.25
    assert local.base_url == "https://vllm.internal/v1"  # the trailing slash is dropped
    assert on.models[0] == ModelConfig(name="small", targets=(TargetConfig("local", "small"),), fallback=("tiny",))


# ---------------------------------------------------------------------------------------------------- bad configs


def _replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


BAD = [
    pytest.param(
        _replace("backend: local,", "backend: nope,"),
        "models[0].targets[0].backend: unknown backend 'nope'",
        id="unknown-backend",
    ),
    pytest.param(BASE + "rate_limits: {}\n", "rate_limits: unknown field", id="unknown-top-level-field"),
    pytest.param(
        _replace("provider: openai,", "provider: openai, timeout: 5s,"),
        "backends[0].timeout: unknown field",
        id="unknown-backend-field",
    ),
    pytest.param(
        _replace("model: Qwen/Qwen3-8B", "model: Qwen/Qwen3-8B, weigth: 1"),
        "models[0].targets[0].weigth: unknown field",
        id="unknown-target-field",
    ),
    pytest.param(
        _replace("{name: small,", "{name: small, fallbacks: [],"),
        "models[0].fallbacks: unknown field",
        id="unknown-model-field",
    ),
    pytest.param(
        BASE.replace("backends:\n", "backends:\n  - {name: local, provider: mock}\n"),
        "backends[1].name: duplicate backend 'local'",
        id="duplicate-backend",
    ),
    pytest.param(
        BASE.replace("backends:\n", "backends:\n  - {name: local, provider: mock, enabled: false}\n"),
        "backends[1].name: duplicate backend 'local'",
        id="duplicate-of-disabled-backend",
    ),
    pytest.param(
        BASE + "  - {name: small, targets: [{backend: local}]}\n",
        "models[1].name: duplicate model 'small'",
        id="duplicate-model",
    ),
    pytest.param(
        _replace('base_url: "http://127.0.0.1:8000/v1"', "read_timeout: soon"),
        "backends[0].read_timeout: expected a duration such as 250ms, 30s or 5m, got 'soon'",
        id="bad-duration",
    ),
    pytest.param(
        _replace('base_url: "http://127.0.0.1:8000/v1"', "connect_timeout: 5 sec"),
        "backends[0].connect_timeout: expected a duration such as 250ms, 30s or 5m, got '5 sec'",
        id="bad-duration-unit",
    ),
    pytest.param(
        _replace('base_url: "http://127.0.0.1:8000/v1"', "read_timeout: 0s"),
        "backends[0].read_timeout: must be more than zero",
        id="zero-duration",
    ),
    pytest.param(
        "server: {shutdown_grace: -1}\n" + BASE,
        "server.shutdown_grace: must be more than zero",
        id="negative-duration",
    ),
    pytest.param(
        "server: {max_body: 8 megabytes}\n" + BASE,
        "server.max_body: expected a size such as 8MiB or 512KB, got '8 megabytes'",
        id="bad-size",
    ),
    pytest.param(
        "server: {max_body: 1.5MiB}\n" + BASE,
        "server.max_body: expected a size such as 8MiB or 512KB, got '1.5MiB'",
        id="fractional-size",
    ),
    pytest.param("server: {max_body: 0}\n" + BASE, "server.max_body: must be more than zero", id="zero-size"),
    pytest.param(
        "listen: {http: localhost}\n" + BASE, "listen.http: expected host:port, got 'localhost'", id="address-no-port"
    ),
    pytest.param(
        "listen: {grpc: '127.0.0.1:70000'}\n" + BASE,
        "listen.grpc: expected host:port, got '127.0.0.1:70000'",
        id="address-port-out-of-range",
    ),
    pytest.param(
        "listen: {http: ':8080'}\n" + BASE, "listen.http: expected host:port, got ':8080'", id="address-no-host"
    ),
    pytest.param(
        "listen: {http: 'localhost:http'}\n" + BASE,
        "listen.http: expected host:port, got 'localhost:http'",
        id="address-named-port",
    ),
    pytest.param(
        "listen: {front_doors: [10.0.0.0/8, front-door.internal]}\n" + BASE,
        "listen.front_doors[1]: expected an IP address or network (CIDR), got 'front-door.internal'",
        id="front-door-not-a-network",
    ),
    pytest.param(
        "listen: {front_doors: 10.0.0.0/8}\n" + BASE,
        "listen.front_doors: expected a list, got str",
        id="front-doors",
    ),
    pytest.param(
        _replace("targets: [", "fallback: [ghost], targets: ["),
        "models[0].fallback[0]: unknown model 'ghost'",
        id="fallback-unknown",
    ),
    pytest.param(
        _replace("targets: [", "fallback: [small], targets: ["),
        "models[0].fallback[0]: a model cannot fall back to itself",
        id="fallback-itself",
    ),
    pytest.param(
        _replace("targets: [{backend: local, model: Qwen/Qwen3-8B}]", "targets: []"),
        "models[0].targets: at least one target is required",
        id="targets-empty",
    ),
    pytest.param(
        _replace("targets: [{backend: local, model: Qwen/Qwen3-8B}]", "fallback: []"),
        "models[0].targets: required",
        id="targets-missing",
    ),
    pytest.param(
        _replace("targets: [{backend: local, model: Qwen/Qwen3-8B}]", "targets: local"),
        "models[0].targets: expected a list, got str",
        id="targets-not-a-list",
    ),
    pytest.param(
        _replace("model: Qwen/Qwen3-8B", "model: Qwen/Qwen3-8B, weight: 0"),
        "models[0].targets[0].weight: expected a positive number, got 0",
        id="weight-zero",
    ),
    pytest.param(
        _replace("model: Qwen/Qwen3-8B", "model: Qwen/Qwen3-8B, weight: -2"),
        "models[0].targets[0].weight: expected a positive number, got -2",
        id="weight-negative",
    ),
    pytest.param(
        _replace("model: Qwen/Qwen3-8B", "model: Qwen/Qwen3-8B, weight: heavy"),
        "models[0].targets[0].weight: expected a positive number, got 'heavy'",
        id="weight-string",
    ),
    pytest.param(_replace("{name: local,", "{"), "backends[0].name: required", id="backend-name-missing"),
    pytest.param(
        _replace("{name: local,", "{name: 'my backend',"),
        "backends[0].name: 'my backend' is not a valid name (letters, digits and . _ : / @ -)",
        id="backend-name-invalid",
    ),
    pytest.param(_replace("provider: openai, ", ""), "backends[0].provider: required", id="backend-provider-missing"),
    pytest.param(
        _replace('"http://127.0.0.1:8000/v1"', '"127.0.0.1:8000/v1"'),
        "backends[0].base_url: expected an http:// or https:// URL, got '127.0.0.1:8000/v1'",
        id="base-url-no-scheme",
    ),
    pytest.param(
        _replace("provider: openai,", "provider: openai, enabled: maybe,"),
        "backends[0].enabled: expected true or false, got 'maybe'",
        id="enabled-not-a-bool",
    ),
    pytest.param(
        _replace("provider: openai,", "provider: openai, max_connections: 0,"),
        "backends[0].max_connections: expected a positive whole number, got 0",
        id="max-connections-zero",
    ),
    pytest.param(
        _replace("provider: openai,", "provider: openai, headers: [x],"),
        "backends[0].headers: expected a mapping, got list",
        id="headers-not-a-mapping",
    ),
    pytest.param(
        _replace("provider: openai,", "provider: openai, headers: {X-Tags: [a]},"),
        "backends[0].headers.X-Tags: expected a string, got list",
        id="header-value-list",
    ),
    pytest.param("backends: {local: {}}\n", "backends: expected a list, got dict", id="backends-not-a-list"),
    pytest.param("backends: [local]\n", "backends[0]: expected a mapping, got str", id="backend-not-a-mapping"),
    pytest.param("auth: {keys: [a]}\n" + BASE, "auth.server: required", id="auth-no-server"),
    pytest.param("auth: sometimes\n" + BASE, "auth: expected a mapping, got str", id="auth-not-a-mapping"),
    pytest.param("auth: {server: localhost}\n" + BASE, "auth.server: expected host:port", id="auth-server"),
    pytest.param("auth: {server: '127.0.0.1:1', timeout: 0}\n" + BASE, "auth.timeout: must be more", id="auth-timeout"),
    pytest.param("auth: {server: '127.0.0.1:1', headers: x}\n" + BASE, "auth.headers: expected a list", id="headers"),
    pytest.param("stats: {flush_interval: 1s}\n" + BASE, "stats.server: required", id="stats-no-server"),
    pytest.param("stats: {server: '127.0.0.1:1', buffer: -1}\n" + BASE, "stats.buffer: expected a positive", id="buf"),
    pytest.param("stats: {server: '127.0.0.1:1', spool: x}\n" + BASE, "stats.spool: unknown field", id="stats-field"),
    pytest.param("stats: {server: '127.0.0.1:1', write_ahead: 2}\n" + BASE, "stats.write_ahead: expected", id="wa"),
    pytest.param("stats: {server: '127.0.0.1:1', fsync_interval: -1}\n" + BASE, "stats.fsync_interval: must", id="fs"),
    pytest.param("server: {drain_delay: soon}\n" + BASE, "server.drain_delay: expected a duration", id="drain"),
    pytest.param("server: {header_timeout: 0}\n" + BASE, "server.header_timeout: must be more", id="header-timeout"),
    pytest.param("server: {max_connections: 0}\n" + BASE, "server.max_connections: expected a positive", id="conns"),
    pytest.param("prices: [gpt]\n" + BASE, "prices: expected a mapping of model name", id="prices-not-a-mapping"),
    pytest.param("prices: {gpt: {input: 1}}\n" + BASE, "prices.gpt.output: required", id="price-missing"),
    pytest.param("prices: {gpt: {input: -1, output: 1}}\n" + BASE, "prices.gpt.input: expected US dollars", id="neg"),
    pytest.param("prices: {gpt: {input: 1, output: 2, cache: 1}}\n" + BASE, "prices.gpt.cache: unknown", id="pfield"),
    pytest.param(
        "redis: localhost:6379\n" + BASE, "redis: expected a redis://, rediss://, unix://, redis+cluster://", id="redis"
    ),
    pytest.param("backends: []\nmodels: []\n", "models: at least one model with an enabled backend", id="no-models"),
    pytest.param("", "models: at least one model with an enabled backend", id="empty-file"),
    pytest.param(
        BASE.replace("provider: openai,", "provider: openai, enabled: false,"),
        "models: at least one model with an enabled backend",
        id="every-backend-disabled",
    ),
    pytest.param("- listen\n", "config: expected a mapping, got list", id="not-a-mapping"),
    pytest.param("listen: [\n", "not valid YAML: ", id="not-yaml"),
]


@pytest.mark.parametrize(("text", "prefix"), BAD)
def test_bad_config_names_the_field(text: str, prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    assert str(caught.value).startswith(prefix)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_replace("model: Qwen/Qwen3-8B", "model: Qwen/Qwen3-8B, weight: .nan"), id="weight"),
        pytest.param(_replace('base_url: "http://127.0.0.1:8000/v1"', "read_timeout: .nan"), id="read-timeout"),
        pytest.param("server: {shutdown_grace: .nan}\n" + BASE, id="shutdown-grace"),
    ],
)
def test_nan_is_not_a_positive_number(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text, {})


# ---------------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("30d", 30 * 86400.0),
        ("1.5s", 1.5),
        (" 10 s ", 10.0),
        ("2", 2.0),
        (2, 2.0),
        (0.1, 0.1),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert math.isclose(parse_duration(value, "x"), seconds)


@pytest.mark.parametrize("value", ["", "5 minutes", "-1s", "1w", "ms", True, "0ms"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "backends[0].read_timeout")
    assert str(caught.value).startswith("backends[0].read_timeout: ")


@pytest.mark.parametrize(
    ("value", "size"),
    [("8MiB", 8 * 1024 * 1024), ("512KB", 512_000), ("64KiB", 65536), ("1GB", 10**9), ("100B", 100), (4096, 4096)],
)
def test_sizes(value: object, size: int) -> None:
    config = parse_config(f"server: {{max_body: {value}, shutdown_grace: 5m}}\n" + BASE, {})
    assert config.server == ServerConfig(max_body_bytes=size, shutdown_grace=300.0)


def test_a_full_backend_reads_into_typed_fields() -> None:
    text = """
listen: {http: "0.0.0.0:0", grpc: "[::1]:50051"}
server: {max_body: 8MiB, shutdown_grace: 250ms}
redis: redis://127.0.0.1:6379/0
backends:
  - name: vllm-a
    provider: openai
    base_url: http://10.0.0.5:8000/v1/
    api_key: token-abc123
    headers: {X-Org: research, X-Retries: 3}
    connect_timeout: 2s
    read_timeout: 5m
    max_connections: 32
    options: {stream_usage: true}
models:
  - {name: Qwen/Qwen3-8B, owned_by: research, targets: [{backend: vllm-a, weight: 2.5}]}
"""
    config = parse_config(text, {})
    assert config.listen == ListenConfig(http="0.0.0.0:0", grpc="[::1]:50051")
    assert config.server == ServerConfig(max_body_bytes=8 * 1024 * 1024, shutdown_grace=0.25)
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.backends == (
        BackendConfig(
            name="vllm-a",
            provider="openai",
            base_url="http://10.0.0.5:8000/v1",
            api_key=Secret("token-abc123"),
            headers={"X-Org": "research", "X-Retries": "3"},
            connect_timeout=2.0,
            read_timeout=300.0,
            max_connections=32,
            options={"stream_usage": True},
        ),
    )
    assert config.models == (
        ModelConfig(name="Qwen/Qwen3-8B", targets=(TargetConfig("vllm-a", "Qwen/Qwen3-8B", 2.5),), owned_by="research"),
    )


def test_config_is_immutable() -> None:
    config = parse_config(BASE, {})
    with pytest.raises(AttributeError):
        config.models = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.backends[0].headers["X"] = "y"  # type: ignore[index]


def test_disabled_backend_drops_its_models_and_fallbacks_to_them() -> None:
    text = """
backends:
  - {name: paid, provider: openai, base_url: "https://api.openai.com/v1", enabled: false}
  - {name: demo, provider: mock}
models:
  - {name: big, targets: [{backend: paid}]}
  - {name: both, targets: [{backend: paid}, {backend: demo}], fallback: [big]}
"""
    config = parse_config(text, {})
    assert config == GatewayConfig(
        backends=(BackendConfig(name="demo", provider="mock"),),
        models=(ModelConfig(name="both", targets=(TargetConfig("demo", "both"),), fallback=()),),
        disabled=("paid",),
    )


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(BASE, encoding="utf-8")
    assert load_config(path, {}) == parse_config(BASE, {})
    assert load_config(str(path), {}).models[0].name == "small"


def test_load_config_on_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, {})
    assert str(caught.value) == f"{missing}: No such file or directory"


def test_load_config_on_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, {})
    assert str(caught.value).startswith(f"{tmp_path}: ")
