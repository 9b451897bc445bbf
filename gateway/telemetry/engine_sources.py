"""The scrape-time metrics of the engine's own parts: auth decisions and cache, the usage reporter, the limiter, the
response cache."""

from __future__ import annotations

from gateway.auth.authenticator import Authenticator, NoAuth
from gateway.cache.response_cache import ResponseCache
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
