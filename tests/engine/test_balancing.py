"""Balancing policies and priority tiers, with a seeded random source and an injected clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.config import TargetConfig
from gateway.config.routing import HealthConfig
from gateway.engine import balancing
from gateway.engine.health import HealthBoard
from gateway.errors import UpstreamError

FAST = TargetConfig(backend="fast", model="m")
SLOW = TargetConfig(backend="slow", model="m")
HEAVY = TargetConfig(backend="heavy", model="m", weight=3.0)
SPARE = TargetConfig(backend="spare", model="m", priority=1)
LAST = TargetConfig(backend="last", model="m", priority=2)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def board(clock: Clock | None = None) -> HealthBoard:
    return HealthBoard(HealthConfig(consecutive_failures=1), clock or Clock())


def answer(health: HealthBoard, target: TargetConfig, seconds: float) -> None:
    assert health.acquire(target)
    health.succeeded(target, seconds)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_weighted_first_choice_follows_the_weights(seed: int) -> None:
    rng, health = random.Random(seed), board()
    firsts = Counter(balancing.order([FAST, HEAVY], "weighted", health, rng)[0].backend for _ in range(20_000))
    assert abs(firsts["heavy"] / 20_000 - 0.75) <= 0.02


def test_least_outstanding_prefers_the_idle_target_per_unit_of_weight() -> None:
    rng, health = random.Random(4), board()
    for _ in range(2):
        assert health.acquire(FAST)
    assert balancing.order([FAST, SLOW], "least_outstanding", health, rng) == [SLOW, FAST]
    for _ in range(3):
        assert health.acquire(HEAVY)
    # heavy: 3 in flight / weight 3 = 1, fast: 2 / 1, slow: 0.
    assert balancing.order([FAST, SLOW, HEAVY], "least_outstanding", health, rng) == [SLOW, HEAVY, FAST]


def test_least_outstanding_ties_are_shared() -> None:
    rng, health = random.Random(5), board()
    firsts = Counter(balancing.order([FAST, SLOW], "least_outstanding", health, rng)[0] for _ in range(2000))
    assert abs(firsts[FAST] / 2000 - 0.5) <= 0.05


def test_latency_sends_traffic_away_from_a_browning_out_target() -> None:
    clock, rng = Clock(), random.Random(6)
    health = board(clock)
    answer(health, FAST, 0.005)
    answer(health, SLOW, 0.005)
    answer(health, SLOW, 0.5)  # the brown-out begins
    firsts = Counter(balancing.order([FAST, SLOW], "latency", health, rng)[0] for _ in range(1000))
    assert firsts[FAST] == 1000
    # While unused the slow estimate decays toward zero, so the slow target is tried again in time.
    for _ in range(60):  # a minute of fast answers; the slow target is idle
        clock.now += 1
        answer(health, FAST, 0.005)
    assert balancing.order([FAST, SLOW], "latency", health, rng)[0] == SLOW


def test_latency_counts_requests_in_flight() -> None:
    rng, health = random.Random(7), board()
    answer(health, FAST, 0.010)
    answer(health, SLOW, 0.030)
    for _ in range(3):  # fast's cost: 0.010 * 4 = 0.040 > slow's 0.030
        assert health.acquire(FAST)
    assert balancing.order([FAST, SLOW], "latency", health, rng)[0] == SLOW


def test_latency_with_many_targets_draws_two_and_takes_the_cheaper() -> None:
    rng, health = random.Random(8), board()
    targets = [TargetConfig(backend=f"b{i}", model="m") for i in range(4)]
    for i, target in enumerate(targets):
        answer(health, target, 0.01 * (i + 1))
    firsts = Counter(balancing.order(targets, "latency", health, rng)[0] for _ in range(6000))
    # The slowest can never win a pair; the fastest wins every pair it is drawn in (half of them).
    assert firsts[targets[3]] == 0
    assert abs(firsts[targets[0]] / 6000 - 0.5) <= 0.03


def test_priority_tiers_are_tried_in_order_and_skip_unhealthy_targets() -> None:
    rng, health = random.Random(9), board()
    assert balancing.order([LAST, SPARE, FAST, SLOW], "weighted", health, rng)[2:] == [SPARE, LAST]
    for target in (FAST, SLOW):  # one failure ejects (consecutive_failures: 1)
        assert health.acquire(target)
        health.failed(target, UpstreamError("down"), 0.1)
    assert balancing.order([LAST, SPARE, FAST, SLOW], "weighted", health, rng) == [SPARE, LAST]


def test_weighted_with_three_targets_follows_the_weights_and_keeps_every_target() -> None:
    rng, health = random.Random(10), board()
    targets = [FAST, SLOW, HEAVY]  # weights 1, 1, 3
    orders = [balancing.order(targets, "weighted", health, rng) for _ in range(20_000)]
    firsts = Counter(order[0].backend for order in orders)
    assert abs(firsts["heavy"] / 20_000 - 0.6) <= 0.02
    assert abs(firsts["fast"] / 20_000 - 0.2) <= 0.02
    assert all(sorted(t.backend for t in order) == ["fast", "heavy", "slow"] for order in orders)
