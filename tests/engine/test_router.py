"""The router: weighted choice of a model's targets, then its fallbacks, with injected randomness."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.config import GatewayConfig, ModelConfig, TargetConfig
from gateway.engine.router import Attempt, Router
from gateway.errors import NotFoundError

HEAVY = TargetConfig(backend="vllm-a", model="Qwen/Qwen3-8B", weight=9.0)
LIGHT = TargetConfig(backend="vllm-b", model="Qwen/Qwen3-8B", weight=1.0)
CLOUD = TargetConfig(backend="openai", model="gpt-4o-mini")
DEMO = TargetConfig(backend="demo", model="tollgate-demo")
BIG_A = TargetConfig(backend="openai", model="gpt-4o", weight=1.0)
BIG_B = TargetConfig(backend="azure", model="gpt-4o", weight=3.0)

CONFIG = GatewayConfig(
    models=(
        ModelConfig(name="qwen", targets=(HEAVY, LIGHT), fallback=("mini", "demo")),
        ModelConfig(name="mini", targets=(CLOUD,), fallback=("demo",)),
        ModelConfig(name="big", targets=(BIG_A, BIG_B), fallback=("qwen",)),
        ModelConfig(name="demo", targets=(DEMO,)),
    )
)


def test_first_target_share_follows_the_weights() -> None:
    router = Router(CONFIG, random.Random(20240601))
    plans = 20_000
    first = Counter(router.plan("qwen")[0].target.backend for _ in range(plans))
    assert abs(first["vllm-a"] / plans - 0.9) <= 0.02
    assert abs(first["vllm-b"] / plans - 0.1) <= 0.02
    assert first["vllm-a"] + first["vllm-b"] == plans


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_share_holds_for_other_seeds_and_weights(seed: int) -> None:
    router = Router(CONFIG, random.Random(seed))
    plans = 20_000
    first = Counter(router.plan("big")[0].target.backend for _ in range(plans))
    assert abs(first["azure"] / plans - 0.75) <= 0.02


def test_every_plan_tries_each_own_target_once_then_the_fallbacks_in_order() -> None:
    router = Router(CONFIG, random.Random(7))
    seen_orders = set()
    for _ in range(200):
        plan = router.plan("qwen")
        own, rest = plan[:2], plan[2:]
        assert {a.target for a in own} == {HEAVY, LIGHT}
        assert all(a.model == "qwen" for a in own)
        # The fallbacks are not shuffled: the model's own list, in order, each with its own targets.
        assert rest == [Attempt("mini", CLOUD), Attempt("demo", DEMO)]
        seen_orders.add(tuple(a.target.backend for a in own))
    assert seen_orders == {("vllm-a", "vllm-b"), ("vllm-b", "vllm-a")}


def test_fallback_targets_are_shuffled_by_their_own_weights() -> None:
    router = Router(CONFIG, random.Random(11))
    plans = 20_000
    first_of_fallback = Counter()
    for _ in range(plans):
        plan = router.plan("big")
        assert [a.model for a in plan] == ["big", "big", "qwen", "qwen"]
        first_of_fallback[plan[2].target.backend] += 1
    assert abs(first_of_fallback["vllm-a"] / plans - 0.9) <= 0.02


def test_fallbacks_are_not_followed_transitively() -> None:
    """`big` falls back to `qwen`, whose own fallbacks (`mini`, `demo`) are not part of `big`'s plan."""
    plan = Router(CONFIG, random.Random(0)).plan("big")
    assert {a.model for a in plan} == {"big", "qwen"}


def test_single_target_model() -> None:
    assert Router(CONFIG, random.Random(0)).plan("demo") == [Attempt("demo", DEMO)]


def test_same_seed_same_plans() -> None:
    one, two = Router(CONFIG, random.Random(99)), Router(CONFIG, random.Random(99))
    assert [one.plan("qwen") for _ in range(50)] == [two.plan("qwen") for _ in range(50)]


def test_order_is_a_permutation() -> None:
    targets = tuple(TargetConfig(backend=f"b{i}", model="m", weight=float(i + 1)) for i in range(6))
    router = Router(CONFIG, random.Random(5))
    for _ in range(100):
        ordered = router.order(targets)
        assert sorted(ordered, key=lambda t: t.backend) == list(targets)


def test_unknown_model() -> None:
    router = Router(CONFIG, random.Random(0))
    with pytest.raises(NotFoundError) as caught:
        router.plan("gpt-5")
    assert caught.value.param == "model"
    assert caught.value.http_status == 404
    assert caught.value.code == "model_not_found"
    assert "gpt-5" in caught.value.message


def test_models_are_listed_in_config_order() -> None:
    assert [m.name for m in Router(CONFIG).models] == ["qwen", "mini", "big", "demo"]
