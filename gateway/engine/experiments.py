"""A/B experiments: which arm a request is in, by hashing a stable key, so a user stays in one arm.

The key (the user, the API key's id, the team, or a request header) and the experiment's name are hashed to a point
in [0, 1); the request is in the treatment arm when the point is below the share. So a user's arm never changes
while the share stays, raising the share only moves users from control to treatment (never back), and different
experiments split users independently. A request without the key (an anonymous caller, a missing header) is
assigned at random: it has nothing to stick to.
"""

from __future__ import annotations

import hashlib
import random

from gateway.config.routing import ExperimentConfig
from gateway.engine.routes import Caller

CONTROL = "control"
TREATMENT = "treatment"
_HEADER = "header:"
_SCALE = float(1 << 64)


def bucket(experiment: str, key: str) -> float:
    """Where `key` falls in [0, 1) for `experiment`: stable across processes and restarts."""
    digest = hashlib.blake2b(f"{experiment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def stable_key(experiment: ExperimentConfig, caller: Caller) -> str:
    """The value the arm sticks to, or "" when the request has none."""
    if experiment.key.startswith(_HEADER):
        return caller.headers.get(experiment.key[len(_HEADER) :], "")
    principal = caller.principal
    if principal is None:
        return ""
    if experiment.key == "key":
        return principal.key_id
    return principal.team if experiment.key == "team" else principal.user


def assign(experiment: ExperimentConfig, caller: Caller, rng: random.Random) -> str:
    """The arm of this request: CONTROL or TREATMENT."""
    key = stable_key(experiment, caller)
    point = bucket(experiment.name, key) if key else rng.random()
    return TREATMENT if point < experiment.share else CONTROL
