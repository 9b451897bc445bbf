"""The routing sections: `routing:` (retry, health), `routes:`, `admin:` and each model's routing fields."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, TargetConfig, parse_config
from gateway.config.routing import ActiveCheckConfig, ExperimentConfig, RetryConfig, RouteMatch, RouteRule

BACKENDS = """
backends:
  - {name: a, provider: openai, base_url: "http://127.0.0.1:8000/v1"}
  - {name: b, provider: openai, base_url: "http://127.0.0.1:8001/v1"}
  - {name: unused, provider: openai, base_url: "http://127.0.0.1:8002/v1", enabled: false}
"""
MODELS = """
models:
  - name: small
    aliases: [small-latest]
    balancing: latency
    context_fallback: [big]
    targets: [{backend: a, model: s, priority: 0}, {backend: b, model: s, priority: 1, weight: 2}]
    experiment: {name: try-b, share: 0.1, key: "header:X-Session", targets: [{backend: b, model: s2}]}
  - {name: big, targets: [{backend: a, model: b}]}
"""


def test_everything_reads_into_typed_fields() -> None:
    text = (
        """
routing:
  retry: {attempts_per_target: 2, attempt_timeout: 20s, deadline: 1m, backoff_base: 10ms, backoff_max: 1s,
          retry_after_max: 5s, budget_ratio: 0.1, budget_min: 3, budget_window: 30s}
  health: {consecutive_failures: 3, error_rate: 0.3, ejection_base: 1s, ejection_max: 1m, half_open_probes: 2,
           active: {interval: 5s, timeout: 500ms}}
routes:
  - {name: ml, to: big, match: {model: "small*", team: ml-*, headers: {X-Tier: gold}, labels: {plan: [pro, max]}}}
  - {name: default, to: small-latest}
admin: {token: "0123456789abcdef"}
"""
        + BACKENDS
        + MODELS
    )
    config = parse_config(text, {})
    routing = config.routing
    assert routing.retry == RetryConfig(
        attempts_per_target=2,
        attempt_timeout=20.0,
        deadline=60.0,
        backoff_base=0.01,
        backoff_max=1.0,
        retry_after_max=5.0,
        budget_ratio=0.1,
        budget_min=3,
        budget_window=30.0,
    )
    assert routing.health.consecutive_failures == 3 and routing.health.half_open_probes == 2
    assert routing.health.active == ActiveCheckConfig(interval=5.0, timeout=0.5)
    assert routing.routes[0] == RouteRule(
        "ml",
        "big",
        RouteMatch(model=("small*",), team=("ml-*",), headers={"x-tier": ("gold",)}, labels={"plan": ("pro", "max")}),
    )
    assert routing.routes[1] == RouteRule("default", "small-latest")
    assert routing.admin.token is not None and routing.admin.token.reveal() == "0123456789abcdef"
    small = config.models[0]
    assert small.aliases == ("small-latest",) and small.balancing == "latency" and small.context_fallback == ("big",)
    assert small.targets[1] == TargetConfig(backend="b", model="s", weight=2.0, priority=1)
    assert small.experiment == ExperimentConfig(
        name="try-b", share=0.1, key="header:x-session", targets=(TargetConfig(backend="b", model="s2"),)
    )


def test_defaults_without_any_routing_section() -> None:
    config = parse_config(BACKENDS + MODELS, {})
    assert config.routing.retry == RetryConfig()
    assert config.routing.routes == () and config.routing.admin.token is None


def test_an_experiment_on_a_disabled_backend_is_switched_off() -> None:
    text = BACKENDS + MODELS.replace("targets: [{backend: b, model: s2}]", "targets: [{backend: unused}]")
    assert parse_config(text, {}).models[0].experiment is None


def _swap(old: str, new: str) -> str:
    text = BACKENDS + MODELS
    assert old in text
    return text.replace(old, new)


BAD = [
    ("routing: {retry: {attempts_per_target: 0}}\n" + BACKENDS + MODELS, "routing.retry.attempts_per_target:"),
    ("routing: {retry: {deadline: soon}}\n" + BACKENDS + MODELS, "routing.retry.deadline: expected a duration"),
    ("routing: {retry: {backoff_base: 2s, backoff_max: 1s}}\n" + BACKENDS + MODELS, "routing.retry.backoff_max:"),
    ("routing: {retry: {retries: 3}}\n" + BACKENDS + MODELS, "routing.retry.retries: unknown field"),
    ("routing: {health: {error_rate: 1.5}}\n" + BACKENDS + MODELS, "routing.health.error_rate: expected a share"),
    ("routing: {health: {active: {interval: 0}}}\n" + BACKENDS + MODELS, "routing.health.active.interval:"),
    ("routing: {circuit: {}}\n" + BACKENDS + MODELS, "routing.circuit: unknown field"),
    ("routes: [{name: r, to: nowhere}]\n" + BACKENDS + MODELS, "routes[0].to: unknown model 'nowhere'"),
    ("routes: [{name: r}]\n" + BACKENDS + MODELS, "routes[0].to: required"),
    ("routes: [{name: r, to: big}, {name: r, to: big}]\n" + BACKENDS + MODELS, "routes[1].name: duplicate route"),
    ("routes: [{name: r, to: big, match: {tenant: x}}]\n" + BACKENDS + MODELS, "routes[0].match.tenant: unknown"),
    ("admin: {token: short}\n" + BACKENDS + MODELS, "admin.token: an admin token needs at least 16"),
    (_swap("balancing: latency", "balancing: fastest"), "models[0].balancing: expected one of"),
    (_swap("aliases: [small-latest]", "aliases: [big]"), "models[0].aliases[0]: 'big' already names"),
    (_swap("context_fallback: [big]", "context_fallback: [huge]"), "models[0].context_fallback[0]: unknown model"),
    (_swap("priority: 1,", "priority: -1,"), "models[0].targets[1].priority: expected a tier number"),
    (_swap("share: 0.1", "share: 1"), "models[0].experiment.share: expected a share"),
    (_swap('key: "header:X-Session"', "key: cookie"), "models[0].experiment.key: expected user, key, team"),
    (_swap("targets: [{backend: b, model: s2}]", "targets: [{backend: zz}]"), "models[0].experiment.targets[0]"),
    (_swap("targets: [{backend: b, model: s2}]", "targets: []"), "models[0].experiment.targets: at least one"),
]


@pytest.mark.parametrize(("text", "prefix"), BAD, ids=[b[1].split(":")[0] + str(i) for i, b in enumerate(BAD)])
def test_bad_routing_config_names_the_field(text: str, prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    assert str(caught.value).startswith(prefix), str(caught.value)


def test_a_route_to_a_model_on_disabled_backends_is_left_out_with_it() -> None:
    text = (
        "routes: [{name: to-gone, to: gone}, {name: to-old, to: old-name}, {name: to-big, to: big}]\n"
        + BACKENDS
        + MODELS
        + "  - {name: gone, aliases: [old-name], targets: [{backend: unused}]}\n"
    )
    config = parse_config(text, {})
    assert [r.name for r in config.routing.routes] == ["to-big"]
    assert "gone" not in {m.name for m in config.models}
