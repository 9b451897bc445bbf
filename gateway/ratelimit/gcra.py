"""The limit arithmetic, free of storage and clocks: GCRA for rates, UTC calendar periods for spend.

GCRA (the generic cell rate algorithm) keeps one number per bucket, the theoretical arrival time (TAT). With the
emission interval T = window / limit, a charge of n is allowed iff max(TAT, now) + n·T - now ≤ window, and then
TAT = max(TAT, now) + n·T. The functions here take the *backlog*, TAT - now clamped at 0, instead of TAT itself:
backends store the backlog with the time it was measured, so no absolute timestamp (≈1.7e9, a float step of 2.4e-7 s)
ever absorbs the small steps of n·T, and from idle exactly `limit` charges of 1 are admitted however large `limit`.

`redis_backend`'s Lua scripts (`common.lua`) mirror these functions line for line; the shared tests hold both to them.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

# Float noise allowed, as a fraction of the window, when comparing n·T sums to the window.
RATE_SLACK = 1e-9
# Spend keys outlive their period by a day, so a request that straddles midnight can still be read and settled.
SPEND_GRACE = 86400.0
PERIODS = ("day", "week", "month", "total")


class RateDecision(NamedTuple):
    """GCRA's answer to one charge (a tuple: made on every acquire, it should be cheap)."""

    allowed: bool
    backlog: float  # TAT - now after the charge (unchanged when denied)
    remaining: float  # whole units still admissible now, after the charge when allowed
    retry_after: float  # when denied: seconds until this charge would be admitted


def backlog_at(backlog: float, since: float, now: float) -> float:
    """The backlog measured at `since`, as it stands at `now` (it drains at one second per second)."""
    return max(0.0, backlog - (now - since))


def rate_remaining(backlog: float, limit: float, window: float) -> float:
    """How many charges of 1 would be admitted now: floor((window - backlog) / T), never negative."""
    if limit <= 0 or window <= 0:
        return 0.0
    interval = window / limit
    return float(max(0, math.floor((window - backlog + window * RATE_SLACK) / interval)))


def rate_charge(backlog: float, amount: float, limit: float, window: float) -> RateDecision:
    """Charge `amount` against a bucket whose backlog is `backlog` (TAT - now, ≥ 0)."""
    if amount > limit or limit <= 0 or window <= 0:
        # Never admissible: retry_after is only a pacing hint here, the whole window.
        return RateDecision(False, backlog, rate_remaining(backlog, limit, window), max(window, 0.0))
    after = backlog + amount * (window / limit)
    if after <= window * (1 + RATE_SLACK):
        return RateDecision(True, after, rate_remaining(after, limit, window), 0.0)
    return RateDecision(False, backlog, rate_remaining(backlog, limit, window), after - window)


def rate_adjust(backlog: float, amount: float, limit: float, window: float) -> float:
    """Settle: move TAT by amount·T (amount may be negative; a refund never moves TAT below now)."""
    if limit <= 0 or window <= 0:
        return backlog
    return max(0.0, backlog + amount * (window / limit))


def spend_period(period: str, now: float) -> tuple[str, float | None]:
    """The label of the UTC calendar period holding `now` and the epoch second it ends (None: "total" never ends).

    Labels: day `2026-11-23`, ISO week `2026-W48`, month `2026-11`, `total`.
    """
    if period == "total":
        return "total", None
    today = datetime.fromtimestamp(now, UTC).date()
    if period == "day":
        return today.isoformat(), _epoch(today + timedelta(days=1))
    if period == "week":
        iso = today.isocalendar()
        monday = today - timedelta(days=iso.weekday - 1)
        return f"{iso.year:04d}-W{iso.week:02d}", _epoch(monday + timedelta(days=7))
    if period == "month":
        following = date(today.year + today.month // 12, today.month % 12 + 1, 1)
        return f"{today.year:04d}-{today.month:02d}", _epoch(following)
    raise ValueError(f"unknown spend period {period!r}: expected one of {', '.join(PERIODS)}")


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
