"""The scrape-time metrics of the engine's own parts: auth decisions and cache, the usage reporter, the limiter, the
response cache, the health of every routing target."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.auth.authenticator import Authenticator, NoAuth
from gateway.cache.response_cache import ResponseCache
from gateway.engine.health import CircuitState, TargetSnapshot
from gateway.ratelimit.failover import FailoverLimiter
from gateway.ratelimit.limiter import RateLimiter
from gateway.stats.reporter import UsageReporter
from gateway.telemetry.sources import Readings, ScrapeMetric, ScrapeSources


def watch_auth(sources: ScrapeSources, auth: Authenticator | NoAuth) -> None:
    """Auth server decisions by result, and requests answered from the decision cache."""
    if not isinstance(auth, Authenticator):
        return

    def checks() -> Readings:
        return [((result,), float(n)) for result, n in auth.checks.items()]

    sources.watch(
        ScrapeMetric(
            "tollgate_auth_checks", "Check calls to the auth server by result.", "counter", checks, ("result",)
        )
    )
    sources.watch(
        ScrapeMetric(
            "tollgate_auth_cache_hits",
            "Requests whose auth decision came from the cache.",
            "counter",
            lambda: [((), float(auth.cache_hits))],
        )
    )


def watch_reporter(sources: ScrapeSources, reporter: UsageReporter) -> None:
    """The usage reporter's queue, what became of its records, and its spool."""

    def records() -> Readings:
        c = reporter.counters
        outcomes = {
            "submitted": c.submitted,
            "delivered": c.delivered,
            "duplicate": c.duplicates,
            "spooled": c.spooled,
            "dropped": c.dropped,
            "corrupt": c.corrupt,
            "rejected": c.rejected,
        }
        return [((outcome,), float(n)) for outcome, n in outcomes.items()]

    sources.watch(
        ScrapeMetric(
            "tollgate_stats_queue_depth",
            "Usage records in memory waiting to be reported.",
            "gauge",
            lambda: [((), float(reporter.counters.pending))],
        )
    )
    sources.watch(
        ScrapeMetric(
            "tollgate_stats_records", "Usage records by what became of them.", "counter", records, ("outcome",)
        )
    )
    sources.watch(
        ScrapeMetric(
            "tollgate_stats_retries",
            "Report calls repeated.",
            "counter",
            lambda: [((), float(reporter.counters.retries))],
        )
    )
    # Every worker sees the whole spool directory, so workers' values are the same figure: the max, not the sum.
    sources.watch(
        ScrapeMetric(
            "tollgate_stats_spool_bytes",
            "Bytes of usage records in the spool on disk.",
            "gauge",
            lambda: [((), float(reporter.spool_bytes))],
            mode="livemax",
        )
    )


def watch_limiter(sources: ScrapeSources, limiter: RateLimiter | None) -> None:
    """Whether the shared (Redis) limiter is down, and how often the fallback answered."""
    backend = limiter.backend if limiter is not None else None
    if not isinstance(backend, FailoverLimiter):
        return
    failover = backend
    sources.watch(
        ScrapeMetric(
            "tollgate_ratelimit_backend_down",
            "1 while the shared limiter (Redis) counts as down and the fallback policy applies.",
            "gauge",
            lambda: [((), 1.0 if failover.down else 0.0)],
            mode="livemax",
        )
    )
    sources.watch(
        ScrapeMetric(
            "tollgate_ratelimit_backend_failures",
            "Limit checks the shared limiter (Redis) could not answer.",
            "counter",
            lambda: [((), float(failover.primary_failures))],
        )
    )
    sources.watch(
        ScrapeMetric(
            "tollgate_ratelimit_fallback_acquires",
            "Limit checks answered by the per-process fallback while the shared limiter was down.",
            "counter",
            lambda: [((), float(failover.fallback_acquires))],
        )
    )


def watch_cache(sources: ScrapeSources, cache: ResponseCache) -> None:
    """The response cache: answers by result and tier, stores, collapsed requests, L1 size, the Redis tier's state."""
    if not cache.enabled:
        return

    def lookups() -> Readings:
        c = cache.counters
        return [(("hit",), float(c.hits)), (("miss",), float(c.misses)), (("bypass",), float(c.bypasses))]

    def tier_hits() -> Readings:
        tiers = cache.store.counters
        return [(("l1",), float(tiers.l1_hits)), (("l2",), float(tiers.l2_hits))]

    def semantic() -> Readings:
        s = cache.semantic.counters if cache.semantic is not None else None
        if s is None:
            return []
        return [(("lookup",), float(s.lookups)), (("hit",), float(s.hits)), (("error",), float(s.errors))]

    watched = [
        ScrapeMetric(
            "tollgate_cache_requests",
            "Cacheable requests by result: hit, miss, bypass.",
            "counter",
            lookups,
            ("result",),
        ),
        ScrapeMetric(
            "tollgate_cache_tier_hits", "Cache hits by the tier that held the answer.", "counter", tier_hits, ("tier",)
        ),
        ScrapeMetric(
            "tollgate_cache_stores",
            "Answers stored in the cache.",
            "counter",
            lambda: [((), float(cache.counters.stores))],
        ),
        ScrapeMetric(
            "tollgate_cache_coalesced",
            "Requests that waited for an identical one instead of calling a provider.",
            "counter",
            lambda: [((), float(cache.flights.waits))],
        ),
        ScrapeMetric(
            "tollgate_cache_l1_bytes",
            "Bytes held by the in-process cache tier.",
            "gauge",
            lambda: [((), float(cache.store.l1.bytes))],
        ),
        ScrapeMetric(
            "tollgate_cache_l1_evictions",
            "Entries the in-process tier evicted for room.",
            "counter",
            lambda: [((), float(cache.store.l1.evictions))],
        ),
        ScrapeMetric(
            "tollgate_cache_redis_errors",
            "Calls to the Redis cache tier that failed.",
            "counter",
            lambda: [((), float(cache.store.counters.l2_errors))],
        ),
        ScrapeMetric(
            "tollgate_cache_redis_down",
            "1 while the Redis cache tier counts as down (L1 only).",
            "gauge",
            lambda: [((), 1.0 if cache.store.counters.l2_down else 0.0)],
            mode="livemax",
        ),
        ScrapeMetric(
            "tollgate_cache_semantic",
            "Semantic cache lookups, hits and failed embeddings or Redis calls.",
            "counter",
            semantic,
            ("event",),
        ),
    ]
    for metric in watched:
        sources.watch(metric)


def watch_health(sources: ScrapeSources, snapshot: Callable[[], Sequence[TargetSnapshot]]) -> None:
    """Every routing target's health (gateway.engine.health). Health is per process, so under workers the gauges
    show the worst worker (an open circuit anywhere) and the sum of requests in flight."""

    def readings(value: Callable[[TargetSnapshot], float]) -> Callable[[], Readings]:
        return lambda: [((s.backend, s.model), value(s)) for s in snapshot()]

    def states() -> Readings:
        return [
            ((s.backend, s.model, state.value), 1.0 if s.state == state else 0.0)
            for s in snapshot()
            for state in CircuitState
        ]

    target = ("backend", "model")
    watched = [
        ScrapeMetric(
            "tollgate_target_available",
            "1 while a request could be sent to the target (not ejected, its backend up).",
            "gauge",
            readings(lambda s: 1.0 if s.available else 0.0),
            target,
            mode="livemin",
        ),
        ScrapeMetric(
            "tollgate_target_circuit_state",
            "1 for the circuit state the target is in: closed, open or half_open.",
            "gauge",
            states,
            (*target, "state"),
            mode="livemax",
        ),
        ScrapeMetric(
            "tollgate_target_outstanding",
            "Requests in flight to the target.",
            "gauge",
            readings(lambda s: float(s.outstanding)),
            target,
        ),
        ScrapeMetric(
            "tollgate_target_latency_seconds",
            "The peak-EWMA of the target's time to first byte.",
            "gauge",
            readings(lambda s: s.latency_ms / 1000),
            target,
            mode="livemax",
        ),
        ScrapeMetric(
            "tollgate_target_ejections",
            "Times outlier detection ejected the target.",
            "counter",
            readings(lambda s: float(s.ejections_total)),
            target,
        ),
        ScrapeMetric(
            "tollgate_backend_up",
            "The active health check's verdict on the target's backend (1: up, and always 1 without checks).",
            "gauge",
            readings(lambda s: 1.0 if s.backend_up else 0.0),
            target,
            mode="livemin",
        ),
    ]
    for metric in watched:
        sources.watch(metric)
