"""Load, expand and validate a YAML configuration.

Every string value may use `${VAR}`, `${VAR:-default}` (default when unset or empty) and `${VAR:+word}` (word when
set and non-empty, else empty). Expansion happens after YAML parsing, so a variable's value can never change the
document's structure. Every problem is reported with the path of the bad field, as in
`models[2].targets[0].backend: unknown backend 'foo'`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from gateway.config.model import (
    AuthConfig,
    BackendConfig,
    CacheConfig,
    GatewayConfig,
    LimitRule,
    LimitsConfig,
    ListenConfig,
    ModelCacheConfig,
    ModelConfig,
    Price,
    Secret,
    SemanticCacheConfig,
    ServerConfig,
    StatsConfig,
    TargetConfig,
)
from gateway.config.routing import RoutingConfig
from gateway.config.shaping import RequestShaping, ShapingError, parse_shaping
from gateway.config.telemetry import (
    LOG_FORMATS,
    PII_KINDS,
    AuditConfig,
    LogsConfig,
    MetricsConfig,
    TelemetryConfig,
    TracingConfig,
)

T = TypeVar("T")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\+)([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Defaults, read off instances: slotted dataclasses keep no class-level default values.
_LISTEN, _SERVER, _BACKEND = ListenConfig(), ServerConfig(), BackendConfig(name="", provider="")
_AUTH, _STATS, _LIMITS, _RULE = AuthConfig(server=""), StatsConfig(server=""), LimitsConfig(), LimitRule(per="")
_LIMIT_SCOPES = ("key", "user", "team", "model", "global")
_BUDGET_PERIODS = ("day", "week", "month", "total")
_CACHE, _MODEL_CACHE = CacheConfig(), ModelCacheConfig()
_CACHE_SCOPES = ("key", "user", "team", "global")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the bad field."""


def default_config_text() -> str:
    """The embedded default configuration (a demo backend, and OpenAI when OPENAI_API_KEY is set)."""
    return resources.files("gateway.config").joinpath("default.yaml").read_text(encoding="utf-8")


def load_config(path: str | Path | None, env: Mapping[str, str]) -> GatewayConfig:
    """Read `path` (the embedded default when None) and build the validated configuration."""
    if path is None:
        return parse_config(default_config_text(), env)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    return parse_config(text, env)


def parse_config(text: str, env: Mapping[str, str]) -> GatewayConfig:
    """Build the validated configuration from YAML text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    return _Builder(env).gateway(_Node(_expand(raw, env, ""), ""))


def _expand(value: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):
        return _expand_str(value, env, path)
    if isinstance(value, list):
        return [_expand(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def _expand_str(value: str, env: Mapping[str, str], path: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, op, word = m.group(1), m.group(2), m.group(3) or ""
        current = env.get(name, "")
        if op == ":-":
            return current or word
        if op == ":+":
            return word if current else ""
        if name not in env:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return current

    return _VAR.sub(sub, value) if "${" in value else value


class _Node:
    """A mapping being read, which remembers its path and refuses fields nobody read."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {_kind(value)}")
        self.value: dict[str, Any] = value
        self.path = path
        self._read: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, convert: Callable[[Any, str], T], default: T) -> T:
        self._read.add(key)
        if key not in self.value or self.value[key] is None:
            return default
        return convert(self.value[key], self.at(key))

    def require(self, key: str, convert: Callable[[Any, str], T]) -> T:
        self._read.add(key)
        if key not in self.value or self.value[key] is None:
            raise ConfigError(f"{self.at(key)}: required")
        return convert(self.value[key], self.at(key))

    def raw(self, key: str) -> Any:
        self._read.add(key)
        return self.value.get(key)

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.value if k not in self._read)
        if unknown:
            raise ConfigError(f"{self.at(unknown[0])}: unknown field")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
    return str(value)


def _name(value: Any, path: str) -> str:
    text = _str(value, path)
    if not _NAME.match(text):
        raise ConfigError(f"{path}: {text!r} is not a valid name (letters, digits and . _ : / @ -)")
    return text


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    # An expanded `${VAR:+true}` is "" when VAR is unset: that reads as off.
    if isinstance(value, str) and value.strip().lower() in ("", "true", "false", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "yes", "on")
    raise ConfigError(f"{path}: expected true or false, got {value!r}")


def _positive_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{path}: expected a positive number, got {value!r}")
    return float(value)


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{path}: expected a positive whole number, got {value!r}")
    return value


def parse_duration(value: Any, path: str) -> float:
    """`250ms`, `30s`, `5m`, `1h`, or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{path}: expected a duration such as 250ms, 30s or 5m, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not 0 < seconds < math.inf:
        raise ConfigError(f"{path}: must be more than zero and finite")
    return seconds


def _size(value: Any, path: str) -> int:
    """`8MiB`, `512KB`, or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ConfigError(f"{path}: expected a size such as 8MiB or 512KB, got {value!r}")
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if size <= 0:
        raise ConfigError(f"{path}: must be more than zero")
    return size


def _address(value: Any, path: str) -> str:
    text = _str(value, path)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{path}: expected host:port, got {text!r}")
    return text


def _url(value: Any, path: str) -> str:
    text = _str(value, path)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: expected an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _str_map(value: Any, path: str) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
    return MappingProxyType({str(k): _str(v, f"{path}.{k}") for k, v in value.items()})


def _shaping(node: _Node) -> RequestShaping:
    try:
        return parse_shaping(node.raw("defaults"), node.raw("overrides"), node.raw("remove"), node.path)
    except ShapingError as exc:
        raise ConfigError(str(exc)) from None


def _limit_rule(node: _Node) -> LimitRule:
    per = node.require("per", _str)
    if per not in _LIMIT_SCOPES:
        raise ConfigError(f"{node.at('per')}: expected one of {', '.join(_LIMIT_SCOPES)}, got {per!r}")
    match: dict[str, tuple[str, ...]] = {}
    raw_match = node.get("match", _Node, None)
    if raw_match is not None:
        for dimension in _LIMIT_SCOPES[:-1]:
            value = raw_match.get(dimension, _globs, None)
            if value is not None:
                match[dimension] = value
        raw_match.done()
    budget = node.get("budget", _Node, None)
    usd, period = 0.0, _RULE.budget_period
    if budget is not None:
        usd = budget.require("usd", _positive_number)
        period = budget.get("period", _str, _RULE.budget_period)
        if period not in _BUDGET_PERIODS:
            raise ConfigError(f"{budget.at('period')}: expected one of {', '.join(_BUDGET_PERIODS)}, got {period!r}")
        budget.done()
    rule = LimitRule(
        per=per,
        match=MappingProxyType(match),
        requests=node.get("requests", _positive_int, 0),
        tokens=node.get("tokens", _positive_int, 0),
        window=node.get("window", parse_duration, _RULE.window),
        concurrent=node.get("concurrent", _positive_int, 0),
        budget_usd=usd,
        budget_period=period,
    )
    node.done()
    if not (rule.requests or rule.tokens or rule.concurrent or rule.budget_usd):
        raise ConfigError(f"{node.path}: a rule needs at least one of requests, tokens, concurrent or budget")
    return rule


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


def _globs(value: Any, path: str) -> tuple[str, ...]:
    """One glob or a list of them."""
    items = value if isinstance(value, list) else [value]
    return tuple(_str(v, f"{path}[{i}]" if isinstance(value, list) else path) for i, v in enumerate(items))


def _price(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{path}: expected US dollars per million tokens (a number ≥ 0), got {value!r}")
    return float(value)


def _str_list(value: Any, path: str) -> list[str]:
    return [_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))]


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
    return value


class _Builder:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def gateway(self, node: _Node) -> GatewayConfig:
        listen = node.get("listen", lambda v, p: self.listen(_Node(v, p)), ListenConfig())
        server = node.get("server", lambda v, p: self.server(_Node(v, p)), ServerConfig())
        auth = self.auth(node.raw("auth"), node.at("auth"))
        stats = node.get("stats", lambda v, p: self.stats(_Node(v, p)), None)
        no_prices: Mapping[str, Price] = MappingProxyType({})
        prices = node.get("prices", self.prices, no_prices)
        limits = node.get("limits", lambda v, p: self.limits(_Node(v, p)), LimitsConfig())
        redis_url = node.get("redis", _str, None)
        telemetry = node.get("telemetry", lambda v, p: _telemetry(_Node(v, p)), TelemetryConfig())
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{node.at('redis')}: expected a redis:// URL, got {redis_url!r}")
        if limits.backend == "redis" and redis_url is None:
            raise ConfigError("limits.backend: redis needs the top-level `redis:` URL")
        cache = node.get("cache", lambda v, p: _cache(_Node(v, p)), CacheConfig())
        if cache.redis and redis_url is None:
            raise ConfigError("cache.redis: true needs the top-level `redis:` URL")
        raw_backends: list[Any] = node.get("backends", _list, [])
        backends: list[BackendConfig] = []
        disabled: list[str] = []
        for i, raw in enumerate(raw_backends):
            backend, enabled = self.backend(_Node(raw, f"{node.at('backends')}[{i}]"))
            if any(b.name == backend.name for b in backends) or backend.name in disabled:
                raise ConfigError(f"{node.at('backends')}[{i}].name: duplicate backend {backend.name!r}")
            (backends.append(backend) if enabled else disabled.append(backend.name))
        models = self.models(node, {b.name for b in backends}, set(disabled))
        routing = self.routing(node, models)
        node.done()
        if not models:
            raise ConfigError("models: at least one model with an enabled backend is required")
        dropped = tuple(disabled)
        return GatewayConfig(
            listen=listen,
            server=server,
            auth=auth,
            stats=stats,
            prices=prices,
            limits=limits,
            redis_url=redis_url,
            cache=cache,
            backends=tuple(backends),
            models=models,
            disabled=dropped,
            telemetry=telemetry,
            routing=routing,
        )

    @staticmethod
    def routing(node: _Node, models: tuple[ModelConfig, ...]) -> RoutingConfig:
        # It reads with this module's helpers, so importing it at the top would be circular.
        from gateway.config import routing_load  # noqa: PLC0415

        section = node.get("routing", _Node, None) or _Node({}, "routing")
        routing = routing_load.routing_config(section, node.get("routes", _list, []), node.get("admin", _Node, None))
        raw_models = [m for m in node.value.get("models") or [] if isinstance(m, dict)]
        declared = [name for m in raw_models for name in (m.get("name"), *(m.get("aliases") or ()))]
        return dataclasses.replace(routing, routes=routing_load.served_routes(models, routing.routes, declared))

    def listen(self, node: _Node) -> ListenConfig:
        http = node.get("http", _address, _LISTEN.http)
        grpc = node.get("grpc", _address, _LISTEN.grpc)
        node.done()
        return ListenConfig(http=http, grpc=grpc)

    def server(self, node: _Node) -> ServerConfig:
        max_body = node.get("max_body", _size, _SERVER.max_body_bytes)
        grace = node.get("shutdown_grace", parse_duration, _SERVER.shutdown_grace)
        node.done()
        return ServerConfig(max_body_bytes=max_body, shutdown_grace=grace)

    @staticmethod
    def auth(value: Any, path: str) -> AuthConfig | None:
        if value is None or value == "none":
            return None  # an absent section is `auth: none` too; the startup log says so loudly
        node = _Node(value, path)
        auth = AuthConfig(
            server=node.require("server", _address),
            timeout=node.get("timeout", parse_duration, _AUTH.timeout),
            cache_ttl=node.get("cache_ttl", parse_duration, _AUTH.cache_ttl),
            negative_ttl=node.get("negative_ttl", parse_duration, _AUTH.negative_ttl),
            cache_size=node.get("cache_size", _positive_int, _AUTH.cache_size),
            headers=tuple(h.lower() for h in node.get("headers", _str_list, list[str]())),
        )
        node.done()
        return auth

    @staticmethod
    def stats(node: _Node) -> StatsConfig:
        stats = StatsConfig(
            server=node.require("server", _address),
            flush_interval=node.get("flush_interval", parse_duration, _STATS.flush_interval),
            max_batch=node.get("max_batch", _positive_int, _STATS.max_batch),
            buffer=node.get("buffer", _positive_int, _STATS.buffer),
            timeout=node.get("timeout", parse_duration, _STATS.timeout),
            retry_max=node.get("retry_max", parse_duration, _STATS.retry_max),
            spool_dir=node.get("spool_dir", _str, _STATS.spool_dir),
            spool_max_bytes=node.get("spool_max", _size, _STATS.spool_max_bytes),
        )
        node.done()
        return stats

    @staticmethod
    def limits(node: _Node) -> LimitsConfig:
        backend = node.get("backend", _str, _LIMITS.backend)
        if backend not in ("memory", "redis"):
            raise ConfigError(f"{node.at('backend')}: expected memory or redis, got {backend!r}")
        on_error = node.get("on_redis_error", _str, "open")
        if on_error not in ("open", "closed"):
            raise ConfigError(f"{node.at('on_redis_error')}: expected open or closed, got {on_error!r}")
        raw_rules: list[Any] = node.get("rules", _list, [])
        limits = LimitsConfig(
            backend=backend,
            fail_open=on_error == "open",
            redis_timeout=node.get("redis_timeout", parse_duration, _LIMITS.redis_timeout),
            redis_prefix=node.get("redis_prefix", _str, _LIMITS.redis_prefix),
            output_tokens_estimate=node.get("output_tokens_estimate", _positive_int, _LIMITS.output_tokens_estimate),
            max_request_seconds=node.get("max_request_seconds", parse_duration, _LIMITS.max_request_seconds),
            rules=tuple(_limit_rule(_Node(raw, f"{node.at('rules')}[{i}]")) for i, raw in enumerate(raw_rules)),
        )
        node.done()
        return limits

    @staticmethod
    def prices(value: Any, path: str) -> Mapping[str, Price]:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of model name to prices, got {_kind(value)}")
        prices: dict[str, Price] = {}
        for name, raw in value.items():
            node = _Node(raw, f"{path}.{name}")
            cached = node.get("cached_input", _price, None)
            prices[str(name)] = Price(node.require("input", _price), node.require("output", _price), cached)
            node.done()
        return MappingProxyType(prices)

    def backend(self, node: _Node) -> tuple[BackendConfig, bool]:
        name = node.require("name", _name)
        provider = node.require("provider", _name)
        enabled = node.get("enabled", _bool, True)
        api_key = node.get("api_key", _str, "")
        options: dict[str, Any] = node.get("options", lambda v, p: _Node(v, p).value, {})
        backend = BackendConfig(
            name=name,
            provider=provider,
            base_url=node.get("base_url", _url, ""),
            api_key=Secret(api_key) if api_key else None,
            headers=node.get("headers", _str_map, MappingProxyType({})),
            connect_timeout=node.get("connect_timeout", parse_duration, _BACKEND.connect_timeout),
            read_timeout=node.get("read_timeout", parse_duration, _BACKEND.read_timeout),
            max_connections=node.get("max_connections", _positive_int, _BACKEND.max_connections),
            options=MappingProxyType(dict(options)),
            shaping=_shaping(node),
        )
        node.done()
        return backend, enabled

    def models(self, node: _Node, backends: set[str], disabled: set[str]) -> tuple[ModelConfig, ...]:
        read: list[tuple[str, ModelConfig]] = []
        raw_models: list[Any] = node.get("models", _list, [])
        for i, raw in enumerate(raw_models):
            path = f"{node.at('models')}[{i}]"
            model = self.model(_Node(raw, path), backends, disabled)
            if any(m.name == model.name for _, m in read):
                raise ConfigError(f"{path}.name: duplicate model {model.name!r}")
            read.append((path, model))
        names = {m.name for _, m in read}
        for path, model in read:
            for j, name in enumerate(model.fallback):
                if name not in names:
                    raise ConfigError(f"{path}.fallback[{j}]: unknown model {name!r}")
                if name == model.name:
                    raise ConfigError(f"{path}.fallback[{j}]: a model cannot fall back to itself")
        from gateway.config import routing_load  # noqa: PLC0415 - see `routing`

        for path, model in read:
            _check_semantic(model, names, f"{path}.cache.semantic.embedding_model")
        routing_load.check_model_names(read)
        # A model whose backends are all disabled is left out, and so is any fallback to it.
        kept = {m.name for _, m in read if m.targets}
        return tuple(
            replace(
                m,
                fallback=tuple(f for f in m.fallback if f in kept),
                context_fallback=tuple(f for f in m.context_fallback if f in kept),
            )
            for _, m in read
            if m.targets
        )

    def model(self, node: _Node, backends: set[str], disabled: set[str]) -> ModelConfig:
        from gateway.config import routing_load  # noqa: PLC0415 - see `routing`

        name = node.require("name", _name)

        def read_target(target: _Node) -> TargetConfig | None:
            return _target(target, name, backends, disabled)

        raw_targets = node.require("targets", _list)
        targets = [read_target(_Node(raw, f"{node.at('targets')}[{j}]")) for j, raw in enumerate(raw_targets)]
        if not raw_targets:
            raise ConfigError(f"{node.at('targets')}: at least one target is required")
        raw_fallback: list[Any] = node.get("fallback", _list, [])
        fallback = tuple(_name(f, f"{node.at('fallback')}[{k}]") for k, f in enumerate(raw_fallback))
        owned_by = node.get("owned_by", _str, "tollgate")
        cache = node.get("cache", lambda v, p: _model_cache(_Node(v, p)), None)
        routing = routing_load.model_routing(node, read_target)
        node.done()
        kept = tuple(t for t in targets if t is not None)
        return ModelConfig(name=name, targets=kept, fallback=fallback, owned_by=owned_by, cache=cache, **routing)


def _target(node: _Node, model: str, backends: set[str], disabled: set[str]) -> TargetConfig | None:
    """One target of a model; None when its backend is disabled."""
    backend = node.require("backend", _name)
    if backend not in backends and backend not in disabled:
        raise ConfigError(f"{node.at('backend')}: unknown backend {backend!r}")
    target = TargetConfig(
        backend=backend,
        model=node.get("model", _str, model),
        weight=node.get("weight", _positive_number, 1.0),
        priority=node.get("priority", _priority, 0),
    )
    node.done()
    return target if backend in backends else None


def _priority(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: expected a tier number ≥ 0 (0 is tried first), got {value!r}")
    return value


def _telemetry(node: _Node) -> TelemetryConfig:
    metrics = node.get("metrics", _Node, None)
    logs = node.get("logs", _Node, None)
    audit = node.get("audit", _Node, None)
    tracing = node.get("tracing", _Node, None)
    node.done()
    return TelemetryConfig(
        metrics=_metrics(metrics) if metrics else MetricsConfig(),
        logs=_logs(logs) if logs else LogsConfig(),
        audit=_audit(audit) if audit else AuditConfig(),
        tracing=_tracing(tracing) if tracing else TracingConfig(),
    )


def _metrics(node: _Node) -> MetricsConfig:
    config = MetricsConfig(enabled=node.get("enabled", _bool, True), listen=node.get("listen", _address, ""))
    node.done()
    return config


def _logs(node: _Node) -> LogsConfig:
    fmt = node.get("format", _str, "auto")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"{node.at('format')}: expected one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    pii = tuple(node.get("pii", _str_list, list(PII_KINDS)))
    for i, kind in enumerate(pii):
        if kind not in PII_KINDS:
            raise ConfigError(f"{node.at('pii')}[{i}]: expected one of {', '.join(PII_KINDS)}, got {kind!r}")
    patterns = tuple(node.get("patterns", _str_list, list[str]()))
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{node.at('patterns')}[{i}]: not a valid regular expression: {exc}") from None
    config = LogsConfig(
        format=fmt,
        access_log=node.get("access_log", _bool, True),
        pii=pii,
        patterns=patterns,
        secrets=tuple(s for s in node.get("secrets", _str_list, list[str]()) if s),
    )
    node.done()
    return config


def _audit(node: _Node) -> AuditConfig:
    config = AuditConfig(enabled=node.get("enabled", _bool, False), max_bytes=node.get("max_bytes", _size, 4096))
    node.done()
    return config


def _tracing(node: _Node) -> TracingConfig:
    endpoint = node.get("otlp_endpoint", _str, "")
    if endpoint:
        endpoint = _url(endpoint, node.at("otlp_endpoint"))
    ratio = node.get("sample_ratio", _ratio, 1.0)
    config = TracingConfig(
        otlp_endpoint=endpoint, sample_ratio=ratio, service_name=node.get("service_name", _name, "tollgate")
    )
    node.done()
    return config


def _ratio(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{path}: expected a number from 0 to 1, got {value!r}")
    return float(value)
