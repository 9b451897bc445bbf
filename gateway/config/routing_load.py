"""Reading the routing sections of a configuration: `routing:` (retry, health), `routes:`, `admin:` and each model's
`balancing`, `aliases`, `context_fallback` and `experiment`. Every problem names the path of the bad field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from gateway.config.fields import (
    ConfigError,
    _bool,
    _globs,
    _list,
    _name,
    _Node,
    _positive_int,
    _positive_number,
    _str,
    parse_duration,
)
from gateway.config.model import ModelConfig, Secret, TargetConfig
from gateway.config.routing import (
    BALANCING_POLICIES,
    EXPERIMENT_KEYS,
    ActiveCheckConfig,
    AdminConfig,
    ExperimentConfig,
    HealthConfig,
    RetryConfig,
    RouteMatch,
    RouteRule,
    RoutingConfig,
)
from gateway.config.routing_prompt import deciding_models, deciding_rule, features, prompt_tokens

_RETRY, _HEALTH, _ACTIVE = RetryConfig(), HealthConfig(), ActiveCheckConfig()
_HEADER_KEY = "header:"

TargetReader = Callable[[_Node], TargetConfig | None]


def _share(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"{path}: expected a share between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _whole(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: expected a whole number ≥ 0, got {value!r}")
    return value


def routing_config(node: _Node, routes: list[Any], admin: _Node | None) -> RoutingConfig:
    """`routing:` (given as `node`), the top-level `routes:` list and the `admin:` section."""
    retry = node.get("retry", lambda v, p: _retry(_Node(v, p)), _RETRY)
    health = node.get("health", lambda v, p: _health(_Node(v, p)), _HEALTH)
    node.done()
    rules = tuple(_route(_Node(raw, f"routes[{i}]")) for i, raw in enumerate(routes))
    names = [r.name for r in rules]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"routes[{i}].name: duplicate route {name!r}")
    return RoutingConfig(retry=retry, health=health, routes=rules, admin=_admin(admin))


def _retry(node: _Node) -> RetryConfig:
    retry = RetryConfig(
        attempts_per_target=node.get("attempts_per_target", _positive_int, _RETRY.attempts_per_target),
        attempt_timeout=node.get("attempt_timeout", parse_duration, None),
        deadline=node.get("deadline", parse_duration, None),
        backoff_base=node.get("backoff_base", parse_duration, _RETRY.backoff_base),
        backoff_max=node.get("backoff_max", parse_duration, _RETRY.backoff_max),
        retry_after_max=node.get("retry_after_max", parse_duration, _RETRY.retry_after_max),
        budget_ratio=node.get("budget_ratio", _positive_number, _RETRY.budget_ratio),
        budget_min=node.get("budget_min", _whole, _RETRY.budget_min),
        budget_window=node.get("budget_window", parse_duration, _RETRY.budget_window),
    )
    node.done()
    if retry.backoff_max < retry.backoff_base:
        raise ConfigError(f"{node.at('backoff_max')}: must be at least backoff_base")
    return retry


def _health(node: _Node) -> HealthConfig:
    health = HealthConfig(
        consecutive_failures=node.get("consecutive_failures", _positive_int, _HEALTH.consecutive_failures),
        error_rate=node.get("error_rate", _share_or_one, _HEALTH.error_rate),
        error_rate_min_requests=node.get("error_rate_min_requests", _positive_int, _HEALTH.error_rate_min_requests),
        error_rate_window=node.get("error_rate_window", parse_duration, _HEALTH.error_rate_window),
        ejection_base=node.get("ejection_base", parse_duration, _HEALTH.ejection_base),
        ejection_max=node.get("ejection_max", parse_duration, _HEALTH.ejection_max),
        ejection_reset=node.get("ejection_reset", parse_duration, _HEALTH.ejection_reset),
        half_open_probes=node.get("half_open_probes", _positive_int, _HEALTH.half_open_probes),
        rate_limit_cooldown=node.get("rate_limit_cooldown", parse_duration, _HEALTH.rate_limit_cooldown),
        latency_decay=node.get("latency_decay", parse_duration, _HEALTH.latency_decay),
        active=node.get("active", lambda v, p: _active(_Node(v, p)), None),
    )
    node.done()
    if health.ejection_max < health.ejection_base:
        raise ConfigError(f"{node.at('ejection_max')}: must be at least ejection_base")
    return health


def _share_or_one(value: Any, path: str) -> float:
    if value == 1:
        return 1.0
    return _share(value, path)


def _active(node: _Node) -> ActiveCheckConfig:
    active = ActiveCheckConfig(
        interval=node.get("interval", parse_duration, _ACTIVE.interval),
        timeout=node.get("timeout", parse_duration, _ACTIVE.timeout),
        unhealthy_after=node.get("unhealthy_after", _positive_int, _ACTIVE.unhealthy_after),
        healthy_after=node.get("healthy_after", _positive_int, _ACTIVE.healthy_after),
    )
    node.done()
    return active


def _admin(node: _Node | None) -> AdminConfig:
    if node is None:
        return AdminConfig()
    token = node.get("token", _str, "")
    node.done()
    if token and len(token) < 16:
        raise ConfigError(f"{node.at('token')}: an admin token needs at least 16 characters")
    return AdminConfig(token=Secret(token) if token else None)


def _route(node: _Node) -> RouteRule:
    name = node.require("name", _name)
    to = node.get("to", _name, "")
    match = node.get("match", lambda v, p: _match(_Node(v, p)), RouteMatch())
    semantic = node.get("semantic", _Node, None)
    classifier = node.get("classifier", _Node, None)
    node.done()
    given = sum(1 for part in (to, semantic, classifier) if part)
    if given == 0:
        raise ConfigError(f"{node.at('to')}: required (or `semantic:`, or `classifier:`)")
    if given > 1:
        raise ConfigError(f"{node.path}: a route has exactly one of `to`, `semantic` or `classifier`")
    if semantic is not None or classifier is not None:
        return deciding_rule(name, match, semantic, classifier)
    return RouteRule(name=name, to=to, match=match)


def _match(node: _Node) -> RouteMatch:
    match = RouteMatch(
        prompt_tokens=node.get("prompt_tokens", lambda v, p: prompt_tokens(_Node(v, p)), None),
        features=node.get("features", features, ()),
        model=node.get("model", _globs, ()),
        key_id=node.get("key_id", _globs, ()),
        user=node.get("user", _globs, ()),
        team=node.get("team", _globs, ()),
        headers=node.get("headers", lambda v, p: _glob_map(v, p, lower=True), MappingProxyType({})),
        labels=node.get("labels", lambda v, p: _glob_map(v, p, lower=False), MappingProxyType({})),
    )
    node.done()
    return match


def _glob_map(value: Any, path: str, *, lower: bool) -> Mapping[str, tuple[str, ...]]:
    node = _Node(value, path)
    none: tuple[str, ...] = ()
    result = {(str(k).lower() if lower else str(k)): node.get(str(k), _globs, none) for k in list(node.value)}
    node.done()
    return MappingProxyType(result)


def model_routing(node: _Node, read_target: TargetReader) -> dict[str, Any]:
    """A model's routing fields, as keyword arguments for `ModelConfig`."""
    balancing = node.get("balancing", _str, "weighted")
    if balancing not in BALANCING_POLICIES:
        raise ConfigError(f"{node.at('balancing')}: expected one of {', '.join(BALANCING_POLICIES)}, got {balancing!r}")
    raw_aliases: list[Any] = node.get("aliases", _list, [])
    raw_context: list[Any] = node.get("context_fallback", _list, [])
    return {
        "balancing": balancing,
        "aliases": tuple(_name(a, f"{node.at('aliases')}[{i}]") for i, a in enumerate(raw_aliases)),
        "context_fallback": tuple(_name(m, f"{node.at('context_fallback')}[{i}]") for i, m in enumerate(raw_context)),
        "experiment": node.get("experiment", lambda v, p: _experiment(_Node(v, p), read_target), None),
        "stream_failover": node.get("stream_failover", _bool, False),
    }


def _experiment(node: _Node, read_target: TargetReader) -> ExperimentConfig | None:
    name = node.require("name", _name)
    share = node.require("share", _share)
    key = node.get("key", _str, "user")
    if key not in EXPERIMENT_KEYS and not (key.startswith(_HEADER_KEY) and len(key) > len(_HEADER_KEY)):
        raise ConfigError(f"{node.at('key')}: expected user, key, team or header:<name>, got {key!r}")
    raw_targets: list[Any] = node.require("targets", _list)
    if not raw_targets:
        raise ConfigError(f"{node.at('targets')}: at least one target is required")
    targets = [read_target(_Node(raw, f"{node.at('targets')}[{j}]")) for j, raw in enumerate(raw_targets)]
    node.done()
    kept = tuple(t for t in targets if t is not None)
    # An experiment whose treatment backends are all disabled is switched off with them.
    return ExperimentConfig(name=name, share=share, targets=kept, key=key.lower()) if kept else None


def check_model_names(read: list[tuple[str, ModelConfig]]) -> None:
    """Aliases are unique and clash with no model; context fallbacks are other models."""
    names = {m.name for _, m in read}
    seen: set[str] = set()
    for path, model in read:
        for i, alias in enumerate(model.aliases):
            if alias in names or alias in seen:
                raise ConfigError(f"{path}.aliases[{i}]: {alias!r} already names a model or an alias")
            seen.add(alias)
        for i, bigger in enumerate(model.context_fallback):
            if bigger not in names or bigger == model.name:
                raise ConfigError(f"{path}.context_fallback[{i}]: unknown model {bigger!r}")


def served_routes(
    models: tuple[ModelConfig, ...], routes: tuple[RouteRule, ...], declared: list[Any]
) -> tuple[RouteRule, ...]:
    """The routes to a served model (or alias). A route to a model left out with its disabled backends is left out
    too, like a fallback to it; a route to a model the file never declares is an error."""
    served = {m.name for m in models} | {a for m in models for a in m.aliases}
    kept: list[RouteRule] = []
    for i, rule in enumerate(routes):
        if rule.decides:
            kept.extend(deciding_models(rule, f"routes[{i}]", served, declared))
            continue
        if rule.to not in served and rule.to not in declared:
            raise ConfigError(f"routes[{i}].to: unknown model {rule.to!r}")
        if rule.to in served:
            kept.append(rule)
    return tuple(kept)
