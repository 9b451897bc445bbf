"""The order in which a model's healthy targets are tried, by the model's balancing policy and priority tiers.

Tiers first: every target of priority 0 before any of priority 1, and so on, so a higher tier gets traffic only
while the lower ones have no healthy target. Within a tier, the policy:
- `weighted`: a weighted shuffle (each target first with probability weight / total);
- `least_outstanding`: fewest requests in flight per unit of weight first, ties broken at random;
- `latency`: power of two choices on peak-EWMA cost (time to first byte * (outstanding + 1) / weight): two targets
  drawn at random, the cheaper goes first; then the rest by cost. A browning-out target's estimate jumps at its
  first slow answer, so it loses traffic before it fails; the estimate decays while unused, so it is retried in time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.config import TargetConfig
from gateway.engine.health import HealthBoard

Policy = Callable[[Sequence[TargetConfig], HealthBoard, random.Random], list[TargetConfig]]


def weighted(targets: Sequence[TargetConfig], health: HealthBoard, rng: random.Random) -> list[TargetConfig]:
    """A weighted shuffle: each target comes first with probability weight / total, and so on down the list."""
    if len(targets) == 1:
        return list(targets)
    if len(targets) == 2:  # the common case, in one draw: the first with probability weight / total
        a, b = targets
        return [a, b] if rng.random() * (a.weight + b.weight) < a.weight else [b, a]
    # Efraimidis-Spirakis: sort by u^(1/w), which samples without replacement in proportion to the weights.
    keyed = [(rng.random() ** (1.0 / t.weight), i) for i, t in enumerate(targets)]
    return [targets[i] for _, i in sorted(keyed, reverse=True)]


def least_outstanding(targets: Sequence[TargetConfig], health: HealthBoard, rng: random.Random) -> list[TargetConfig]:
    """Fewest requests in flight per unit of weight first; ties in random order."""
    keyed = [(health.outstanding(t) / t.weight, rng.random(), i) for i, t in enumerate(targets)]
    return [targets[i] for _, _, i in sorted(keyed)]


def latency(targets: Sequence[TargetConfig], health: HealthBoard, rng: random.Random) -> list[TargetConfig]:
    """Power of two choices on peak-EWMA cost, then the rest cheapest first."""
    if len(targets) == 1:
        return list(targets)
    costs = [(_cost(t, health), rng.random(), i) for i, t in enumerate(targets)]
    a, b = rng.sample(range(len(targets)), 2)
    first = min(costs[a], costs[b])[2]
    rest = sorted(c for c in costs if c[2] != first)
    return [targets[first], *(targets[i] for _, _, i in rest)]


def _cost(target: TargetConfig, health: HealthBoard) -> float:
    return health.latency(target) * (health.outstanding(target) + 1) / target.weight


POLICIES: dict[str, Policy] = {"weighted": weighted, "least_outstanding": least_outstanding, "latency": latency}


def order(targets: Sequence[TargetConfig], policy: str, health: HealthBoard, rng: random.Random) -> list[TargetConfig]:
    """The healthy ones of `targets`, tier by tier, each tier in the policy's order."""
    healthy = [t for t in targets if health.available(t)]
    choose = POLICIES[policy]
    if len(healthy) < 2 or all(t.priority == healthy[0].priority for t in healthy):
        return choose(healthy, health, rng) if healthy else healthy  # one tier: the common case
    tiers = sorted({t.priority for t in healthy})
    ordered: list[TargetConfig] = []
    for tier in tiers:
        ordered.extend(choose([t for t in healthy if t.priority == tier], health, rng))
    return ordered
