"""Mid-stream failover's bookkeeping: what the caller already has of a streamed answer, so that another target can
be asked to continue it, and the continuation made to look like the rest of the same answer.

The engine's stream loop (`EngineCore.stream_chat_completion`) feeds every chunk through a `Transcript` when the
model has `stream_failover: true`. When the answering target fails after its first byte, the transcript says
whether the answer can be continued (one choice, text only: no tool call, reasoning or refusal begun, not finished)
and with which prefix; the continuation's chunks then get the first target's id, creation time and model, lose their
second role delta, and its empty opening chunk is dropped. See docs/routing.md#mid-stream-failover.
"""

from __future__ import annotations

from tollgate.gateway.v1 import gateway_pb2 as pb

# Why an answer cannot be continued (the `result` label of tollgate_stream_resumes_total is "not_continuable").
TOOL_CALL = "a tool call was begun"
REASONING = "reasoning or a refusal was begun"
FINISHED = "the answer was finished"
CHOICES = "more than one choice was asked for"


class Transcript:
    """What the caller has of one streamed answer, and the identity its chunks carry."""

    __slots__ = ("_continuing", "_created", "_id", "_model", "_text", "blocked", "cut", "params")

    def __init__(self, params: pb.ChatCompletionParams) -> None:
        self.params = params  # the request as the caller sent it
        self._text: list[str] = []
        self._id, self._created, self._model = "", 0, ""
        self._continuing = False
        self.blocked = CHOICES if params.n > 1 else ""  # why the answer cannot be continued; empty: it can
        self.cut: list[tuple[str, str]] = []  # (backend, model) of every target that failed in this answer

    @property
    def prefix(self) -> str:
        """The text the caller has of the answer."""
        return "".join(self._text)

    def continuing(self) -> None:
        """The chunks from now on are another target's continuation."""
        self._continuing = True

    def take(self, chunk: pb.StreamChatCompletionResponse) -> bool:
        """Note what `chunk` gives the caller; a continuation's is made to look like the first target's. False when
        it gives nothing (a continuation's opening role delta): the caller drops it."""
        if self._continuing:
            chunk.id, chunk.created, chunk.model = self._id, self._created, self._model
        elif not self._id:
            self._id, self._created, self._model = chunk.id, chunk.created, chunk.model
        said = False
        for choice in chunk.choices:
            delta = choice.delta
            if self._continuing:
                delta.role = pb.ROLE_UNSPECIFIED
            if delta.content:
                self._text.append(delta.content)
                said = True
            if delta.tool_calls:
                self.blocked, said = TOOL_CALL, True
            if delta.HasField("reasoning_content") or delta.HasField("refusal") or delta.HasField("redacted_thinking"):
                self.blocked, said = REASONING, True
            if choice.finish_reason:
                self.blocked, said = FINISHED, True
            if choice.index:
                self.blocked = CHOICES
        return said or not self._continuing or chunk.HasField("usage") or not chunk.choices
