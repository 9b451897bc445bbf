"""A QueryUsageResponse for people (an aligned table with a TOTAL row) and for programs (JSON)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from tollgate.stats.v1 import stats_pb2 as pb

# The CLI's names for the dimensions, in the order the help lists them.
DIMENSIONS: dict[str, pb.GroupBy.ValueType] = {
    "key": pb.GROUP_BY_KEY,
    "user": pb.GROUP_BY_USER,
    "team": pb.GROUP_BY_TEAM,
    "model": pb.GROUP_BY_MODEL,
    "backend": pb.GROUP_BY_BACKEND,
    "experiment": pb.GROUP_BY_EXPERIMENT,
    "arm": pb.GROUP_BY_EXPERIMENT_ARM,
}
_NUMBERS = ("REQUESTS", "ERRORS", "INPUT", "OUTPUT", "CACHED", "REASONING", "COST_USD")
_EMPTY = "(none)"  # a record without this dimension, e.g. no key with `auth: none`


def _numbers(t: pb.UsageTotals) -> list[str]:
    counts = (t.requests, t.errors, t.input_tokens, t.output_tokens, t.cached_tokens, t.reasoning_tokens)
    return [*(str(n) for n in counts), f"{t.cost_usd:.6f}"]


def _time(bucket: pb.UsageBucket) -> str:
    return bucket.start_time.ToJsonString()  # RFC 3339 in UTC, e.g. 2026-11-01T00:00:00Z


def _keys(group: pb.UsageGroup, n: int) -> list[str]:
    # Exactly one value per dimension, even from a server that answers with too few or too many.
    return [*group.keys[:n], *[""] * (n - len(group.keys))]


def table(response: pb.QueryUsageResponse, dimensions: Sequence[str], bucketed: bool) -> str:
    """Keys left-aligned, numbers right-aligned; one row per group, or per (group, bucket) when bucketed."""
    text_header = [d.upper() for d in dimensions] + (["TIME"] if bucketed else [])
    n_text = max(len(text_header), 1)  # at least the column that holds TOTAL
    header = [*text_header, *[""] * (n_text - len(text_header)), *_NUMBERS]
    rows: list[list[str]] = []
    for group in response.groups:
        keys = [k or _EMPTY for k in _keys(group, len(dimensions))]
        if bucketed:
            rows.extend([*keys, _time(b), *_numbers(b.totals)] for b in group.buckets)
        elif dimensions:
            rows.append([*keys, *_numbers(group.totals)])
    rows.append(["TOTAL", *[""] * (n_text - 1), *_numbers(response.totals)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i < n_text else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return "\n".join(line(r) for r in [header, *rows])


def _totals(t: pb.UsageTotals) -> dict[str, object]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_tokens": t.cached_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "cost_usd": t.cost_usd,
    }


def to_json(response: pb.QueryUsageResponse, dimensions: Sequence[str], bucketed: bool) -> str:
    """`{"group_by", "totals", "groups": [{"keys": {dimension: value}, "totals", "buckets"?}]}`, indented."""
    groups: list[dict[str, object]] = []
    for group in response.groups:
        keys = dict(zip(dimensions, _keys(group, len(dimensions)), strict=True))
        item: dict[str, object] = {"keys": keys, "totals": _totals(group.totals)}
        if bucketed:
            item["buckets"] = [{"start_time": _time(b), "totals": _totals(b.totals)} for b in group.buckets]
        groups.append(item)
    document = {"group_by": list(dimensions), "totals": _totals(response.totals), "groups": groups}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
