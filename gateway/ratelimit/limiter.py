"""`RateLimiter`: which limits apply to a request, admitting it against them, and settling them when it ends.

Limits come from two places: the configuration's rules (per key, user, team, model, or global, for the requests
that match) and the auth decision (each key's own requests and tokens per minute, concurrency and budget). Every
applicable limit becomes a counter (`Bucket`) in the backend, checked and charged in one atomic call. Token limits
are charged an estimate at admission (prompt size plus `max_tokens`) and trued up with the provider's usage when the
request ends; spend is charged the request's cost when it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.auth.principal import Principal
from gateway.config import LimitRule, LimitsConfig
from gateway.errors import RateLimitError, ServiceUnavailableError
from gateway.globs import compile_globs
from gateway.ratelimit.backend import Admission, Bucket, BucketState, Charge, LimiterBackend, LimiterUnavailable

log = logging.getLogger("tollgate.limits")

_MINUTE = 60.0
_SETTLE_RETRIES = (0.1, 0.5, 2.0)  # waits after each failed try
_APPLICABLE_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class _Rule:
    """A configured rule with its globs compiled, and the tag that keeps its counters apart from other rules'."""

    rule: LimitRule
    match: tuple[tuple[str, re.Pattern[str]], ...]
    tag: str


def _rule_tag(rule: LimitRule) -> str:
    # Two rules with the same scope and numbers but different `match` (gpt-* and claude-*) are different limits.
    identity = repr((rule.per, sorted(rule.match.items())))
    return "r" + hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()


@dataclass(slots=True)
class Lease:
    """What an admitted request holds until it ends: its id, and the buckets to settle."""

    lease_id: str
    estimate: int
    tokens: tuple[Bucket, ...]
    spend: tuple[Bucket, ...]
    concurrent: tuple[Bucket, ...]


class RateLimiter:
    """Admits requests against every limit that applies to them; `backend` holds the counters."""

    def __init__(self, config: LimitsConfig, backend: LimiterBackend) -> None:
        self._config = config
        self._backend = backend
        self._rules = tuple(
            _Rule(
                rule,
                tuple((dim, p) for dim, globs in rule.match.items() if (p := compile_globs(globs))),
                _rule_tag(rule),
            )
            for rule in config.rules
        )
        self._settling: set[asyncio.Task[None]] = set()
        # The counters that apply, by caller and model: the same few callers ask again and again.
        self._applicable: dict[tuple[object, ...], tuple[Bucket, ...]] = {}

    @property
    def backend(self) -> LimiterBackend:
        """Where the counters live (for metrics: a `FailoverLimiter` reports its state)."""
        return self._backend

    async def close(self) -> None:
        """Let pending settlements finish, then release the backend."""
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=5)
        await self._backend.close()

    async def admit(self, request_id: str, principal: Principal, model: str, estimate: int) -> Admitted:
        """Charge every applicable limit; a denial comes back as the 429 to raise once its headers are set.

        Raises the 503 when the limits' store is down and the policy is to fail closed.
        """
        charges = self._charges(principal, model, estimate)
        if not charges:
            return Admitted(None, {}, None)
        try:
            admission = await self._backend.acquire(request_id, charges)
        except LimiterUnavailable:
            # What a lost answer may have taken is freed by the backend that lost it (`FailoverLimiter`).
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now; try again shortly", code="limits_unavailable"
            ) from None
        headers = rate_limit_headers(admission)
        if not admission.allowed:
            return Admitted(None, headers, _denied(admission, charges))
        buckets = [c.bucket for c in charges]
        lease = Lease(
            request_id,
            estimate,
            tokens=tuple(b for b in buckets if b.kind == "tokens"),
            spend=tuple(b for b in buckets if b.kind == "spend"),
            concurrent=tuple(b for b in buckets if b.kind == "concurrent"),
        )
        return Admitted(lease, headers, None)

    def _schedule(self, lease_id: str, adjustments: list[Charge]) -> None:
        task = asyncio.ensure_future(self._settle(lease_id, adjustments))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def settle_soon(self, lease: Lease, tokens: int, cost_usd: float) -> None:
        """True the token limits up to `tokens`, charge `cost_usd`, release concurrency: in the background."""
        adjustments = [Charge(b, tokens - lease.estimate) for b in lease.tokens if tokens != lease.estimate]
        adjustments += [Charge(b, cost_usd) for b in lease.spend if cost_usd > 0]
        adjustments += [Charge(b, 1) for b in lease.concurrent]
        if adjustments:
            self._schedule(lease.lease_id, adjustments)

    async def _settle(self, lease_id: str, adjustments: list[Charge]) -> None:
        # A missed settle holds a concurrency slot until its lease expires: worth a few tries in the background.
        for delay in _SETTLE_RETRIES:
            try:
                await self._backend.settle(lease_id, adjustments)
            except LimiterUnavailable:
                await asyncio.sleep(delay)
            except Exception:
                log.exception("could not settle limits for %s", lease_id)
                return
            else:
                return
        # Leases expire on their own (max_request_seconds); a missed true-up only shifts one request's tokens.
        log.warning("could not settle limits for %s: the limiter store is unavailable", lease_id)

    def _charges(self, principal: Principal, model: str, estimate: int) -> list[Charge]:
        cache_key = (principal.key_id, principal.user, principal.team, principal.limits, model)
        buckets = self._applicable.get(cache_key)
        if buckets is None:
            if len(self._applicable) >= _APPLICABLE_CACHE:
                self._applicable.clear()  # callers come and go; a full rebuild now and then costs little
            buckets = self._applicable[cache_key] = self._buckets(principal, model)
        return [Charge(b, estimate if b.kind == "tokens" else 0 if b.kind == "spend" else 1) for b in buckets]

    def _buckets(self, principal: Principal, model: str) -> tuple[Bucket, ...]:
        """Every counter that applies to `principal` asking for `model`."""
        values = {"key": principal.key_id, "user": principal.user, "team": principal.team, "model": model}
        buckets: list[Bucket] = []
        for rule in self._rules:
            subject = "*" if rule.rule.per == "global" else values[rule.rule.per]
            if subject and all(p.fullmatch(values[dim]) for dim, p in rule.match):
                buckets += self._rule_buckets(rule.rule, f"{rule.rule.per}:{subject}:{rule.tag}")
        limits = principal.limits
        if principal.key_id and (limits.requests_per_minute or limits.tokens_per_minute or limits.concurrent_requests):
            key_rule = LimitRule(
                per="key",
                requests=limits.requests_per_minute,
                tokens=limits.tokens_per_minute,
                window=_MINUTE,
                concurrent=limits.concurrent_requests,
            )
            buckets += self._rule_buckets(key_rule, f"key:{principal.key_id}:auth")
        if principal.key_id and limits.budget_usd:
            budget = LimitRule(per="key", budget_usd=limits.budget_usd, budget_period=limits.budget_period or "month")
            buckets += self._rule_buckets(budget, f"key:{principal.key_id}:auth")
        return tuple(dict.fromkeys(buckets))  # the same counter twice would be charged twice

    def _rule_buckets(self, rule: LimitRule, subject: str) -> list[Bucket]:
        # A bucket's key names its limit too: a changed limit starts a fresh counter instead of misreading an old one.
        buckets = []
        if rule.requests:
            buckets.append(
                Bucket(f"{subject}:requests:{rule.requests}/{rule.window:g}", "requests", rule.requests, rule.window)
            )
        if rule.tokens:
            buckets.append(
                Bucket(f"{subject}:tokens:{rule.tokens}/{rule.window:g}", "tokens", rule.tokens, rule.window)
            )
        if rule.concurrent:
            lease = self._config.max_request_seconds
            buckets.append(Bucket(f"{subject}:concurrent:{rule.concurrent}", "concurrent", rule.concurrent, lease))
        if rule.budget_usd:
            key = f"{subject}:spend:{rule.budget_usd:g}/{rule.budget_period}"
            buckets.append(Bucket(key, "spend", rule.budget_usd, 0, rule.budget_period))
        return buckets


@dataclass(frozen=True, slots=True)
class Admitted:
    """The outcome of admission: the lease (None when no limit applies or on a denial), the `x-ratelimit-*` headers
    to answer with either way, and the 429 to raise when denied."""

    lease: Lease | None
    headers: Mapping[str, str]
    denial: RateLimitError | None


def _denied(admission: Admission, charges: Sequence[Charge]) -> RateLimitError:
    bucket = admission.denied_by
    kind = bucket.kind if bucket else ""
    what = {"requests": "requests", "tokens": "tokens", "concurrent": "concurrent requests", "spend": "spend budget"}
    subject = bucket.key.split(":", 2)[:2] if bucket else []
    who = f" for {subject[0]} '{subject[1]}'" if len(subject) == 2 and subject[0] != "global" else ""
    message = f"Rate limit reached: {what.get(kind, 'limit')}{who}."
    retry_after: float | None = admission.retry_after
    charged = next((c.amount for c in charges if c.bucket == bucket), 0.0)
    if bucket is not None and kind == "tokens" and charged > bucket.limit:
        # Waiting cannot help: say what would.
        message += f" This request may use about {charged:.0f} tokens, more than the limit of {bucket.limit:g}; "
        message += "lower max_tokens or shorten the prompt."
    elif kind == "spend" and bucket is not None and bucket.period == "total":
        message += " The budget does not reset."
        retry_after = None
    elif kind == "concurrent":
        # The earliest a slot is sure to free is a lease's expiry; one usually frees much sooner.
        retry_after = min(1.0, admission.retry_after)
        message += " Try again when one of them has finished."
    else:
        message += f" Try again in {format_reset(admission.retry_after)}."
    code = "insufficient_quota" if kind == "spend" else "rate_limit_exceeded"
    return RateLimitError(message, code=code, retry_after=retry_after)


def rate_limit_headers(admission: Admission) -> dict[str, str]:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, from the tightest bucket of each kind."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        states = [s for s in admission.states if s.bucket.kind == kind]
        if states:
            tightest: BucketState = min(states, key=lambda s: (s.remaining, -s.reset_after))
            headers[f"x-ratelimit-limit-{kind}"] = f"{tightest.bucket.limit:g}"
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(tightest.remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(tightest.reset_after)
    return headers


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes it in `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
