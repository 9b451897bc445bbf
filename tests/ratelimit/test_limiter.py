"""Which limits apply to a request, the headers they produce, and what is settled when it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.auth.principal import Limits, Principal
from gateway.config import parse_config
from gateway.errors import ServiceUnavailableError
from gateway.ratelimit.backend import Admission, BucketState, Charge, LimiterUnavailable
from gateway.ratelimit.failover import FailoverLimiter
from gateway.ratelimit.limiter import RateLimiter, format_reset, rate_limit_headers
from gateway.ratelimit.memory import MemoryBackend

RULES = """
limits:
  rules:
    - {per: user, requests: 100}
    - {per: team, match: {team: ml, model: "gpt-4o*"}, tokens: 5000, window: 1h}
    - {per: model, match: {model: [demo, "*-mini"]}, concurrent: 2}
    - {per: global, budget: {usd: 10, period: day}}
backends: [{name: d, provider: mock}]
models: [{name: demo, targets: [{backend: d}]}]
"""
ALICE = Principal(key_id="k1", user="alice", team="ml")


class Recording:
    """A backend that admits everything and remembers what it was asked."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, list[Charge]]] = []
        self.settled: list[tuple[str, list[Charge]]] = []

    async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
        self.acquired.append((lease_id, list(charges)))
        return Admission(True, tuple(BucketState(c.bucket, c.bucket.limit - c.amount, 1.0) for c in charges), 0.0, None)

    async def settle(self, lease_id: str, adjustments: Sequence[Charge]) -> None:
        self.settled.append((lease_id, list(adjustments)))

    async def close(self) -> None:
        pass


def untagged(key: str) -> str:
    """A counter's key without its rule tag (the third part), which is a hash of the rule."""
    parts = key.split(":")
    return ":".join(parts[:2] + parts[3:])


def limiter(backend: object | None = None) -> tuple[RateLimiter, Recording]:
    recording = Recording()
    config = parse_config(RULES, {})
    return RateLimiter(config.limits, backend or recording), recording  # type: ignore[arg-type]


async def test_rules_apply_by_scope_and_match() -> None:
    rl, backend = limiter()
    await rl.admit("r1", ALICE, "gpt-4o-mini", 300)
    ((_, charges),) = backend.acquired
    assert [(untagged(c.bucket.key), c.bucket.kind, c.amount) for c in charges] == [
        ("user:alice:requests:100/60", "requests", 1),
        ("team:ml:tokens:5000/3600", "tokens", 300),
        ("model:gpt-4o-mini:concurrent:2", "concurrent", 1),
        ("global:*:spend:10/day", "spend", 0),
    ]


async def test_rules_that_do_not_match_or_have_no_subject_do_not_apply() -> None:
    rl, backend = limiter()
    await rl.admit("r1", Principal(key_id=""), "claude", 300)  # no user, no team; the model matches no glob
    ((_, charges),) = backend.acquired
    assert [untagged(c.bucket.key) for c in charges] == ["global:*:spend:10/day"]


async def test_a_keys_own_limits_come_from_the_auth_decision() -> None:
    rl, backend = limiter()
    key = Principal(
        key_id="k9",
        limits=Limits(
            requests_per_minute=60, tokens_per_minute=1000, concurrent_requests=3, budget_usd=5.0, budget_period="week"
        ),
    )
    await rl.admit("r1", key, "claude", 10)
    ((_, charges),) = backend.acquired
    assert [untagged(c.bucket.key) for c in charges][-4:] == [
        "key:k9:requests:60/60",
        "key:k9:tokens:1000/60",
        "key:k9:concurrent:3",
        "key:k9:spend:5/week",
    ]


async def test_settling_trues_up_tokens_charges_spend_and_frees_the_slot() -> None:
    rl, backend = limiter()
    admitted = await rl.admit("r1", ALICE, "gpt-4o-mini", 300)
    assert admitted.lease is not None and admitted.denial is None
    rl.settle_soon(admitted.lease, tokens=120, cost_usd=0.002)
    await rl.close()
    ((lease_id, adjustments),) = backend.settled
    assert lease_id == "r1"
    assert [(c.bucket.kind, c.amount) for c in adjustments] == [("tokens", -180), ("spend", 0.002), ("concurrent", 1)]


async def test_a_denial_names_the_limit_and_carries_the_headers() -> None:
    rl, _ = limiter(MemoryBackend())
    for i in range(2):
        admitted = await rl.admit(f"r{i}", ALICE, "demo", 10)
        assert admitted.denial is None
    denied = await rl.admit("r3", ALICE, "demo", 10)
    assert denied.denial is not None
    assert "concurrent requests for model 'demo'" in denied.denial.message
    assert denied.denial.http_status == 429
    assert denied.headers["x-ratelimit-limit-requests"] == "100"


def test_headers_show_the_tightest_bucket_of_each_kind() -> None:
    rl, _ = limiter()
    charges = rl._charges(ALICE, "gpt-4o-mini", 300)  # the charges a request would make
    states = [BucketState(c.bucket, 42 if c.bucket.kind == "requests" else 4700, 12.5) for c in charges]
    headers = rate_limit_headers(Admission(True, tuple(states), 0.0, None))
    assert headers == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "42",
        "x-ratelimit-reset-requests": "13s",
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "4700",
        "x-ratelimit-reset-tokens": "13s",
    }


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0ms"), (0.0204, "21ms"), (1.0, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_reset_is_written_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_close_waits_for_pending_settlements() -> None:
    rl, backend = limiter()
    admitted = await rl.admit("r1", ALICE, "demo", 10)
    assert admitted.lease is not None
    rl.settle_soon(admitted.lease, tokens=10, cost_usd=0.0)
    await asyncio.wait_for(rl.close(), 1)
    assert len(backend.settled) == 1


async def test_rules_that_differ_only_in_match_keep_their_own_counters() -> None:
    config = parse_config(
        """
limits:
  rules:
    - {per: key, match: {model: "gpt-*"}, requests: 2}
    - {per: key, match: {model: "claude-*"}, requests: 2}
backends: [{name: d, provider: mock}]
models: [{name: demo, targets: [{backend: d}]}]
""",
        {},
    )
    rl = RateLimiter(config.limits, MemoryBackend())
    for i in range(2):
        assert (await rl.admit(f"g{i}", ALICE, "gpt-4o", 1)).denial is None
    assert (await rl.admit("g3", ALICE, "gpt-4o", 1)).denial is not None
    assert (await rl.admit("c1", ALICE, "claude-3", 1)).denial is None  # its own counter, not gpt's


async def test_a_config_rule_and_a_keys_own_limit_with_the_same_numbers_are_two_counters() -> None:
    config = parse_config(
        """
limits: {rules: [{per: key, requests: 3}]}
backends: [{name: d, provider: mock}]
models: [{name: demo, targets: [{backend: d}]}]
""",
        {},
    )
    rl = RateLimiter(config.limits, MemoryBackend())
    key = Principal(key_id="k1", limits=Limits(requests_per_minute=3))
    admitted = [(await rl.admit(f"r{i}", key, "demo", 1)).denial is None for i in range(5)]
    assert admitted == [True, True, True, False, False]  # each counter charged once per request


async def test_a_check_whose_answer_is_lost_frees_the_slot_it_may_have_taken() -> None:
    """Redis ran the script but the answer missed the deadline: the slot must not stay held for the lease's life."""

    class LateAnswers(MemoryBackend):
        late = True

        async def acquire(self, lease_id: str, charges: Sequence[Charge]) -> Admission:
            admission = await super().acquire(lease_id, charges)
            if self.late:
                raise LimiterUnavailable("answer lost after the script ran")
            return admission

    config = parse_config(
        """
limits: {rules: [{per: model, concurrent: 1}]}
backends: [{name: d, provider: mock}]
models: [{name: demo, targets: [{backend: d}]}]
""",
        {},
    )
    backend = LateAnswers()
    rl = RateLimiter(config.limits, FailoverLimiter(backend, MemoryBackend(), fail_open=False))
    with pytest.raises(ServiceUnavailableError):
        await rl.admit("lost", ALICE, "demo", 1)
    await asyncio.sleep(0.01)  # the release runs in the background
    backend.late = False
    assert (await rl.admit("next", ALICE, "demo", 1)).denial is None
