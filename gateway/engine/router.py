"""Which targets to try for a model, in which order: weighted, then the model's fallbacks."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.config import GatewayConfig, ModelConfig, TargetConfig
from gateway.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class Attempt:
    """One place to send a request: the client-facing model it serves, and the backend target."""

    model: str
    target: TargetConfig


class Router:
    """Plans attempts for a model name. The random source is injected so tests are exact."""

    def __init__(self, config: GatewayConfig, rng: random.Random | None = None) -> None:
        self._models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self._rng = rng or random.Random()

    @property
    def models(self) -> list[ModelConfig]:
        """Every model clients may ask for, in config order."""
        return list(self._models.values())

    def knows(self, name: str) -> bool:
        """Whether clients may ask for `name`."""
        return name in self._models

    def plan(self, name: str) -> list[Attempt]:
        """The targets of `name` in weighted-random order, then each fallback model's, in the configured order."""
        model = self._models.get(name)
        if model is None:
            raise NotFoundError(f"The model '{name}' does not exist", param="model")
        plan = [Attempt(name, t) for t in self.order(model.targets)]
        for fallback in model.fallback:
            plan.extend(Attempt(fallback, t) for t in self.order(self._models[fallback].targets))
        return plan

    def order(self, targets: tuple[TargetConfig, ...]) -> list[TargetConfig]:
        """A weighted shuffle: each target comes first with probability weight / total, and so on down the list."""
        if len(targets) == 1:
            return list(targets)
        # Efraimidis-Spirakis: sort by u^(1/w), which samples without replacement in proportion to the weights.
        keyed = [(self._rng.random() ** (1.0 / t.weight), i) for i, t in enumerate(targets)]
        return [targets[i] for _, i in sorted(keyed, reverse=True)]
