"""Metrics of routing on the prompt and of on-demand boot: decisions of deciding route rules, their fallbacks, and
backend wakes (by result, their duration, the requests held). Recorded as things happen, not per call."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.telemetry.children import Children

WAKE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class RoutingMetrics:
    """A `DecisionObserver` (gateway.routing.decision) and a `WakeObserver` (gateway.providers.wake)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.decisions = Counter(
            "tollgate_route_decisions",
            "Requests a semantic or classifier route rule decided, by the choice (a model, default, or none: the "
            "next rule was tried).",
            ["rule", "choice"],
            registry=registry,
        )
        self.decision_failures = Counter(
            "tollgate_route_decision_failures",
            "Decisions a route rule could not make (embedding or classifier failed, timed out…) and fell back.",
            ["rule", "reason"],
            registry=registry,
        )
        self.wakes = Counter(
            "tollgate_backend_wakes", "Wakes of sleeping backends, by result.", ["backend", "result"], registry=registry
        )
        self.wake_duration = Histogram(
            "tollgate_backend_wake_duration_seconds",
            "From the wake's start until the backend was ready (or the wake failed).",
            ["backend"],
            buckets=WAKE_BUCKETS,
            registry=registry,
        )
        self.held = Gauge(
            "tollgate_backend_requests_held",
            "Requests held while their backend wakes.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._child = Children()

    def decided(self, rule: str, choice: str) -> None:
        """A rule decided."""
        self._child(self.decisions, rule, choice).inc()

    def failed(self, rule: str, reason: str) -> None:
        """A rule fell back."""
        self._child(self.decision_failures, rule, reason).inc()

    def woke(self, backend: str, result: str, seconds: float) -> None:
        """A wake ended."""
        self._child(self.wakes, backend, result).inc()
        self._child(self.wake_duration, backend).observe(seconds)

    def holding(self, backend: str, change: int) -> None:
        """Held requests changed."""
        self._child(self.held, backend).inc(change)
