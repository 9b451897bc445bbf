"""The typed configuration of routing: retries and their budget, health and circuit breaking, route rules,
experiments and the admin API. Built and validated by `gateway.config.routing_load`; see docs/routing.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.py holds these routing sections, so it imports this module, not the other way round
    from gateway.config.model import Secret, TargetConfig

BALANCING_POLICIES = ("weighted", "least_outstanding", "latency")
PROMPT_FEATURES = ("tools", "images", "audio", "json_schema")  # what a rule's `match.features` may ask for
PROMPT_TEXTS = ("last_user", "conversation")  # what a semantic rule or a classifier reads of the prompt
EXPERIMENT_KEYS = ("user", "key", "team")  # or "header:<name>"


def _no_globs() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """How one request is retried: per attempt, overall, and how much retrying the whole process may do."""

    attempts_per_target: int = 1  # 1: each planned target once; 2: a target that failed retryably gets one more go
    attempt_timeout: float | None = None  # the longest one attempt may wait for its first byte; None: no bound
    # The longest all attempts of one request may take, until the first byte; None: only the backends' own
    # timeouts bound each attempt. Either bound costs about 9 µs of CPU per attempt (an asyncio timer).
    deadline: float | None = None
    backoff_base: float = 0.05  # before a target's second attempt; doubles each time, with full jitter
    backoff_max: float = 2.0
    retry_after_max: float = 10.0  # a Retry-After longer than this is not waited for on the same target
    budget_ratio: float = 0.2  # retries (attempts after a request's first) at most this share of requests…
    budget_min: int = 10  # …plus this many, within each window
    budget_window: float = 10.0


@dataclass(frozen=True, slots=True)
class ActiveCheckConfig:
    """A periodic cheap probe of each backend (for OpenAI-compatible ones `GET {base_url}/models`)."""

    interval: float = 10.0
    timeout: float = 2.0
    unhealthy_after: int = 2  # consecutive failed probes that mark the backend down
    healthy_after: int = 1  # consecutive good probes that bring it back


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Passive outlier detection and circuit breaking per target, and optional active checks per backend."""

    consecutive_failures: int = 5  # this many failures in a row eject a target
    error_rate: float = 0.5  # or this share of failures…
    error_rate_min_requests: int = 20  # …over at least this many requests…
    error_rate_window: float = 30.0  # …within this window
    ejection_base: float = 5.0  # the first ejection's length; each repeat doubles it…
    ejection_max: float = 300.0  # …up to this
    ejection_reset: float = 300.0  # a target closed this long forgets its earlier ejections
    half_open_probes: int = 1  # requests let through at once to test an ejected target whose time is up
    rate_limit_cooldown: float = 1.0  # a 429 without Retry-After rests the target this long
    latency_decay: float = 10.0  # seconds: how fast the latency estimate forgets (the peak-EWMA's time constant)
    active: ActiveCheckConfig | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What a request must have for a route to apply; every given dimension must match (globs)."""

    model: tuple[str, ...] = ()
    key_id: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    team: tuple[str, ...] = ()
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=_no_globs)  # lower-case name -> globs
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=_no_globs)  # the principal's labels
    # The prompt's size by the gateway's own estimate (`estimate_prompt_tokens`), bounds included; None: any size.
    prompt_tokens: tuple[int, int | None] | None = None
    features: tuple[str, ...] = ()  # PROMPT_FEATURES the request must all use

    @property
    def reads_prompt(self) -> bool:
        """Whether matching needs the chat request itself (an embeddings request never matches such a rule)."""
        return self.prompt_tokens is not None or bool(self.features)


@dataclass(frozen=True, slots=True)
class SemanticChoice:
    """A model a semantic rule may pick, and example prompts of the requests it should serve."""

    to: str
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SemanticRoute:
    """Pick the choice whose examples the prompt is most like (cosine similarity of embeddings), if ≥ threshold."""

    embedding_model: str  # a model of this config that serves embeddings
    choices: tuple[SemanticChoice, ...]
    threshold: float = 0.6
    timeout: float = 1.0  # the longest the prompt's embedding is waited for; past it: `default`, or the next rule
    batch: int = 64  # examples embedded per call when the config loads


@dataclass(frozen=True, slots=True)
class ClassifierRoute:
    """Ask a `tollgate.router.v1.RouterService` which of `choices` (model names) should serve the prompt."""

    server: str  # host:port
    choices: tuple[str, ...]
    timeout: float = 0.2  # the call's deadline; past it (or on any failure): `default`, or the next rule


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Requests that `match` are served by the model `to` (a rule without `match` takes every request); or, with
    `semantic` or `classifier`, by the model they pick from the prompt, else by `default`, else the next rule."""

    name: str
    to: str = ""
    match: RouteMatch = field(default_factory=RouteMatch)
    semantic: SemanticRoute | None = None
    classifier: ClassifierRoute | None = None
    default: str = ""  # a deciding rule's model when nothing is picked; empty: the next rule is tried
    text: str = "last_user"  # what a deciding rule reads: the last user message, or the whole "conversation"

    @property
    def decides(self) -> bool:
        """Whether the rule picks its model from the prompt (an await before the plan)."""
        return self.semantic is not None or self.classifier is not None

    def models(self) -> tuple[str, ...]:
        """Every model this rule may send a request to."""
        if self.semantic is not None:
            picks: tuple[str, ...] = tuple(c.to for c in self.semantic.choices)
        elif self.classifier is not None:
            picks = self.classifier.choices
        else:
            picks = (self.to,)
        return (*picks, self.default) if self.default else picks


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """A share of a model's traffic to `targets` (the treatment arm), sticky per value of `key`."""

    name: str
    share: float  # 0 < share < 1
    targets: tuple[TargetConfig, ...]
    key: str = "user"  # "user", "key", "team" or "header:<name>"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API (`GET /admin/backends`, `AdminService`); without a token every admin call is refused."""

    token: Secret | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Process-wide routing settings."""

    retry: RetryConfig = field(default_factory=RetryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    routes: tuple[RouteRule, ...] = ()
    admin: AdminConfig = field(default_factory=AdminConfig)
