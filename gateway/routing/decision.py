"""What a deciding route rule (semantic, classifier) is asked and answers, and the one error its failures become.

A deciding rule never fails a request: `DecisionFailed` sends it to the rule's default (or the next rule), and the
route table counts it by `reason`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

# An embedding function: (a model of this gateway, texts) -> one vector per text, in order. The engine passes one
# that goes through its own providers, as the semantic cache's does.
Embed = Callable[[str, list[str]], Awaitable[list[list[float]]]]


class DecisionFailed(Exception):
    """The rule could not decide: `reason` is a bounded metric label (timeout, embedding_failed, not_ready,
    unavailable, bad_choice)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Question:
    """One request's prompt, as a deciding rule sees it."""

    text: str
    allowed: tuple[str, ...]  # the rule's choices the caller may use, in configured order
    requested_model: str = ""
    prompt_tokens: int = 0
    user: str = ""
    team: str = ""


@dataclass(frozen=True, slots=True)
class Pick:
    """A rule's answer: the model chosen ("" when nothing is close enough) and the score behind it."""

    model: str
    score: float = 0.0


class Decider(Protocol):
    """A deciding rule's engine."""

    def connect(self, embed: Embed) -> None:
        """Use the engine's embedding function (rules that do not embed ignore it)."""
        ...

    async def prepare(self) -> None:
        """Get ready to decide (embed the examples, open a channel); called at engine start and on reload."""
        ...

    async def choose(self, question: Question) -> Pick:
        """The model for `question`, or `Pick("")`; raises `DecisionFailed` when it cannot tell."""
        ...

    async def close(self) -> None:
        """Release what `prepare` made."""
        ...


class DecisionObserver(Protocol):
    """Where decisions are counted (telemetry's metrics)."""

    def decided(self, rule: str, choice: str) -> None:
        """A rule picked `choice` (a model, or "default", or "none" when the next rule was tried)."""
        ...

    def failed(self, rule: str, reason: str) -> None:
        """A rule could not decide (and fell back)."""
        ...
