"""Route rules, aliases and the default route."""

from __future__ import annotations

from types import MappingProxyType

from gateway.auth.principal import Principal
from gateway.config import GatewayConfig, ModelConfig, TargetConfig
from gateway.config.routing import ExperimentConfig, RouteMatch, RouteRule, RoutingConfig
from gateway.engine.routes import Caller, RouteTable, routing_headers

T = (TargetConfig(backend="b", model="x"),)
MODELS = (
    ModelConfig(name="gpt-4o", targets=T, aliases=("gpt-4-latest",)),
    ModelConfig(name="gpt-4o-mini", targets=T),
    ModelConfig(name="canary", targets=T),
    ModelConfig(name="cheap", targets=T),
)


def ctx(headers: dict[str, str] | None = None, **who: object) -> Caller:
    labels = MappingProxyType(who.pop("labels", {}))  # type: ignore[arg-type]
    principal = Principal(
        key_id=str(who.get("key_id", "k1")), user=str(who.get("user", "")), team=str(who.get("team", "")), labels=labels
    )
    return Caller(headers=headers or {}, principal=principal)


RULES = (
    RouteRule(
        "canary-header", "canary", RouteMatch(model=("gpt-4o*",), headers=MappingProxyType({"x-canary": ("yes",)}))
    ),
    RouteRule("ml-team", "gpt-4o", RouteMatch(model=("gpt-4o-mini",), team=("ml-*",))),
    RouteRule(
        "pro-plan", "gpt-4-latest", RouteMatch(labels=MappingProxyType({"plan": ("pro",)}), user=("alice", "bob"))
    ),
)


def test_first_matching_rule_wins() -> None:
    table = RouteTable(RULES, MODELS)
    assert table.resolve("gpt-4o-mini", ctx({"x-canary": "yes"}, team="ml-a")) == ("canary", "canary-header")
    assert table.resolve("gpt-4o-mini", ctx(team="ml-a")) == ("gpt-4o", "ml-team")
    assert table.resolve("gpt-4o-mini", ctx(team="sales")) == ("gpt-4o-mini", "")


def test_labels_and_user_must_both_match_and_the_destination_may_be_an_alias() -> None:
    table = RouteTable(RULES, MODELS)
    assert table.resolve("cheap", ctx(user="alice", labels={"plan": "pro"})) == ("gpt-4o", "pro-plan")
    assert table.resolve("cheap", ctx(user="carol", labels={"plan": "pro"})) == ("cheap", "")
    assert table.resolve("cheap", ctx(user="alice", labels={"plan": "free"})) == ("cheap", "")
    assert table.resolve("cheap", ctx(user="alice")) == ("cheap", "")


def test_aliases_resolve_to_their_model() -> None:
    table = RouteTable((), MODELS)
    assert table.resolve("gpt-4-latest", ctx()) == ("gpt-4o", "")
    assert table.knows("gpt-4-latest") and table.knows("gpt-4o") and not table.knows("gpt-5")


def test_a_rule_without_match_is_the_default_route() -> None:
    table = RouteTable((*RULES, RouteRule("default", "cheap")), MODELS)
    assert table.resolve("anything-at-all", ctx()) == ("cheap", "default")
    assert table.knows("anything-at-all")


def test_header_names_are_what_a_split_front_door_forwards() -> None:
    experiment = ExperimentConfig(name="e", share=0.5, targets=T, key="header:x-session")
    models = (*MODELS, ModelConfig(name="tried", targets=T, experiment=experiment))
    config = GatewayConfig(models=models, routing=RoutingConfig(routes=RULES))
    assert routing_headers(config) == ("x-canary", "x-session")


def test_an_anonymous_caller_matches_no_identity_rule() -> None:
    table = RouteTable(RULES, MODELS)
    assert table.resolve("gpt-4o-mini", Caller()) == ("gpt-4o-mini", "")
