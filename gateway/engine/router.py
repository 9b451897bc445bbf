"""Which targets to try for a request, in which order.

The route table (gateway.engine.routes) resolves the requested name to a model; an experiment on that model may put
the request in its treatment arm (gateway.engine.experiments), whose targets then come first; the model's healthy
targets follow in its balancing policy's order (gateway.engine.balancing), then each fallback model's.

Access is decided on what can serve the request, with the caller's model access: the model the name resolves to must
be one the caller may use (else a 403); a fallback or context fallback model it may not use is left out of the
plan, and so is a treatment target whose own model it may not use (with none left, the request is in the control
arm). So what the plan lists is all the caller may be served by.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig, ModelConfig, TargetConfig
from gateway.config.routing import HealthConfig
from gateway.engine import balancing, experiments
from gateway.engine.health import HealthBoard
from gateway.engine.routes import NOBODY, Caller, RouteTable
from gateway.errors import NotFoundError, model_not_allowed

if TYPE_CHECKING:
    from gateway.auth.principal import ModelAccess


@dataclass(frozen=True, slots=True)
class Attempt:
    """One place to send a request: the client-facing model it serves, and the backend target."""

    model: str
    target: TargetConfig
    arm: bool = False  # a target of the model's experiment (its treatment arm), which serves its own model
    # The model names access is decided on for this attempt: the configured model's, and a treatment target's own.
    serves: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "serves", (self.model, self.target.model) if self.arm else (self.model,))


@dataclass(slots=True)  # made once per request: not frozen, whose __init__ costs several times more
class Plan:
    """The attempts for one request, and how they were chosen."""

    model: str  # the configured model that serves the request
    attempts: list[Attempt]
    rule: str = ""  # the route rule that chose the model, if any
    experiment: str = ""
    arm: str = ""  # experiments.CONTROL or TREATMENT when the model runs an experiment
    requested: str = ""  # the name the client asked for (an alias, or a name a route rule resolved)
    access: ModelAccess | None = None  # the caller's, when it restricts models: what the plan was limited to


class Router:
    """Plans attempts. The random source and the health board (with its clock) are injected so tests are exact."""

    def __init__(
        self,
        config: GatewayConfig,
        rng: random.Random | None = None,
        health: HealthBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self._rng = rng or random.Random()
        self.health = health or HealthBoard(HealthConfig(), clock)
        self.routes = RouteTable(config.routing.routes, config.models)
        # By model name, then by the id of a target of its config (which lives as long as the router).
        self._attempts: dict[str, dict[int, Attempt]] = {}
        for m in config.models:
            arms = m.experiment.targets if m.experiment is not None else ()
            self._attempts[m.name] = {id(t): Attempt(m.name, t) for t in m.targets}
            self._attempts[m.name].update({id(t): Attempt(m.name, t, arm=True) for t in arms})

    @property
    def models(self) -> list[ModelConfig]:
        """Every model clients may ask for, in config order."""
        return list(self._models.values())

    def knows(self, name: str) -> bool:
        """Whether clients may ask for `name`."""
        return self.routes.knows(name)

    def plan(self, name: str, caller: Caller = NOBODY) -> list[Attempt]:
        """The attempts for a request for `name` (see `route`)."""
        return self.route(name, caller).attempts

    def route(self, name: str, caller: Caller = NOBODY, decided: tuple[str, str] | None = None) -> Plan:
        """Resolve `name` (unless the route table `decided` already, from the prompt), pick the experiment arm, and
        list the healthy targets to try in order, of the models the caller may use."""
        resolved, rule = decided or self.routes.resolve(name, caller)
        model = self._models.get(resolved)
        if model is None:
            raise NotFoundError(f"The model '{name}' does not exist", param="model")
        access = _restricting(caller)
        if access is not None and not access.permits(model.name):  # an alias of a model the caller may not use
            raise model_not_allowed(name)
        experiment, arm = "", ""
        attempts: list[Attempt] = []
        if model.experiment is not None:
            experiment, arm = model.experiment.name, experiments.assign(model.experiment, caller, self._rng)
            if arm == experiments.TREATMENT:
                treatment = _treatment(model, access)
                if treatment:  # the treatment first; should it fail, the control targets keep the request answered
                    attempts = self._ordered(model, treatment)
                else:
                    arm = experiments.CONTROL  # the caller may not use the model on trial
        attempts.extend(self._ordered(model, model.targets))
        for fallback in model.fallback:
            if access is None or access.permits(fallback):
                attempts.extend(self._ordered(self._models[fallback], self._models[fallback].targets))
        return Plan(resolved, attempts, rule, experiment, arm, name, access)

    def context_plan(self, model_name: str, access: ModelAccess | None = None) -> list[Attempt]:
        """The attempts for a request whose prompt was too long for `model_name`: its larger-window models (those
        `access` permits)."""
        model = self._models.get(model_name)
        if model is None:
            return []
        return [
            a
            for bigger in model.context_fallback
            if access is None or access.permits(bigger)
            for a in self._ordered(self._models[bigger])
        ]

    def soonest(self, plan: Plan) -> float | None:
        """Seconds until some target of `plan` may be tried again, when that is known and in the future."""
        waits = [w for w in (self.health.retry_in(t) for t in self._considered(plan)) if 0 < w < math.inf]
        return min(waits) if waits else None

    def _considered(self, plan: Plan) -> list[TargetConfig]:
        """Every target the plan drew from, healthy or not (worked out only when a request went unanswered)."""
        model, access = self._models[plan.model], plan.access
        targets = list(model.targets)
        if plan.arm == experiments.TREATMENT:
            targets.extend(_treatment(model, access))
        for fallback in model.fallback:
            if access is None or access.permits(fallback):
                targets.extend(self._models[fallback].targets)
        return targets

    def _ordered(self, model: ModelConfig, targets: tuple[TargetConfig, ...] | None = None) -> list[Attempt]:
        chosen = balancing.order(targets or model.targets, model.balancing, self.health, self._rng)
        attempts = self._attempts[model.name]  # made once: an Attempt per request would cost more than the order
        return [attempts[id(t)] for t in chosen]

    def order(self, targets: tuple[TargetConfig, ...]) -> list[TargetConfig]:
        """A weighted shuffle of `targets` (kept for callers that order targets themselves)."""
        return balancing.weighted(targets, self.health, self._rng)


def _restricting(caller: Caller) -> ModelAccess | None:
    """The caller's model access when it restricts models; None when every model is allowed (nothing to check)."""
    principal = caller.principal
    if principal is None or principal.access.unrestricted:
        return None
    return principal.access


def _treatment(model: ModelConfig, access: ModelAccess | None) -> tuple[TargetConfig, ...]:
    """The targets of `model`'s treatment arm whose own model `access` permits."""
    if model.experiment is None:
        return ()
    targets = model.experiment.targets
    return targets if access is None else tuple(t for t in targets if access.permits(t.model))
