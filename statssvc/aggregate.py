"""QueryUsage as SQL: one GROUP BY over the filtered rows, folded into groups, buckets and a grand total.

Column names reach the SQL text only from the whitelists below; every value the caller chose is a parameter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from statssvc.schema import FAILED
from tollgate.stats.v1 import stats_pb2 as pb

# GroupBy → column; the only dimensions a query may name.
GROUP_COLUMNS: dict[pb.GroupBy.ValueType, str] = {
    pb.GROUP_BY_KEY: "key_id",
    pb.GROUP_BY_USER: "user",
    pb.GROUP_BY_TEAM: "team",
    pb.GROUP_BY_MODEL: "requested_model",
    pb.GROUP_BY_BACKEND: "backend",
    pb.GROUP_BY_EXPERIMENT: "experiment",
    pb.GROUP_BY_EXPERIMENT_ARM: "experiment_arm",
}
# QueryUsageRequest filter field → column.
FILTER_COLUMNS: dict[str, str] = {"key_id": "key_id", "user": "user", "team": "team", "model": "requested_model"}

# The sums, in UsageTotals order after `requests`; `errors` counts the failed outcome.
_SUMS = (
    "COUNT(*)",
    "COALESCE(SUM(outcome = :failed), 0)",
    "COALESCE(SUM(input_tokens), 0)",
    "COALESCE(SUM(output_tokens), 0)",
    "COALESCE(SUM(cached_tokens), 0)",
    "COALESCE(SUM(reasoning_tokens), 0)",
    "COALESCE(SUM(cost_usd), 0.0)",
)
# The bucket's start: start_time floored (also below zero, where % truncates) to a multiple of the width.
_BUCKET = "(start_time - ((start_time % :width) + :width) % :width)"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A validated QueryUsageRequest: the window is resolved, the bucket width is in microseconds (0: none)."""

    columns: tuple[str, ...]
    filters: dict[str, str]
    start_us: int | None
    end_us: int
    bucket_us: int = 0

    @classmethod
    def from_request(cls, request: pb.QueryUsageRequest, now_us: int) -> UsageQuery:
        """Resolve `request` (unset end is `now_us`); raises ValueError on a dimension outside the whitelist."""
        try:
            columns = tuple(GROUP_COLUMNS[g] for g in request.group_by)
        except KeyError as exc:
            raise ValueError(f"group_by: unknown dimension {exc.args[0]}") from None
        return cls(
            columns=columns,
            filters={col: getattr(request, name) for name, col in FILTER_COLUMNS.items() if getattr(request, name)},
            start_us=request.start_time.ToMicroseconds() if request.HasField("start_time") else None,
            end_us=request.end_time.ToMicroseconds() if request.HasField("end_time") else now_us,
            bucket_us=request.bucket.ToMicroseconds() if request.HasField("bucket") else 0,
        )

    def sql(self) -> tuple[str, dict[str, object]]:
        """The SELECT and its parameters: one row per group (and bucket), keys first, then the sums."""
        params: dict[str, object] = {"failed": FAILED, "end": self.end_us}
        if self.start_us is None:
            where = ["+start_time < :end"]  # from the beginning: a table scan beats walking the time index
        else:
            where = ["start_time >= :start", "start_time < :end"]
            params["start"] = self.start_us
        for i, (column, value) in enumerate(self.filters.items()):
            where.append(f'"{column}" = :f{i}')
            params[f"f{i}"] = value
        # Unary + (a no-op on the value) keeps the planner from walking a dimension's index to group by it:
        # one random row lookup per record is several times slower than scanning the window and sorting.
        keys = [f'+"{c}"' for c in self.columns]
        if self.bucket_us:
            keys.append(_BUCKET)
            params["width"] = self.bucket_us
        select = ", ".join([*keys, *_SUMS])
        text = f"SELECT {select} FROM usage WHERE {' AND '.join(where)}"
        if keys:
            positions = ", ".join(str(i + 1) for i in range(len(keys)))
            text += f" GROUP BY {positions}"
        return text, params


@dataclass(slots=True)
class _Group:
    keys: tuple[str, ...]
    totals: pb.UsageTotals = field(default_factory=pb.UsageTotals)
    buckets: list[pb.UsageBucket] = field(default_factory=list)


def _totals(sums: Sequence[Any]) -> pb.UsageTotals:
    requests, errors, input_tokens, output_tokens, cached, reasoning, cost = sums
    return pb.UsageTotals(
        requests=requests,
        errors=errors,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cost_usd=cost,
    )


def add_totals(into: pb.UsageTotals, other: pb.UsageTotals) -> None:
    """Add `other` to `into`, field by field."""
    into.requests += other.requests
    into.errors += other.errors
    into.input_tokens += other.input_tokens
    into.output_tokens += other.output_tokens
    into.cached_tokens += other.cached_tokens
    into.reasoning_tokens += other.reasoning_tokens
    into.cost_usd += other.cost_usd


def run_query(conn: sqlite3.Connection, query: UsageQuery) -> pb.QueryUsageResponse:
    """Answer `query`: groups by cost then requests (largest first), buckets oldest first, and the grand total."""
    text, params = query.sql()
    n_keys = len(query.columns)
    groups: dict[tuple[str, ...], _Group] = {}
    for row in conn.execute(text, params):
        keys = tuple(row[:n_keys])
        totals = _totals(row[-len(_SUMS) :])
        group = groups.setdefault(keys, _Group(keys))
        add_totals(group.totals, totals)
        if query.bucket_us:
            bucket = pb.UsageBucket(totals=totals)
            bucket.start_time.FromMicroseconds(row[n_keys])
            group.buckets.append(bucket)
    if not query.columns:
        groups.setdefault((), _Group(()))  # no dimensions: always the one group, the total
    response = pb.QueryUsageResponse()
    for group in sorted(groups.values(), key=lambda g: (-g.totals.cost_usd, -g.totals.requests, g.keys)):
        group.buckets.sort(key=lambda b: b.start_time.ToMicroseconds())
        response.groups.add(keys=group.keys, totals=group.totals, buckets=group.buckets)
        add_totals(response.totals, group.totals)
    return response
