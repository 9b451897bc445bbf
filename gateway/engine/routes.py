"""Which model serves a request: route rules (first match wins), then model aliases, then the name itself.

A rule matches on the requested model, request headers and the caller's identity from auth (key id, user, team,
labels), all as globs (gateway.globs); a rule without `match` takes every request, which makes it the default
route when it is last. Access checks and limits use the name the client asked for; routing is the operator's
business, not the client's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig, ModelConfig
from gateway.config.routing import RouteMatch, RouteRule
from gateway.globs import compile_globs

if TYPE_CHECKING:
    from gateway.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class Caller:
    """What routing may read of a request: its headers, and who sent it (None: not authenticated)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    principal: Principal | None = None


NOBODY = Caller()


def _compiled(globs: Iterable[str]) -> re.Pattern[str] | None:
    return compile_globs(globs)


def _matches(pattern: re.Pattern[str] | None, value: str) -> bool:
    return pattern is None or pattern.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    name: str
    to: str
    model: re.Pattern[str] | None
    identity: tuple[tuple[str, re.Pattern[str] | None], ...]  # principal attribute -> pattern
    headers: tuple[tuple[str, re.Pattern[str] | None], ...]
    labels: tuple[tuple[str, re.Pattern[str] | None], ...]

    @classmethod
    def build(cls, rule: RouteRule) -> _CompiledRule:
        m: RouteMatch = rule.match
        who = (("key_id", m.key_id), ("user", m.user), ("team", m.team))
        identity = tuple((attr, _compiled(globs)) for attr, globs in who if globs)
        return cls(
            name=rule.name,
            to=rule.to,
            model=_compiled(m.model),
            identity=identity,
            headers=tuple((k, _compiled(v)) for k, v in m.headers.items()),
            labels=tuple((k, _compiled(v)) for k, v in m.labels.items()),
        )

    def applies(self, model: str, caller: Caller) -> bool:
        if not _matches(self.model, model):
            return False
        principal = caller.principal
        for attr, pattern in self.identity:
            if principal is None or not _matches(pattern, getattr(principal, attr)):
                return False
        labels: Mapping[str, str] = principal.labels if principal is not None else {}
        for name, pattern in self.labels:
            if name not in labels or not _matches(pattern, labels[name]):
                return False
        return all(_header_matches(caller.headers, name, pattern) for name, pattern in self.headers)


def _header_matches(headers: Mapping[str, str], name: str, pattern: re.Pattern[str] | None) -> bool:
    value = headers.get(name)  # aiohttp's headers are case-insensitive; gRPC metadata keys are lower case
    return value is not None and _matches(pattern, value)


def routing_headers(config: GatewayConfig) -> tuple[str, ...]:
    """The request headers routing reads (route rules, experiments keyed on a header), lower case: a split front
    door forwards these to the engine."""
    names = {name for rule in config.routing.routes for name in rule.match.headers}
    for model in config.models:
        if model.experiment is not None and model.experiment.key.startswith("header:"):
            names.add(model.experiment.key.removeprefix("header:"))
    return tuple(sorted(names))


class RouteTable:
    """Resolves the name a client asked for to the configured model that serves it."""

    def __init__(self, rules: tuple[RouteRule, ...], models: Iterable[ModelConfig]) -> None:
        self._models = {m.name for m in models}
        self._aliases: dict[str, str] = {}
        for model in models:
            self._aliases.update(dict.fromkeys(model.aliases, model.name))
        self._rules = tuple(_CompiledRule.build(r) for r in rules)

    def knows(self, name: str) -> bool:
        """Whether a request for `name` can be served (by a model, an alias or a rule that matches the name alone)."""
        if name in self._models or name in self._aliases:
            return True
        # A rule that names no model may take any name (it may still not match this request: then a 404).
        return any(r.model is None or r.model.fullmatch(name) for r in self._rules)

    def resolve(self, name: str, caller: Caller) -> tuple[str, str]:
        """(the model that serves this request, the name of the rule that chose it or "").

        The model may be unknown (no rule matched and it is no model): the caller answers 404.
        """
        for rule in self._rules:
            if rule.applies(name, caller):
                return self._aliases.get(rule.to, rule.to), rule.name
        return self._aliases.get(name, name), ""

    @property
    def aliases(self) -> Mapping[str, str]:
        """Alias -> model."""
        return self._aliases
