"""What the engine knows about each target's health: outstanding requests, a peak-EWMA latency estimate, and a
circuit breaker fed by passive outlier detection (and, optionally, by active checks of the backend).

Circuit states: `closed` (serving); `open` (ejected after `consecutive_failures` failures in a row, or an error rate
of at least `error_rate` over `error_rate_min_requests` requests within `error_rate_window`) for `ejection_base`
seconds, doubled for each ejection since the target was last healthy for `ejection_reset`, up to `ejection_max`;
then `half_open`, where `half_open_probes` requests at a time test it: a success closes the circuit, a failure opens
it again for longer. A 429 is not a failure: it rests the target for its Retry-After (`cooling`). Errors that are
the request's own fault (a 400 from the provider) count as successes: the backend answered.

`snapshot()` is a plain list of frozen dataclasses, for the admin API and for metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum, StrEnum

from gateway.config import TargetConfig
from gateway.config.routing import HealthConfig
from gateway.engine.window import WindowCounts
from gateway.errors import GatewayError, RateLimitError

TargetKey = tuple[str, str]  # (backend, provider model)


class Slot(Enum):
    """What `acquire` gave an attempt: an ordinary slot, or one of a half-open circuit's probes (whose outcome alone
    closes or reopens the circuit)."""

    NORMAL = 1
    PROBE = 2


class CircuitState(StrEnum):
    """Where a target's circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """One target's health at one moment; plain data, for the admin API and metrics."""

    backend: str
    model: str
    state: str  # a CircuitState value
    available: bool  # whether a request could be sent to it now
    ejections: int  # ejections since it was last healthy for `ejection_reset`
    ejections_total: int
    outstanding: int
    latency_ms: float  # the peak-EWMA of time to first byte, decayed to now; 0 before any answer
    consecutive_failures: int
    window_requests: int
    window_failures: int
    retry_in: float  # seconds until it may be tried again; 0 when it may now
    backend_up: bool  # the active check's verdict (True when there are no active checks)
    last_error: str


class _Target:
    __slots__ = (
        "closed_since",
        "consecutive",
        "cooling_until",
        "ejected_until",
        "ejections",
        "ejections_total",
        "ewma",
        "ewma_at",
        "last_error",
        "outstanding",
        "probes",
        "state",
        "window",
    )

    def __init__(self, config: HealthConfig, clock: Callable[[], float]) -> None:
        self.state = CircuitState.CLOSED
        self.closed_since = clock()
        self.ejected_until = 0.0
        self.cooling_until = 0.0
        self.ejections = 0
        self.ejections_total = 0
        self.consecutive = 0
        self.outstanding = 0
        self.probes = 0
        self.ewma = 0.0
        self.ewma_at = 0.0
        self.last_error = ""
        self.window = WindowCounts(config.error_rate_window, clock)  # (successes, failures)


class HealthBoard:
    """The health of every target the engine has tried. The clock is injected so tests are exact."""

    def __init__(self, config: HealthConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._targets: dict[TargetKey, _Target] = {}
        self._backends_down: set[str] = set()

    def _get(self, target: TargetConfig) -> _Target:
        key = (target.backend, target.model)
        state = self._targets.get(key)
        if state is None:
            state = self._targets[key] = _Target(self._config, self._clock)
        return state

    def adopt(self, previous: HealthBoard, backends: Collection[str]) -> int:
        """Take over `previous`'s state of the targets of `backends` (a reload's unchanged backends) and whether each
        is down; the state objects are shared, so calls still running on the old config settle here too. Nothing is
        taken when the health settings changed (the old state was judged by other rules). Returns the targets taken."""
        if previous._config != self._config:
            return 0
        taken = {key: state for key, state in previous._targets.items() if key[0] in backends}
        self._targets.update(taken)
        self._backends_down |= previous._backends_down & set(backends)
        return len(taken)

    # ---------------------------------------------------------------------------------------------- reading

    def retry_in(self, target: TargetConfig) -> float:
        """Seconds until `target` may be tried; 0 when it may be now (inf while its backend is down)."""
        if self._backends_down and target.backend in self._backends_down:
            return math.inf
        state = self._targets.get((target.backend, target.model))
        if state is None or (state.state is CircuitState.CLOSED and not state.cooling_until):
            return 0.0  # the common case, without reading the clock
        now = self._clock()
        if state.cooling_until <= now:
            state.cooling_until = 0.0  # the rest is over: back to the fast path
        wait = max(0.0, state.cooling_until - now)
        if state.state == CircuitState.OPEN:
            wait = max(wait, state.ejected_until - now)
        elif state.state == CircuitState.HALF_OPEN and state.probes >= self._config.half_open_probes:
            wait = max(wait, self._config.ejection_base)  # a probe is under way; its outcome decides
        return wait

    def ejected(self, target: TargetConfig) -> bool:
        """Whether `target`'s circuit is not closed, or its backend is down (as opposed to merely resting)."""
        state = self._targets.get((target.backend, target.model))
        in_circuit = state is not None and state.state != CircuitState.CLOSED
        return in_circuit or target.backend in self._backends_down

    def available(self, target: TargetConfig) -> bool:
        """Whether a request may be sent to `target` now."""
        return self.retry_in(target) == 0.0

    def outstanding(self, target: TargetConfig) -> int:
        """Requests in flight to `target`."""
        state = self._targets.get((target.backend, target.model))
        return state.outstanding if state is not None else 0

    def latency(self, target: TargetConfig) -> float:
        """The peak-EWMA of `target`'s time to first byte in seconds, decayed toward 0 while nothing is observed
        (so a target that was slow is tried again in time); 0 before its first answer."""
        state = self._targets.get((target.backend, target.model))
        if state is None or not state.ewma:
            return 0.0
        return state.ewma * math.exp(-(self._clock() - state.ewma_at) / self._config.latency_decay)

    # ---------------------------------------------------------------------------------------------- one attempt

    def acquire(self, target: TargetConfig) -> Slot | None:
        """Take a slot on `target` for one attempt; None when its circuit or a rest forbids it now.

        Every slot must be given back with exactly one of `succeeded`, `failed` or `abandoned`.
        """
        state = self._get(target)
        if state.state is CircuitState.CLOSED and not state.cooling_until and not self._backends_down:
            state.outstanding += 1  # the common case
            return Slot.NORMAL
        if not self.available(target) and not self._half_open_due(target):
            return None
        if state.state == CircuitState.OPEN:
            state.state = CircuitState.HALF_OPEN
        slot = Slot.NORMAL
        if state.state == CircuitState.HALF_OPEN:
            if state.probes >= self._config.half_open_probes:
                return None
            state.probes += 1
            slot = Slot.PROBE
        state.outstanding += 1
        return slot

    def _half_open_due(self, target: TargetConfig) -> bool:
        state = self._targets.get((target.backend, target.model))
        if state is None or target.backend in self._backends_down:
            return False
        now = self._clock()
        return state.state == CircuitState.OPEN and state.ejected_until <= now and state.cooling_until <= now

    def succeeded(self, target: TargetConfig, seconds: float, slot: Slot = Slot.NORMAL) -> None:
        """An attempt answered after `seconds` (to its first byte)."""
        state = self._release(target, slot)
        self._observe(state, seconds)
        state.consecutive = 0
        state.window.add(first=1)
        if slot is Slot.PROBE and state.state == CircuitState.HALF_OPEN:
            state.state = CircuitState.CLOSED
            state.closed_since = self._clock()

    def failed(self, target: TargetConfig, error: GatewayError, seconds: float, slot: Slot = Slot.NORMAL) -> None:
        """An attempt failed with `error` after `seconds`."""
        if not error.retryable:  # the request's own fault: the backend is fine
            self.succeeded(target, seconds, slot)
            return
        state = self._release(target, slot)
        state.last_error = f"{error.code}: {error.message}"[:200]
        if isinstance(error, RateLimitError):
            rest = error.retry_after if error.retry_after is not None else self._config.rate_limit_cooldown
            state.cooling_until = max(state.cooling_until, self._clock() + rest)
            return
        self._observe(state, seconds)
        if error.retry_after is not None:  # a 503 that says when to come back
            state.cooling_until = max(state.cooling_until, self._clock() + error.retry_after)
        state.consecutive += 1
        state.window.add(second=1)
        # Only a closed circuit's failures, or a probe's, decide: attempts sent before an ejection and failing after
        # it must not eject the target again (a busy target would see its ejection doubled at once).
        probe_failed = slot is Slot.PROBE and state.state == CircuitState.HALF_OPEN
        if probe_failed or (state.state == CircuitState.CLOSED and self._is_outlier(state)):
            self._eject(state)

    def abandoned(self, target: TargetConfig, slot: Slot = Slot.NORMAL) -> None:
        """An attempt ended with no verdict (the caller went away)."""
        self._release(target, slot)

    def _release(self, target: TargetConfig, slot: Slot) -> _Target:
        state = self._get(target)
        state.outstanding = max(0, state.outstanding - 1)
        if slot is Slot.PROBE:
            state.probes = max(0, state.probes - 1)
        return state

    def _observe(self, state: _Target, seconds: float) -> None:
        now = self._clock()
        if seconds >= state.ewma:
            state.ewma = seconds  # peak: a slow answer counts in full at once
        else:
            decay = math.exp(-(now - state.ewma_at) / self._config.latency_decay)
            state.ewma = state.ewma * decay + seconds * (1 - decay)
        state.ewma_at = now

    def _is_outlier(self, state: _Target) -> bool:
        config = self._config
        if state.consecutive >= config.consecutive_failures:
            return True
        good, bad = state.window.totals()
        return good + bad >= config.error_rate_min_requests and bad >= config.error_rate * (good + bad)

    def _eject(self, state: _Target) -> None:
        config, now = self._config, self._clock()
        if state.state == CircuitState.CLOSED and now - state.closed_since >= config.ejection_reset:
            state.ejections = 0  # healthy long enough: this is a fresh incident
        state.ejections += 1
        state.ejections_total += 1
        state.state = CircuitState.OPEN
        state.ejected_until = now + min(config.ejection_max, config.ejection_base * 2 ** (state.ejections - 1))
        state.consecutive = 0
        state.window.clear()

    # ---------------------------------------------------------------------------------------------- active checks

    def set_backend_up(self, backend: str, up: bool) -> None:
        """The active check's verdict on a backend: while down, none of its targets is tried."""
        (self._backends_down.discard if up else self._backends_down.add)(backend)

    # ---------------------------------------------------------------------------------------------- snapshot

    def snapshot(self, targets: list[TargetConfig]) -> list[TargetSnapshot]:
        """The state of each of `targets` (those never tried are closed and idle)."""
        return [self._snap(t) for t in targets]

    def _snap(self, target: TargetConfig) -> TargetSnapshot:
        state = self._targets.get((target.backend, target.model)) or _Target(self._config, self._clock)
        good, bad = state.window.totals()
        retry_in = self.retry_in(target)
        return TargetSnapshot(
            backend=target.backend,
            model=target.model,
            state=str(state.state),
            available=retry_in == 0.0 or self._half_open_due(target),
            ejections=state.ejections,
            ejections_total=state.ejections_total,
            outstanding=state.outstanding,
            latency_ms=round(self.latency(target) * 1000, 3),
            consecutive_failures=state.consecutive,
            window_requests=good + bad,
            window_failures=bad,
            retry_in=0.0 if math.isinf(retry_in) else round(retry_in, 3),
            backend_up=target.backend not in self._backends_down,
            last_error=state.last_error,
        )
