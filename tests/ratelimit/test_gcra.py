"""The pure arithmetic: GCRA on backlogs, and the UTC calendar periods of spend budgets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.ratelimit.gcra import backlog_at, rate_adjust, rate_charge, rate_remaining, spend_period


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("limit", "window"), [(1, 1.0), (7, 60.0), (3, 1.0), (1000, 60.0), (100_000, 60.0)])
def test_exactly_limit_unit_charges_from_idle(limit: int, window: float) -> None:
    backlog, admitted = 0.0, 0
    while (decision := rate_charge(backlog, 1, limit, window)).allowed:
        backlog, admitted = decision.backlog, admitted + 1
    assert admitted == limit
    assert decision.remaining == 0
    assert decision.retry_after == pytest.approx(window / limit)


def test_one_interval_later_exactly_one_more() -> None:
    backlog = rate_charge(0.0, 7, 7, 60.0).backlog
    assert backlog == pytest.approx(60.0)
    drained = backlog_at(backlog, since=100.0, now=100.0 + 60.0 / 7)
    assert rate_remaining(drained, 7, 60.0) == 1
    assert rate_charge(drained, 1, 7, 60.0).allowed
    assert not rate_charge(drained, 2, 7, 60.0).allowed


def test_remaining_and_retry_after() -> None:
    decision = rate_charge(0.0, 250, 1000, 60.0)
    assert (decision.allowed, decision.backlog, decision.remaining) == (True, 15.0, 750)
    denied = rate_charge(50.0, 200, 1000, 60.0)  # would end 2 s past the window
    assert (denied.allowed, denied.backlog, denied.remaining) == (False, 50.0, 166)
    assert denied.retry_after == pytest.approx(2.0)


def test_oversized_charges_and_empty_limits_are_denied_for_a_window() -> None:
    assert rate_charge(0.0, 11, 10, 60.0).retry_after == 60.0
    assert not rate_charge(0.0, 0, 0, 60.0).allowed
    assert not rate_charge(0.0, 1, 10, 0.0).allowed


def test_settle_moves_tat_but_never_below_now() -> None:
    assert rate_adjust(6.0, 100, 1000, 60.0) == pytest.approx(12.0)
    assert rate_adjust(6.0, -1000, 1000, 60.0) == 0.0
    assert rate_adjust(50.0, 500, 1000, 60.0) == pytest.approx(80.0)  # overshoot: past the window


@pytest.mark.parametrize(
    ("period", "now", "label", "end"),
    [
        ("day", "2026-03-15T12:00:00", "2026-03-15", "2026-03-16T00:00:00"),
        ("week", "2026-03-15T12:00:00", "2026-W11", "2026-03-16T00:00:00"),  # a Sunday ends ISO week 11
        ("week", "2026-03-16T00:00:00", "2026-W12", "2026-03-23T00:00:00"),
        ("week", "2021-01-01T08:00:00", "2020-W53", "2021-01-04T00:00:00"),  # belongs to the year of its Thursday
        ("week", "2024-12-30T08:00:00", "2025-W01", "2025-01-06T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12", "2027-01-01T00:00:00"),
        ("month", "2024-02-29T10:00:00", "2024-02", "2024-03-01T00:00:00"),
    ],
)
def test_spend_periods(period: str, now: str, label: str, end: str) -> None:
    assert spend_period(period, at(now)) == (label, at(end))


def test_total_never_ends_and_unknown_periods_are_refused() -> None:
    assert spend_period("total", at("2026-03-15T12:00:00")) == ("total", None)
    with pytest.raises(ValueError, match="year"):
        spend_period("year", 0.0)
