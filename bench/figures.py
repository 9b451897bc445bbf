"""The bench's figures: one run's measurements, and what is worked out from them (each target against the direct
call and the floor, a section's added cost against plain tollgate, the checks that the limits and the accounting
held). `bench.report` renders them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DIRECT = "direct"
# A target measured against a direct call of its own API (the Responses API's upstream answers differ from chat's).
DIRECT_OF = {"responses": "responses-direct"}
FLOOR = "floor"
TOLLGATE = "tollgate"
SECURED = "secured"  # tollgate with an auth server and a stats server
LIMITS = ("limits", "limits-redis")  # tollgate with rate limits on every request, in memory and in Redis
CACHE = ("cache", "cache-redis")  # tollgate answering every request from its response cache, L1 and L2
TRANSLATED = ("anthropic",)  # tollgate translating OpenAI requests for an Anthropic backend
LIMIT_HEADER = "x-ratelimit-remaining-requests"  # every answer of a limits target must carry it


@dataclass
class RunFigures:
    """The figures of one measured run (one target, one scenario, one concurrency)."""

    target: str
    scenario: str  # "plain" or "stream"
    concurrency: int
    requests: int
    chunks: int
    errors: int
    warmup_errors: int
    error_samples: list[str]
    wall_s: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None  # streams only
    gateway_cpu_s: float | None  # None when no gateway sits in between (direct)
    cpu_per_request_ms: float | None
    cpu_per_chunk_us: float | None  # streams only: CPU per request / chunks
    upstream_cpu_per_request_ms: float
    client_cpu_per_request_ms: float
    peak_rss_kib: dict[str, int] = field(default_factory=dict)  # per gateway process and side server, after this run
    background_cpu_pct: float = 0.0  # what the rest of the machine used meanwhile, in % of one core
    # The servers the gateway calls (secured: authsvc, statssvc; limits-redis: a local redis-server), by name; not
    # part of cpu_per_request_ms.
    services_cpu_per_request_ms: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # answers other than 200 by status, warm-up included
    header_samples: list[str | None] = field(default_factory=list)  # limits targets: LIMIT_HEADER on a few answers


@dataclass
class Comparison:
    """One target against direct (latency) and against the floor proxy (CPU), at one scenario and concurrency."""

    target: str
    scenario: str
    concurrency: int
    added_p50_ms: float | None
    added_p99_ms: float | None
    added_ttft_ms: float | None
    cpu_per_request_ms: float | None
    cpu_per_request_vs_floor: float | None
    cpu_per_chunk_us: float | None
    cpu_per_chunk_vs_floor: float | None
    marginal_chunk_us: float | None  # (stream CPU/request - plain CPU/request) / chunks
    marginal_chunk_vs_floor: float | None


@dataclass
class AddedCost:
    """What a target adds to tollgate (secured: auth + stats; limits: rate limits) at one scenario and concurrency."""

    target: str
    scenario: str
    concurrency: int
    added_p50_ms: float | None
    cpu_per_request_ms: float | None  # the secured gateway process alone
    added_cpu_per_request_ms: float | None  # over tollgate without auth and stats
    services_cpu_per_request_ms: dict[str, float]  # authsvc, statssvc, redis-server: paid by other processes


@dataclass(frozen=True)
class LimitsCheck:
    """Whether a limits target's answers carried its headers, and that none was refused (the limits are never hit)."""

    target: str
    sampled: int  # answers whose LIMIT_HEADER was looked at
    carried: int  # of which carried it
    refused: int  # answers with status 429, warm-ups included
    example: str | None = None  # the last value seen

    @property
    def ok(self) -> bool:
        return self.sampled > 0 and self.carried == self.sampled and self.refused == 0

    def line(self) -> str:
        example = "" if self.example is None else f" (last: {self.example})"
        return (
            f"{self.target}: {LIMIT_HEADER} on {self.carried} of {self.sampled} sampled answers{example}, "
            f"{self.refused} answered 429"
        )


@dataclass(frozen=True)
class UsageCheck:
    """Requests sent through the secured gateway against the usage records its stats server reports."""

    sent: int
    stored: int | None  # None when the stats server could not be asked
    problem: str | None = None  # why `stored` is missing
    cost_usd: float | None = None  # the stored records' total cost, from the configured prices

    @property
    def ok(self) -> bool:
        return self.stored == self.sent

    def line(self) -> str:
        stored = "?" if self.stored is None else str(self.stored)
        cost = "" if self.cost_usd is None else f", US${self.cost_usd:.6f} of cost computed"
        return f"usage records: {self.sent} sent, {stored} stored{cost}" + (
            f" ({self.problem})" if self.problem else ""
        )


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _index(runs: Iterable[RunFigures]) -> dict[tuple[str, str, int], RunFigures]:
    return {(run.target, run.scenario, run.concurrency): run for run in runs}


def _marginal(by_key: dict[tuple[str, str, int], RunFigures], target: str, concurrency: int) -> float | None:
    stream = by_key.get((target, "stream", concurrency))
    plain = by_key.get((target, "plain", concurrency))
    if stream is None or plain is None or stream.chunks <= 0:
        return None
    delta = _sub(stream.cpu_per_request_ms, plain.cpu_per_request_ms)
    return None if delta is None else delta * 1000 / stream.chunks


def compare(runs: Sequence[RunFigures]) -> list[Comparison]:
    """Every non-direct run against the direct run and the floor run of the same scenario and concurrency."""
    by_key = _index(runs)
    out: list[Comparison] = []
    for run in runs:
        if run.target in (DIRECT, *DIRECT_OF.values()):
            continue
        key = (run.scenario, run.concurrency)
        direct = by_key.get((DIRECT_OF.get(run.target, DIRECT), *key))
        floor = by_key.get((FLOOR, *key))
        marginal = _marginal(by_key, run.target, run.concurrency) if run.scenario == "stream" else None
        floor_marginal = _marginal(by_key, FLOOR, run.concurrency) if run.scenario == "stream" else None
        out.append(
            Comparison(
                target=run.target,
                scenario=run.scenario,
                concurrency=run.concurrency,
                added_p50_ms=_sub(run.p50_ms, direct.p50_ms if direct else None),
                added_p99_ms=_sub(run.p99_ms, direct.p99_ms if direct else None),
                added_ttft_ms=_sub(run.ttft_p50_ms, direct.ttft_p50_ms if direct else None),
                cpu_per_request_ms=run.cpu_per_request_ms,
                cpu_per_request_vs_floor=_ratio(run.cpu_per_request_ms, floor.cpu_per_request_ms if floor else None),
                cpu_per_chunk_us=run.cpu_per_chunk_us,
                cpu_per_chunk_vs_floor=_ratio(run.cpu_per_chunk_us, floor.cpu_per_chunk_us if floor else None),
                marginal_chunk_us=marginal,
                marginal_chunk_vs_floor=_ratio(marginal, floor_marginal),
            )
        )
    return out


def added_cost(runs: Sequence[RunFigures], targets: Sequence[str] = (SECURED,)) -> list[AddedCost]:
    """Every run of `targets` against the tollgate run of the same scenario and concurrency (when there is one)."""
    by_key = _index(runs)
    out: list[AddedCost] = []
    for run in runs:
        if run.target not in targets:
            continue
        plain = by_key.get((TOLLGATE, run.scenario, run.concurrency))
        out.append(
            AddedCost(
                target=run.target,
                scenario=run.scenario,
                concurrency=run.concurrency,
                added_p50_ms=_sub(run.p50_ms, plain.p50_ms if plain else None),
                cpu_per_request_ms=run.cpu_per_request_ms,
                added_cpu_per_request_ms=_sub(run.cpu_per_request_ms, plain.cpu_per_request_ms if plain else None),
                services_cpu_per_request_ms=dict(run.services_cpu_per_request_ms),
            )
        )
    return out


def limits_checks(runs: Sequence[RunFigures]) -> list[LimitsCheck]:
    """For each limits target that ran: whether its sampled answers carried LIMIT_HEADER, and how many were 429s."""
    out: list[LimitsCheck] = []
    for target in LIMITS:
        chosen = [run for run in runs if run.target == target]
        if not chosen:
            continue
        samples = [value for run in chosen for value in run.header_samples]
        carried = [value for value in samples if value is not None and value.isdigit()]
        refused = sum(run.statuses.get("429", 0) for run in chosen)
        out.append(LimitsCheck(target, len(samples), len(carried), refused, carried[-1] if carried else None))
    return out


# ---------------------------------------------------------------------------------------------------- formatting
