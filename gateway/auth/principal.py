"""Who a caller is, once authenticated: the key's non-secret id, user and team, model access, limits and labels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.globs import compile_globs
from tollgate.auth.v1 import auth_pb2


@dataclass(frozen=True, slots=True)
class ModelAccess:
    """Allowed and denied model globs; a deny wins, and no allowed globs at all means every model."""

    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    _allow: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _deny: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        # Compiled once per decision, which the cache then reuses for every request of the key.
        object.__setattr__(self, "_allow", compile_globs(self.allowed))
        object.__setattr__(self, "_deny", compile_globs(self.denied))

    @property
    def unrestricted(self) -> bool:
        """Whether every model may be used (no globs at all): then nothing needs checking."""
        return self._allow is None and self._deny is None

    def permits(self, model: str) -> bool:
        """Whether `model` (a model name: the one asked for, or one that could serve it) may be used."""
        if self._deny is not None and self._deny.fullmatch(model):
            return False
        return self._allow is None or self._allow.fullmatch(model) is not None


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-key limits for the rate-limit work to enforce; zero means no limit."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    concurrent_requests: int = 0
    budget_usd: float = 0.0
    budget_period: str = ""  # "day", "week", "month", "total"; empty without a budget


_PERIODS = {
    auth_pb2.BUDGET_PERIOD_DAY: "day",
    auth_pb2.BUDGET_PERIOD_WEEK: "week",
    auth_pb2.BUDGET_PERIOD_MONTH: "month",
    auth_pb2.BUDGET_PERIOD_TOTAL: "total",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. It never holds the key itself."""

    key_id: str
    user: str = ""
    team: str = ""
    access: ModelAccess = field(default_factory=ModelAccess)
    limits: Limits = field(default_factory=Limits)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_decision(cls, reply: auth_pb2.CheckResponse) -> Principal:
        """The principal an auth server's allow decision describes."""
        limits = reply.limits
        return cls(
            key_id=reply.key_id,
            user=reply.user,
            team=reply.team,
            access=ModelAccess(tuple(reply.allowed_models), tuple(reply.denied_models)),
            limits=Limits(
                requests_per_minute=limits.requests_per_minute,
                tokens_per_minute=limits.tokens_per_minute,
                concurrent_requests=limits.concurrent_requests,
                budget_usd=limits.budget.limit_usd,
                budget_period=_PERIODS.get(limits.budget.period, "") if limits.budget.limit_usd else "",
            ),
            labels=MappingProxyType(dict(reply.labels)),
        )


# With `auth: none`: no key, every model.
ANONYMOUS = Principal(key_id="")
