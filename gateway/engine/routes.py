"""Which model serves a request: route rules (first match wins), then model aliases, then the name itself.

A rule matches on the requested model, request headers and the caller's identity from auth (key id, user, team,
labels), all as globs (gateway.globs), and on the prompt (its estimated tokens, the features it uses); a rule without
`match` takes every request, which makes it the default route when it is last. Limits use the name the client asked
for; access applies to what serves the request too: a rule whose model the caller may not use does not apply to that
caller (the next rule, or the name itself, decides; a name that is no model is then a 403), and a deciding rule
(`semantic`, `classifier`: gateway.routing) picks among the models the caller may use.

Rules that read the prompt need the chat request and, when one decides, an await: the engine then routes chat
through `decide` (when `reads_prompts`); otherwise `resolve` stays a plain loop, and such rules never match there.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig, ModelConfig
from gateway.config.routing import RouteMatch, RouteRule
from gateway.errors import model_not_allowed
from gateway.globs import compile_globs
from gateway.routing.decision import Decider, DecisionFailed, DecisionObserver, Embed, Question
from gateway.routing.prompt import prompt_text, uses
from tollgate.gateway.v1 import gateway_pb2 as pb

log = logging.getLogger("tollgate.routing")

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


class _Prompt:
    """The chat request routing reads, with its token estimate made at most once."""

    __slots__ = ("_tokens", "params")

    def __init__(self, params: pb.ChatCompletionParams) -> None:
        self.params = params
        self._tokens = -1

    @property
    def tokens(self) -> int:
        if self._tokens < 0:
            # Here, not at the top: the split front door imports this module (routing_headers), never metering.
            from gateway.engine.metering import estimate_prompt_tokens  # noqa: PLC0415

            self._tokens = estimate_prompt_tokens(self.params)
        return self._tokens


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    name: str
    to: str
    model: re.Pattern[str] | None
    identity: tuple[tuple[str, re.Pattern[str] | None], ...]  # principal attribute -> pattern
    headers: tuple[tuple[str, re.Pattern[str] | None], ...]
    labels: tuple[tuple[str, re.Pattern[str] | None], ...]
    rule: RouteRule
    reads_prompt: bool  # prompt matchers, or a deciding rule: never applies without the chat request
    decider: Decider | None = None

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
            rule=rule,
            reads_prompt=m.reads_prompt or rule.decides,
            decider=_decider(rule),
        )

    def applies(self, model: str, caller: Caller, prompt: _Prompt | None = None) -> bool:
        if not _matches(self.model, model):
            return False
        if self.reads_prompt and (prompt is None or not _prompt_matches(self.rule.match, prompt)):
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


def _prompt_matches(match: RouteMatch, prompt: _Prompt) -> bool:
    if match.prompt_tokens is not None:
        low, high = match.prompt_tokens
        tokens = prompt.tokens
        if tokens < low or (high is not None and tokens > high):
            return False
    return all(uses(prompt.params, feature) for feature in match.features)


def _decider(rule: RouteRule) -> Decider | None:
    # Imported here: a gateway without deciding rules never loads numpy or the classifier's stubs.
    if rule.semantic is not None:
        from gateway.routing.semantic import SemanticDecider  # noqa: PLC0415

        return SemanticDecider(rule.name, rule.semantic)
    if rule.classifier is not None:
        from gateway.routing.classifier import ClassifierDecider  # noqa: PLC0415

        return ClassifierDecider(rule.name, rule.classifier)
    return None


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
        # Whether chat requests must be routed through `decide` (an await, and the prompt read).
        self.reads_prompts = any(r.reads_prompt for r in self._rules)
        self._deciders = [r.decider for r in self._rules if r.decider is not None]
        self._observer: DecisionObserver | None = None

    def connect(self, embed: Embed, observer: DecisionObserver | None = None) -> None:
        """Give semantic rules the engine's embedding function, and where decisions are counted."""
        for decider in self._deciders:
            decider.connect(embed)
        if observer is not None:
            self._observer = observer

    async def prepare(self) -> None:
        """Get every deciding rule ready (embed the examples, in batches): at engine start, and on reload."""
        if self._deciders:
            await asyncio.gather(*(decider.prepare() for decider in self._deciders))

    async def close(self) -> None:
        """Release the deciding rules' channels and tasks."""
        for decider in self._deciders:
            await decider.close()

    def knows(self, name: str) -> bool:
        """Whether a request for `name` can be served (by a model, an alias or a rule that matches the name alone)."""
        if name in self._models or name in self._aliases:
            return True
        # A rule that names no model may take any name (it may still not match this request: then a 404).
        return any(r.model is None or r.model.fullmatch(name) for r in self._rules)

    def resolve(self, name: str, caller: Caller) -> tuple[str, str]:
        """(the model that serves this request, the name of the rule that chose it or "").

        A rule whose model the caller may not use is passed over. The model may be unknown (no rule matched and it
        is no model): the caller answers 404.
        """
        withheld = False
        for rule in self._rules:
            if rule.applies(name, caller):
                if self.serves(caller.principal, rule.to):
                    return self._aliases.get(rule.to, rule.to), rule.name
                withheld = True
        return self._itself(name, withheld)

    async def decide(self, params: pb.ChatCompletionParams, caller: Caller, request_id: str) -> tuple[str, str]:
        """Like `resolve`, for a chat request, with the rules that read its prompt. A deciding rule's name comes
        back as `rule>choice` (the model it picked, or `default`)."""
        name, prompt, principal = params.model, _Prompt(params), caller.principal
        withheld = False
        for rule in self._rules:
            if not rule.applies(name, caller, prompt):
                continue
            if rule.decider is None:
                if self.serves(principal, rule.to):
                    return self._aliases.get(rule.to, rule.to), rule.name
                withheld = True
                continue
            allowed = tuple(m for m in _choices(rule.rule) if self.serves(principal, m))
            picked = await self._ask(rule, rule.decider, allowed, prompt, caller, request_id) if allowed else ""
            if picked:
                return self._aliases.get(picked, picked), f"{rule.name}>{picked}"
            default = rule.rule.default
            if default and self.serves(principal, default):
                self._count(rule.name, "default")
                return self._aliases.get(default, default), f"{rule.name}>default"
            withheld = withheld or not allowed or bool(default)  # it had a model for this caller but for access
            self._count(rule.name, "none")
        return self._itself(name, withheld)

    def serves(self, principal: Principal | None, name: str) -> bool:
        """Whether a caller may be served under `name`: it may use the name, and the model the name is an alias of
        (a principal of None is the gateway's own call, such as a semantic rule's embedding: anything)."""
        if principal is None or principal.access.unrestricted:
            return True
        model = self._aliases.get(name, name)
        return principal.access.permits(name) and (model == name or principal.access.permits(model))

    def _itself(self, name: str, withheld: bool) -> tuple[str, str]:
        """The model `name` itself is (or is an alias of), no rule having applied; when a rule did apply but was
        passed over for access, a name that is no model is the caller's 403, not a 404."""
        model = self._aliases.get(name, name)
        if withheld and model not in self._models:
            raise model_not_allowed(name)
        return model, ""

    async def _ask(
        self,
        rule: _CompiledRule,
        decider: Decider,
        allowed: tuple[str, ...],
        prompt: _Prompt,
        caller: Caller,
        request_id: str,
    ) -> str:
        """The model `decider` picks among the rule's choices the caller may use (`allowed`); "" when none (or it
        failed)."""
        principal = caller.principal
        question = Question(
            text=prompt_text(prompt.params, rule.rule.text),
            allowed=allowed,
            requested_model=prompt.params.model,
            prompt_tokens=prompt.tokens,
            user=principal.user if principal is not None else "",
            team=principal.team if principal is not None else "",
        )
        try:
            pick = await decider.choose(question)
        except DecisionFailed as exc:
            log.warning("route %r fell back: %s", rule.name, exc, extra={"request_id": request_id})
            if self._observer is not None:
                self._observer.failed(rule.name, exc.reason)
            return ""
        if pick.model:
            self._count(rule.name, pick.model)
        return pick.model

    def _count(self, rule: str, choice: str) -> None:
        if self._observer is not None:
            self._observer.decided(rule, choice)

    @property
    def aliases(self) -> Mapping[str, str]:
        """Alias -> model."""
        return self._aliases


def _choices(rule: RouteRule) -> tuple[str, ...]:
    if rule.semantic is not None:
        return tuple(dict.fromkeys(c.to for c in rule.semantic.choices))
    return rule.classifier.choices if rule.classifier is not None else ()
