"""The health board: ejection by consecutive failures and by error rate, growing ejections, half-open probes,
rests after 429s, the peak-EWMA latency estimate, and the snapshot. The clock is a plain number the test moves."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config import TargetConfig
from gateway.config.routing import HealthConfig
from gateway.engine.health import CircuitState, HealthBoard, Slot
from gateway.errors import RateLimitError, ServiceUnavailableError, UpstreamError, UpstreamRequestError

A = TargetConfig(backend="a", model="m")
B = TargetConfig(backend="b", model="m")
CONFIG = HealthConfig(consecutive_failures=3, ejection_base=5.0, ejection_max=30.0, ejection_reset=100.0)
BOOM = UpstreamError("boom")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def board(clock: Clock, **changes: object) -> HealthBoard:
    return HealthBoard(dataclasses.replace(CONFIG, **changes), clock)  # type: ignore[arg-type]


def fail(health: HealthBoard, target: TargetConfig, times: int = 1, error: Exception = BOOM) -> None:
    for _ in range(times):
        slot = health.acquire(target)
        assert slot is not None
        health.failed(target, error, 0.01, slot)  # type: ignore[arg-type]


def succeed(health: HealthBoard, target: TargetConfig, seconds: float = 0.01) -> None:
    slot = health.acquire(target)
    assert slot is not None
    health.succeeded(target, seconds, slot)


def state(health: HealthBoard, target: TargetConfig) -> str:
    return health.snapshot([target])[0].state


def test_consecutive_failures_eject_for_the_base_time(clock: Clock) -> None:
    health = board(clock)
    fail(health, A, 2)
    assert health.available(A), "two failures are not yet an outlier"
    fail(health, A)
    assert state(health, A) == CircuitState.OPEN
    assert not health.available(A) and not health.acquire(A)
    assert health.retry_in(A) == pytest.approx(5.0)
    assert health.available(B), "one target's failures are its own"
    clock.now += 5.0
    assert health.available(A), "after the ejection it may be probed"


def test_a_success_resets_the_count_of_failures_in_a_row(clock: Clock) -> None:
    health = board(clock)
    for _ in range(5):
        fail(health, A, 2)
        succeed(health, A)
    assert state(health, A) == CircuitState.CLOSED


def test_error_rate_over_the_window_ejects(clock: Clock) -> None:
    health = board(clock, consecutive_failures=100, error_rate=0.5, error_rate_min_requests=10)
    for _ in range(4):
        succeed(health, A)
        fail(health, A)
    assert state(health, A) == CircuitState.CLOSED, "8 requests: below the minimum"
    succeed(health, A)
    fail(health, A)
    assert state(health, A) == CircuitState.OPEN, "5 failures in 10 requests is 50%"


def test_old_failures_leave_the_window(clock: Clock) -> None:
    health = board(clock, consecutive_failures=100, error_rate=0.5, error_rate_min_requests=4, error_rate_window=10.0)
    fail(health, A, 2)
    succeed(health, A)
    clock.now += 20
    succeed(health, A)
    fail(health, A)
    succeed(health, A)
    assert state(health, A) == CircuitState.CLOSED, "the early failures are out of the window"


def test_half_open_lets_only_the_configured_probes_through(clock: Clock) -> None:
    health = board(clock, half_open_probes=1)
    fail(health, A, 3)
    clock.now += 5
    probe = health.acquire(A)
    assert probe is Slot.PROBE
    assert state(health, A) == CircuitState.HALF_OPEN
    assert health.acquire(A) is None, "one probe at a time"
    assert not health.available(A)
    health.succeeded(A, 0.01, probe)
    assert state(health, A) == CircuitState.CLOSED
    assert health.acquire(A) and health.acquire(A), "closed: no limit"


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap(clock: Clock) -> None:
    health = board(clock)
    fail(health, A, 3)
    expected = [10.0, 20.0, 30.0, 30.0]
    for wait in expected:
        clock.now += health.retry_in(A)
        fail(health, A)  # the probe fails
        assert state(health, A) == CircuitState.OPEN
        assert health.retry_in(A) == pytest.approx(wait)
    assert health.snapshot([A])[0].ejections == 5


def test_ejections_are_forgotten_after_a_healthy_spell(clock: Clock) -> None:
    health = board(clock)
    fail(health, A, 3)
    clock.now += 5
    succeed(health, A)  # the probe closes it
    clock.now += 150  # longer than ejection_reset
    fail(health, A, 3)
    assert health.retry_in(A) == pytest.approx(5.0), "a fresh incident starts at the base time"
    assert health.snapshot([A])[0].ejections_total == 2


def test_a_rate_limit_rests_the_target_without_ejecting_it(clock: Clock) -> None:
    health = board(clock)
    for _ in range(10):  # ten requests in flight at once, all refused
        assert health.acquire(A)
    for _ in range(10):
        health.failed(A, RateLimitError("slow down", retry_after=2.0), 0.01)
    snap = health.snapshot([A])[0]
    assert snap.state == CircuitState.CLOSED and snap.consecutive_failures == 0
    assert health.retry_in(A) == pytest.approx(2.0)
    clock.now += 2
    assert health.available(A)
    fail(health, A, 1, RateLimitError("slow down"))
    assert health.retry_in(A) == pytest.approx(CONFIG.rate_limit_cooldown), "no Retry-After: the configured rest"


def test_a_503_with_retry_after_rests_and_counts_as_a_failure(clock: Clock) -> None:
    health = board(clock)
    fail(health, A, 1, ServiceUnavailableError("overloaded", retry_after=3.0))
    assert health.retry_in(A) == pytest.approx(3.0)
    assert health.snapshot([A])[0].consecutive_failures == 1


def test_the_requests_own_fault_is_not_the_backends(clock: Clock) -> None:
    health = board(clock)
    fail(health, A, 10, UpstreamRequestError("bad tool schema"))
    assert state(health, A) == CircuitState.CLOSED and health.available(A)


def test_outstanding_counts_attempts_in_flight(clock: Clock) -> None:
    health = board(clock)
    assert health.acquire(A) and health.acquire(A)
    assert health.outstanding(A) == 2
    health.abandoned(A)
    health.succeeded(A, 0.1)
    assert health.outstanding(A) == 0


def test_latency_is_a_peak_ewma_that_decays_while_unused(clock: Clock) -> None:
    health = board(clock, latency_decay=10.0)
    assert health.latency(A) == 0.0
    succeed(health, A, 0.005)
    succeed(health, A, 0.5)
    assert health.latency(A) == pytest.approx(0.5), "a slow answer counts in full at once"
    clock.now += 1
    succeed(health, A, 0.005)
    assert 0.005 < health.latency(A) < 0.5, "fast answers pull it down gradually"
    before = health.latency(A)
    clock.now += 10
    assert health.latency(A) == pytest.approx(before * 0.3679, rel=1e-3), "e^-1 after one time constant"


def test_active_checks_take_a_backend_out_and_back(clock: Clock) -> None:
    health = board(clock)
    health.set_backend_up("a", False)
    assert not health.available(A) and not health.acquire(A)
    assert health.snapshot([A])[0].backend_up is False
    health.set_backend_up("a", True)
    assert health.available(A)


def test_snapshot_is_plain_data(clock: Clock) -> None:
    health = board(clock)
    succeed(health, A, 0.25)
    fail(health, A)
    snap = health.snapshot([A, B])
    assert [s.backend for s in snap] == ["a", "b"]
    first = dataclasses.asdict(snap[0])
    assert first["window_requests"] == 2 and first["window_failures"] == 1
    assert first["latency_ms"] == 250.0
    assert first["last_error"] == "upstream_error: boom"
    assert snap[1].state == "closed" and snap[1].available


def test_attempts_sent_before_an_ejection_do_not_eject_again_when_they_fail(clock: Clock) -> None:
    health = board(clock)
    in_flight = [health.acquire(A) for _ in range(10)]
    for slot in in_flight[:3]:
        health.failed(A, BOOM, 0.01, slot)  # type: ignore[arg-type]
    assert health.retry_in(A) == pytest.approx(5.0)
    for slot in in_flight[3:]:  # the rest fail after the ejection
        health.failed(A, BOOM, 0.01, slot)  # type: ignore[arg-type]
    snap = health.snapshot([A])[0]
    assert (snap.ejections, snap.outstanding) == (1, 0)
    assert health.retry_in(A) == pytest.approx(5.0), "still the first ejection's length"


def test_only_the_probe_decides_a_half_open_circuit(clock: Clock) -> None:
    health = board(clock)
    old = health.acquire(A)  # sent while closed
    fail(health, A, 3)
    clock.now += 5
    probe = health.acquire(A)
    assert probe is Slot.PROBE
    health.succeeded(A, 0.01, old)  # type: ignore[arg-type]
    assert state(health, A) == CircuitState.HALF_OPEN, "an old answer says little about now"
    assert health.acquire(A) is None, "and it does not free the probe's place"
    health.failed(A, BOOM, 0.01, probe)
    assert state(health, A) == CircuitState.OPEN and health.retry_in(A) == pytest.approx(10.0)
