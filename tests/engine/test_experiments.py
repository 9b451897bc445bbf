"""Experiment arms: shares within tolerance, sticky per key, monotone when the share grows."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.auth.principal import Principal
from gateway.config import TargetConfig
from gateway.config.routing import ExperimentConfig
from gateway.engine import experiments
from gateway.engine.routes import Caller

TREAT = (TargetConfig(backend="new", model="m"),)


def exp(share: float, key: str = "user", name: str = "new-model") -> ExperimentConfig:
    return ExperimentConfig(name=name, share=share, targets=TREAT, key=key)


def user_ctx(user: str) -> Caller:
    return Caller(principal=Principal(key_id="k-" + user, user=user, team="t-" + user))


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5])
def test_the_treatment_share_of_users_is_the_configured_share(share: float) -> None:
    rng = random.Random(1)
    arms = Counter(experiments.assign(exp(share), user_ctx(f"user-{i}"), rng) for i in range(20_000))
    assert abs(arms[experiments.TREATMENT] / 20_000 - share) <= 0.015


def test_a_user_stays_in_one_arm() -> None:
    rng = random.Random(2)
    for i in range(200):
        arms = {experiments.assign(exp(0.5), user_ctx(f"user-{i}"), rng) for _ in range(20)}
        assert len(arms) == 1


def test_growing_the_share_only_moves_users_into_the_treatment() -> None:
    rng = random.Random(3)
    users = [f"user-{i}" for i in range(5000)]
    small = {u for u in users if experiments.assign(exp(0.1), user_ctx(u), rng) == experiments.TREATMENT}
    large = {u for u in users if experiments.assign(exp(0.3), user_ctx(u), rng) == experiments.TREATMENT}
    assert small < large


def test_experiments_split_users_independently() -> None:
    rng = random.Random(4)
    users = [f"user-{i}" for i in range(10_000)]
    first = {u for u in users if experiments.assign(exp(0.5, name="a"), user_ctx(u), rng) == experiments.TREATMENT}
    second = {u for u in users if experiments.assign(exp(0.5, name="b"), user_ctx(u), rng) == experiments.TREATMENT}
    assert abs(len(first & second) / 10_000 - 0.25) <= 0.02


@pytest.mark.parametrize(("key", "expected"), [("user", "alice"), ("key", "k-alice"), ("team", "t-alice")])
def test_the_key_is_the_configured_identity(key: str, expected: str) -> None:
    assert experiments.stable_key(exp(0.5, key), user_ctx("alice")) == expected


def test_a_header_key_sticks_to_the_header() -> None:
    ctx = Caller(headers={"x-session": "s-42"})
    assert experiments.stable_key(exp(0.5, "header:x-session"), ctx) == "s-42"
    arms = {experiments.assign(exp(0.5, "header:x-session"), ctx, random.Random(i)) for i in range(50)}
    assert len(arms) == 1


def test_a_request_without_the_key_is_assigned_at_random_in_the_share() -> None:
    rng = random.Random(5)
    anonymous = Caller()
    arms = Counter(experiments.assign(exp(0.2), anonymous, rng) for _ in range(10_000))
    assert abs(arms[experiments.TREATMENT] / 10_000 - 0.2) <= 0.02
