"""Access decided on what serves the request, in the route table and the router: a key restricted to `allowed*`,
with `forbidden` denied, is never planned onto a model it may not use, whichever way the name leads there."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest

from gateway.auth.principal import ModelAccess, Principal
from gateway.config import GatewayConfig, ModelConfig, TargetConfig
from gateway.config.routing import ExperimentConfig, RouteMatch, RouteRule, RoutingConfig
from gateway.engine import experiments
from gateway.engine.router import Attempt, Router
from gateway.engine.routes import Caller
from gateway.errors import NotFoundError, PermissionDeniedError

OWN = TargetConfig(backend="a", model="allowed-up")
SECRET = TargetConfig(backend="b", model="forbidden-up")
SPARE = TargetConfig(backend="c", model="allowed-spare-up")
TRIAL = TargetConfig(backend="b", model="forbidden")  # an experiment on a model the key may not use
TRIAL_OK = TargetConfig(backend="c", model="allowed-next")

MODELS = (
    ModelConfig(name="forbidden", targets=(SECRET,), aliases=("allowed-alias",)),
    ModelConfig(name="allowed-spare", targets=(SPARE,)),
    ModelConfig(name="allowed", targets=(OWN,), fallback=("forbidden", "allowed-spare")),
    ModelConfig(name="allowed-small", targets=(OWN,), context_fallback=("forbidden", "allowed-spare")),
    ModelConfig(
        name="allowed-trial",
        targets=(OWN,),
        experiment=ExperimentConfig(name="trial", share=0.5, targets=(TRIAL,), key="header:x-trial"),
    ),
    ModelConfig(
        name="allowed-mixed",
        targets=(OWN,),
        experiment=ExperimentConfig(name="mixed", share=0.5, targets=(TRIAL, TRIAL_OK), key="header:x-trial"),
    ),
)
UP, ANY = MappingProxyType({"x-up": ("1",)}), MappingProxyType({"x-up": ("*",)})
RULES = (
    RouteRule("to-forbidden", "forbidden", RouteMatch(model=("allowed-route",))),
    RouteRule("to-alias", "allowed-alias", RouteMatch(model=("allowed-route-alias",))),
    RouteRule("upgrade", "forbidden", RouteMatch(model=("allowed",), headers=UP)),
    RouteRule("upgrade-ok", "allowed-spare", RouteMatch(model=("allowed",), headers=ANY)),
)
CONFIG = GatewayConfig(models=MODELS, routing=RoutingConfig(routes=RULES))

RESTRICTED = Principal(key_id="k1", access=ModelAccess(("allowed*",), ("forbidden",)))
OPEN = Principal(key_id="k2")


def caller(principal: Principal, **headers: str) -> Caller:
    return Caller(headers=headers, principal=principal)


def in_treatment(experiment: str) -> str:
    """A header value whose requests are in the treatment arm (share 0.5)."""
    return next(v for v in (f"s{i}" for i in range(100)) if experiments.bucket(experiment, v) < 0.5)


def models_of(attempts: list[Attempt]) -> list[str]:
    return [a.model for a in attempts]


def test_an_alias_of_a_model_the_key_may_not_use_is_refused() -> None:
    router = Router(CONFIG, random.Random(1))
    with pytest.raises(PermissionDeniedError) as denied:
        router.route("allowed-alias", caller(RESTRICTED))
    assert denied.value.code == "model_not_allowed" and denied.value.param == "model"
    assert "forbidden'" not in denied.value.message, "where the alias leads is not told"
    assert models_of(router.route("allowed-alias", caller(OPEN)).attempts) == ["forbidden"]


def test_a_rule_to_a_model_the_key_may_not_use_does_not_apply_to_it() -> None:
    router = Router(CONFIG, random.Random(1))
    # A name only a rule serves: nothing is left for this key, a 403 (not a 404: the name exists).
    for name in ("allowed-route", "allowed-route-alias"):
        with pytest.raises(PermissionDeniedError):
            router.route(name, caller(RESTRICTED))
        assert router.route(name, caller(OPEN)).model == "forbidden"
    # A model's own name: the rule is passed over, the next that applies (or the name itself) decides.
    assert router.route("allowed", caller(RESTRICTED, **{"x-up": "1"})).rule == "upgrade-ok"
    assert router.route("allowed", caller(OPEN, **{"x-up": "1"})).rule == "upgrade"
    assert router.routes.resolve("allowed", caller(RESTRICTED, **{"x-up": "1"})) == ("allowed-spare", "upgrade-ok")
    # An unknown name with no rule is still a 404 for everyone.
    with pytest.raises(NotFoundError):
        router.route("allowed-nothing", caller(RESTRICTED))


def test_a_fallback_the_key_may_not_use_is_left_out_of_the_plan() -> None:
    router = Router(CONFIG, random.Random(1))
    plan = router.route("allowed", caller(RESTRICTED))
    assert models_of(plan.attempts) == ["allowed", "allowed-spare"]
    assert plan.access is RESTRICTED.access
    assert models_of(router.route("allowed", caller(OPEN)).attempts) == ["allowed", "forbidden", "allowed-spare"]
    assert router.route("allowed", caller(OPEN)).access is None, "an unrestricted key checks nothing"


def test_a_context_fallback_the_key_may_not_use_is_left_out() -> None:
    router = Router(CONFIG, random.Random(1))
    plan = router.route("allowed-small", caller(RESTRICTED))
    assert models_of(router.context_plan("allowed-small", plan.access)) == ["allowed-spare"]
    assert models_of(router.context_plan("allowed-small")) == ["forbidden", "allowed-spare"]


def test_a_treatment_on_a_model_the_key_may_not_use_leaves_it_in_control() -> None:
    router = Router(CONFIG, random.Random(1))
    session = in_treatment("trial")
    open_plan = router.route("allowed-trial", caller(OPEN, **{"x-trial": session}))
    assert open_plan.arm == experiments.TREATMENT
    assert [a.target for a in open_plan.attempts] == [TRIAL, OWN]
    assert open_plan.attempts[0].serves == ("allowed-trial", "forbidden")
    plan = router.route("allowed-trial", caller(RESTRICTED, **{"x-trial": session}))
    assert (plan.experiment, plan.arm) == ("trial", experiments.CONTROL)
    assert [a.target for a in plan.attempts] == [OWN]
    assert plan.attempts[0].serves == ("allowed-trial",)


def test_of_a_treatment_only_the_targets_the_key_may_use_are_drawn() -> None:
    router = Router(CONFIG, random.Random(1))
    plan = router.route("allowed-mixed", caller(RESTRICTED, **{"x-trial": in_treatment("mixed")}))
    assert plan.arm == experiments.TREATMENT
    assert [a.target for a in plan.attempts] == [TRIAL_OK, OWN]


def test_a_decision_from_the_prompt_is_planned_with_the_same_checks() -> None:
    router = Router(CONFIG, random.Random(1))
    with pytest.raises(PermissionDeniedError):
        router.route("allowed-auto", caller(RESTRICTED), decided=("forbidden", "by-topic>forbidden"))
    plan = router.route("allowed-auto", caller(RESTRICTED), decided=("allowed", "by-topic>allowed"))
    assert models_of(plan.attempts) == ["allowed", "allowed-spare"]


def test_the_route_table_serves_a_name_only_if_its_model_is_allowed_too() -> None:
    routes = Router(CONFIG).routes
    assert routes.serves(RESTRICTED, "allowed") and routes.serves(RESTRICTED, "allowed-spare")
    assert not routes.serves(RESTRICTED, "allowed-alias"), "the alias is allowed by name, its model is not"
    assert not routes.serves(RESTRICTED, "forbidden")
    assert routes.serves(OPEN, "allowed-alias") and routes.serves(None, "forbidden")
