"""Google Gemini API responses → `tollgate.gateway.v1` chunks, one GenerateContentResponse at a time.

Shapes from https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse (candidates, promptFeedback,
usageMetadata, FinishReason, BlockReason) and https://ai.google.dev/api/embeddings#EmbedContentResponse.

A streamed answer is a series of GenerateContentResponses; a whole answer is one. Both go through `GeminiTranslator`,
so there is one code path, and the non-streaming answer is the fold of its chunks.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

import orjson

from gateway.providers.gemini_request import EXTRA_CONTENT
from tollgate.gateway.v1 import gateway_pb2 as pb

_FILTERED = frozenset(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
     "IMAGE_RECITATION")
)  # fmt: skip


def finish_reason(reason: str, made_calls: bool) -> pb.FinishReason.ValueType:
    """Gemini's FinishReason as OpenAI's; every reason Gemini adds later still ends the choice (as `stop`)."""
    if reason == "MAX_TOKENS":
        return pb.FINISH_REASON_LENGTH
    if reason in _FILTERED:
        return pb.FINISH_REASON_CONTENT_FILTER
    return pb.FINISH_REASON_TOOL_CALLS if made_calls else pb.FINISH_REASON_STOP


def decode_usage(raw: dict[str, Any]) -> pb.Usage:
    """usageMetadata; thinking tokens count as completion tokens, as OpenAI counts reasoning tokens."""
    prompt = int(raw.get("promptTokenCount") or 0)
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    completion = int(raw.get("candidatesTokenCount") or 0) + thoughts
    return pb.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(raw.get("totalTokenCount") or prompt + completion),
        cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


class _Candidate:
    __slots__ = ("calls", "finished")

    def __init__(self) -> None:
        self.calls = 0
        self.finished = False


class GeminiTranslator:
    """Turns each GenerateContentResponse of one answer into an OpenAI-shaped chunk."""

    def __init__(self, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.id = ""
        self.usage: pb.Usage | None = None
        self._candidates: dict[int, _Candidate] = {}

    def chunk(self, raw: dict[str, Any]) -> pb.StreamChatCompletionResponse:
        """The chunk for one response; its usage is kept for `usage_chunk`, since Gemini repeats it cumulatively."""
        if not self.id:
            self.id = str(raw.get("responseId") or "")
            self.model = str(raw.get("modelVersion") or self.model)
        out = pb.StreamChatCompletionResponse(id=self.id, created=self.created, model=self.model)
        if usage := raw.get("usageMetadata"):
            self.usage = decode_usage(usage)
        candidates = raw.get("candidates") or ()
        for i, candidate in enumerate(candidates):
            self._candidate(candidate, candidate.get("index", i), out.choices.add())
        if not candidates and (raw.get("promptFeedback") or {}).get("blockReason"):
            # The prompt itself was blocked: an answer that says so (with the prompt's usage), not an error.
            blocked = out.choices.add(index=0, finish_reason=pb.FINISH_REASON_CONTENT_FILTER)
            blocked.delta.role = pb.ROLE_ASSISTANT
            blocked.delta.content = ""
            self._candidates[0] = _Candidate()
            self._candidates[0].finished = True
        return out

    def _candidate(self, raw: dict[str, Any], index: int, out: pb.ChunkChoice) -> None:
        out.index = index
        state = self._candidates.get(index)
        if state is None:
            state = self._candidates[index] = _Candidate()
            out.delta.role = pb.ROLE_ASSISTANT
        text: list[str] = []
        thoughts: list[str] = []
        for part in (raw.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                self._call(part, index, state, out.delta.tool_calls.add())
            elif "text" in part:
                (thoughts if part.get("thought") else text).append(part["text"])
            # executableCode, inlineData and other part kinds have no OpenAI equivalent (documented as lossy).
        if text:
            out.delta.content = "".join(text)
        if thoughts:
            out.delta.reasoning_content = "".join(thoughts)
        if reason := raw.get("finishReason"):
            out.finish_reason = finish_reason(reason, state.calls > 0)
            state.finished = True
        out.delta.SetInParent()

    def _call(self, part: dict[str, Any], index: int, state: _Candidate, out: pb.ToolCallDelta) -> None:
        call = part["functionCall"]
        name, arguments = str(call["name"]), orjson.dumps(call.get("args") or {}).decode()
        out.index = state.calls
        out.id = str(call.get("id") or self._call_id(index, state.calls, name, arguments))
        out.type = "function"
        out.function.name = name
        out.function.arguments = arguments  # Gemini sends a call whole, so its arguments come in one piece
        if signature := part.get("thoughtSignature"):
            out.extra_json = orjson.dumps({EXTRA_CONTENT: {"google": {"thought_signature": signature}}}).decode()
        state.calls += 1

    def _call_id(self, candidate: int, n: int, name: str, arguments: str) -> str:
        # Gemini names no calls; a stable id, unique within the answer, which the next turn maps back to the name.
        digest = hashlib.sha256(f"{self.id}\0{candidate}\0{n}\0{name}\0{arguments}".encode()).hexdigest()
        return f"call_{digest[:24]}"

    def unfinished(self) -> bool:
        """Whether the answer stopped before every candidate it started had finished (or before any started)."""
        return not self._candidates or not all(c.finished for c in self._candidates.values())

    def usage_chunk(self) -> pb.StreamChatCompletionResponse | None:
        """The last chunk, with no choices and the usage of the whole answer, when Gemini reported any."""
        if self.usage is None:
            return None
        return pb.StreamChatCompletionResponse(id=self.id, created=self.created, model=self.model, usage=self.usage)


def decode_embeddings(raw: dict[str, Any], model: str, encoding_format: str) -> pb.CreateEmbeddingsResponse:
    """A batchEmbedContents answer; Gemini reports no token counts, so usage stays zero."""
    out = pb.CreateEmbeddingsResponse(model=model)
    for i, item in enumerate(raw["embeddings"]):
        values = [float(v) for v in item["values"]]
        embedding = out.data.add(index=i)
        if encoding_format == "base64":
            # What OpenAI's base64 format is: little-endian float32, base64-encoded.
            embedding.base64 = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        else:
            embedding.values.extend(values)
    return out
