"""Semantic route rules: the prompt's embedding against every choice's example embeddings (gateway.routing.nearest).

The examples are embedded once, in batches, by `prepare` (at engine start; a reload calls it on the new engine);
a request costs one embedding of its own text and one matrix product. Until the examples are embedded (the
embedding model was down at start) every request falls back, and the first one starts another try in the background.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.config.routing import SemanticRoute
from gateway.routing.decision import DecisionFailed, Embed, Pick, Question
from gateway.routing.nearest import ExampleIndex

log = logging.getLogger("tollgate.routing")
PREPARE_TIMEOUT = 30.0  # the longest engine start waits for the examples' embeddings; later tries happen per request


async def embed_examples(
    embed: Embed, model: str, groups: list[tuple[str, tuple[str, ...]]], batch: int
) -> ExampleIndex:
    """An index of every group's examples, embedded `batch` texts per call."""
    texts = [text for _, examples in groups for text in examples]
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        got = await embed(model, chunk)
        if len(got) != len(chunk):
            raise ValueError(f"asked for {len(chunk)} embeddings, got {len(got)}")
        vectors.extend(got)
    grouped, at = [], 0
    for _, examples in groups:
        grouped.append(vectors[at : at + len(examples)])
        at += len(examples)
    return ExampleIndex([name for name, _ in groups], grouped)


class SemanticDecider:
    """Picks the choice whose examples the prompt is most like."""

    def __init__(self, rule: str, route: SemanticRoute, embed: Embed | None = None) -> None:
        self.rule = rule
        self._route = route
        self._embed = embed
        self._index: ExampleIndex | None = None
        self._preparing: asyncio.Task[None] | None = None
        # Two choices may name one model: their examples then count as one choice's.
        merged: dict[str, tuple[str, ...]] = {}
        for choice in route.choices:
            merged[choice.to] = merged.get(choice.to, ()) + choice.examples
        self._groups = list(merged.items())

    def connect(self, embed: Embed) -> None:
        """Use `embed` for the examples and the prompts."""
        self._embed = embed

    @property
    def ready(self) -> bool:
        """Whether the examples are embedded."""
        return self._index is not None

    async def prepare(self) -> None:
        """Embed the examples; on failure the rule falls back until a later try succeeds (logged, not raised)."""
        if self._embed is None:
            return
        try:
            async with asyncio.timeout(PREPARE_TIMEOUT):
                self._index = await embed_examples(
                    self._embed, self._route.embedding_model, self._groups, self._route.batch
                )
        except Exception as exc:  # TimeoutError included
            log.warning("route %r: its examples could not be embedded, it falls back for now: %r", self.rule, exc)

    def _prepare_soon(self) -> None:
        if self._preparing is None or self._preparing.done():
            self._preparing = asyncio.create_task(self.prepare())

    async def choose(self, question: Question) -> Pick:
        """The best choice at or above the threshold among the allowed ones, or `Pick("")`."""
        index, embed = self._index, self._embed
        if index is None or embed is None:
            self._prepare_soon()
            raise DecisionFailed("not_ready", "the examples are not embedded yet")
        if not question.text.strip():
            return Pick("")
        try:
            async with asyncio.timeout(self._route.timeout):
                vectors = await embed(self._route.embedding_model, [question.text])
        except TimeoutError:
            raise DecisionFailed("timeout", f"no embedding within {self._route.timeout}s") from None
        except Exception as exc:
            raise DecisionFailed("embedding_failed", repr(exc)) from exc
        try:
            model, score = index.best(vectors[0], self._route.threshold, question.allowed)
        except (ValueError, IndexError) as exc:  # a reply of another length than the examples'
            raise DecisionFailed("embedding_failed", str(exc)) from exc
        return Pick(model, score)

    async def close(self) -> None:
        """Stop a background try to embed the examples."""
        if self._preparing is not None:
            self._preparing.cancel()
