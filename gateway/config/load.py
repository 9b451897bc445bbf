"""Load, expand and validate a YAML configuration.

Every string value may use `${VAR}`, `${VAR:-default}` (default when unset or empty) and `${VAR:+word}` (word when
set and non-empty, else empty), and `${file:PATH}` the content of a file (a mounted Kubernetes Secret; one trailing
newline dropped), read again at every load, so a reload picks up a rotated secret. Expansion happens after YAML
parsing, so a variable's value can never change the document's structure. Every problem is reported with the path
of the bad field, as in `models[2].targets[0].backend: unknown backend 'foo'`. The converters live in `fields`; the
routing, cache and telemetry sections are read in their own modules (`routing_load`, `cache_load`,
`telemetry_load`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.config import redis_load, routing_load
from gateway.config.cache_load import _cache, _check_semantic, _model_cache
from gateway.config.fields import (
    ConfigError,
    _address,
    _bool,
    _globs,
    _header_map,
    _kind,
    _list,
    _name,
    _networks,
    _Node,
    _positive_int,
    _positive_number,
    _size,
    _str,
    _str_list,
    _url,
    duration_or_zero,
    parse_duration,
)
from gateway.config.model import (
    AuthConfig,
    BackendConfig,
    CacheConfig,
    GatewayConfig,
    LimitRule,
    LimitsConfig,
    ListenConfig,
    ModelConfig,
    Price,
    ResponsesConfig,
    Secret,
    ServerConfig,
    StatsConfig,
    TargetConfig,
)
from gateway.config.routing import RoutingConfig
from gateway.config.routing_wake import wake_config
from gateway.config.shaping import RequestShaping, ShapingError, parse_shaping
from gateway.config.telemetry import TelemetryConfig
from gateway.config.telemetry_load import _telemetry
from gateway.config.tls import TLSConfig
from gateway.config.tls_load import client_tls, tls_config

# One pass for both forms, so a variable's value or a file's content is never expanded again.
_VAR = re.compile(r"\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\+)([^}]*))?)\}")
# Defaults, read off instances: slotted dataclasses keep no class-level default values.
_LISTEN, _SERVER, _BACKEND = ListenConfig(), ServerConfig(), BackendConfig(name="", provider="")
_AUTH, _STATS, _LIMITS, _RULE = AuthConfig(server=""), StatsConfig(server=""), LimitsConfig(), LimitRule(per="")
_LIMIT_SCOPES = ("key", "user", "team", "model", "global")
_BUDGET_PERIODS = ("day", "week", "month", "total")


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
        if m.group(1) is not None:
            return _secret_file(m.group(1), path)
        name, op, word = m.group(2), m.group(3), m.group(4) or ""
        current = env.get(name, "")
        if op == ":-":
            return current or word
        if op == ":+":
            return word if current else ""
        if name not in env:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return current

    if "${" not in value:
        return value
    return _VAR.sub(sub, value)


def _secret_file(name: str, path: str) -> str:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the secret file {name}: {reason}") from None
    return text.removesuffix("\n").removesuffix("\r")


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


def _audio_size(value: Any, path: str) -> int:
    size = _size(value, path)
    if size > _MAX_AUDIO:
        raise ConfigError(f"{path}: at most 48MiB (it crosses the engine's 64 MiB gRPC message limit in split mode)")
    return size


_MAX_AUDIO = 48 * 1024 * 1024


def _responses(node: _Node) -> ResponsesConfig:
    default = ResponsesConfig()
    responses = ResponsesConfig(
        ttl=node.get("ttl", parse_duration, default.ttl),
        max_items=node.get("max_items", _positive_int, default.max_items),
        key_prefix=node.get("key_prefix", _str, default.key_prefix),
    )
    node.done()
    return responses


def _price(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{path}: expected US dollars per million tokens (a number ≥ 0), got {value!r}")
    return float(value)


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
        redis = node.get("redis", redis_load.redis_url, None)
        telemetry = node.get("telemetry", lambda v, p: _telemetry(_Node(v, p)), TelemetryConfig())
        tls = node.get("tls", tls_config, TLSConfig())
        if limits.backend == "redis" and redis is None:
            raise ConfigError("limits.backend: redis needs the top-level `redis:` URL")
        cache = node.get("cache", lambda v, p: _cache(_Node(v, p)), CacheConfig())
        responses = node.get("responses", lambda v, p: _responses(_Node(v, p)), ResponsesConfig())
        if cache.redis and redis is None:
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
            redis_url=redis,
            cache=cache,
            backends=tuple(backends),
            models=models,
            disabled=dropped,
            telemetry=telemetry,
            routing=routing,
            tls=tls,
            responses=responses,
        )

    @staticmethod
    def routing(node: _Node, models: tuple[ModelConfig, ...]) -> RoutingConfig:
        section = node.get("routing", _Node, None) or _Node({}, "routing")
        routing = routing_load.routing_config(section, node.get("routes", _list, []), node.get("admin", _Node, None))
        raw_models = [m for m in node.value.get("models") or [] if isinstance(m, dict)]
        declared = [name for m in raw_models for name in (m.get("name"), *(m.get("aliases") or ()))]
        return replace(routing, routes=routing_load.served_routes(models, routing.routes, declared))

    def listen(self, node: _Node) -> ListenConfig:
        http = node.get("http", _address, _LISTEN.http)
        grpc = node.get("grpc", _address, _LISTEN.grpc)
        front_doors = node.get("front_doors", _networks, _LISTEN.front_doors)
        node.done()
        return ListenConfig(http=http, grpc=grpc, front_doors=front_doors)

    def server(self, node: _Node) -> ServerConfig:
        server = ServerConfig(
            max_body_bytes=node.get("max_body", _size, _SERVER.max_body_bytes),
            shutdown_grace=node.get("shutdown_grace", parse_duration, _SERVER.shutdown_grace),
            drain_delay=node.get("drain_delay", duration_or_zero, _SERVER.drain_delay),
            header_timeout=node.get("header_timeout", parse_duration, _SERVER.header_timeout),
            body_timeout=node.get("body_timeout", parse_duration, _SERVER.body_timeout),
            keepalive_timeout=node.get("keepalive_timeout", parse_duration, _SERVER.keepalive_timeout),
            max_connections=node.get("max_connections", _positive_int, _SERVER.max_connections),
            max_audio_bytes=node.get("max_audio", _audio_size, _SERVER.max_audio_bytes),
            reload_poll=node.get("reload_poll", duration_or_zero, _SERVER.reload_poll),
            reload_grace=node.get("reload_grace", parse_duration, _SERVER.reload_grace),
        )
        node.done()
        return server

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
            tls=node.get("tls", client_tls, None),
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
            write_ahead=node.get("write_ahead", _bool, _STATS.write_ahead),
            fsync_interval=node.get("fsync_interval", duration_or_zero, _STATS.fsync_interval),
            tls=node.get("tls", client_tls, None),
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
            per_image = node.get("per_image", _price, 0.0)
            if per_image:  # a model priced per image alone (dall-e-3) needs no token prices
                paid = node.get("input", _price, 0.0), node.get("output", _price, 0.0)
            else:
                paid = node.require("input", _price), node.require("output", _price)
            prices[str(name)] = Price(*paid, cached, per_image)
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
            headers=node.get("headers", _header_map, MappingProxyType({})),
            connect_timeout=node.get("connect_timeout", parse_duration, _BACKEND.connect_timeout),
            read_timeout=node.get("read_timeout", parse_duration, _BACKEND.read_timeout),
            max_connections=node.get("max_connections", _positive_int, _BACKEND.max_connections),
            options=MappingProxyType(dict(options)),
            shaping=_shaping(node),
            wake=node.get("wake", lambda v, p: wake_config(_Node(v, p)), None),
            continuation=node.get("continue", _str, ""),
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
