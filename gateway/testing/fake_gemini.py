"""A fake Google Gemini API server, for end-to-end tests of the `gemini` provider.

It speaks the documented shapes (https://ai.google.dev/api/generate-content, https://ai.google.dev/api/embeddings,
errors as https://ai.google.dev/gemini-api/docs/troubleshooting lists them) and answers deterministically:

- a request with function declarations whose last turn is not a function response gets a call of the first declared
  function, its string parameters filled with the last user text, carrying a thought signature;
- a request whose last turn holds function responses is checked the way Gemini checks it: every function call of the
  model's last turn that got a signature must bring it back (a 400 INVALID_ARGUMENT otherwise); the answer then
  quotes the responses;
- anything else gets "Gemini says: <last user text>", streamed one word per event.

It records every request, checks the `x-goog-api-key` header when given a key, and can be told to fail the next
requests with a documented status. It shares no code with the adapter, so a bug cannot hide behind its twin.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.testing.loopback import LoopbackServer

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
MODEL_VERSION = "gemini-fake-001"


@dataclass(frozen=True, slots=True)
class GeminiRequest:
    """One request as the fake received it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeGemini(LoopbackServer):
    """An in-process Gemini API; `base_url` (…/v1beta) is set while it runs."""

    URL_PATH = "/v1beta"

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[GeminiRequest] = []
        self.fail_next: list[int] = []  # HTTP statuses to answer the next requests with, in order
        self.signatures: set[str] = set()  # every thought signature handed out

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeGemini]:
        """Serve on a loopback port for the duration of the block."""
        async with self:
            yield self

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1beta/models/{call}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            GeminiRequest(request.path, dict(request.query), {k.lower(): v for k, v in request.headers.items()}, body)
        )
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return _error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        if self.fail_next:
            return _error(self.fail_next.pop(0), "injected fault")
        model, _, method = request.match_info["call"].partition(":")
        if method == "batchEmbedContents":
            return web.json_response({"embeddings": [_embedding(r) for r in body["requests"]]})
        if method == "predict":
            return _predict(body)
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"method {method!r} not found for model {model!r}")
        return await self._generate(request, body, stream=method == "streamGenerateContent")

    async def _generate(self, request: web.Request, body: dict[str, Any], *, stream: bool) -> web.StreamResponse:
        answer = self._answer(body)
        if isinstance(answer, web.Response):
            return answer
        if stream and request.query.get("alt") == "sse":
            return await self._stream(request, body, answer)
        return web.json_response(_response(answer, finish=True, usage=_usage(body, answer)))

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]] | web.Response:
        """The parts of the answer, or an error answer for a request Gemini would refuse."""
        contents = body["contents"]
        last = contents[-1]["parts"]
        if any("functionResponse" in p for p in last):
            calls = contents[-2]["parts"] if len(contents) > 1 else []
            issued = [p for p in calls if "functionCall" in p]
            if issued and issued[0].get("thoughtSignature") not in self.signatures:
                return _error(400, "Function call is missing a thought_signature in functionCall parts.")
            responses = [p["functionResponse"] for p in last]
            return [{"text": "Results: " + json.dumps([r["response"] for r in responses], separators=(",", ":"))}]
        text = " ".join(p.get("text", "") for p in last)
        declarations = [d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]
        if declarations:
            declaration = declarations[0]
            schema = declaration.get("parametersJsonSchema") or declaration.get("parameters") or {}
            properties = schema.get("properties") or {} if isinstance(schema, dict) else None
            if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
                # As Gemini refuses a schema that is not one.
                return _error(400, "Invalid JSON payload received. Invalid function parameters schema.")
            args = {k: text for k, v in properties.items() if v.get("type") == "string"}
            signature = f"sig-{len(self.signatures) + 1}"
            self.signatures.add(signature)
            return [{"functionCall": {"name": declaration["name"], "args": args}, "thoughtSignature": signature}]
        return [{"text": word} for word in _words(f"Gemini says: {text}")]

    async def _stream(
        self, request: web.Request, body: dict[str, Any], parts: list[dict[str, Any]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            event = _response([part], finish=last, usage=_usage(body, parts[: i + 1]))
            await response.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
        await response.write_eof()
        return response


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def _response(parts: list[dict[str, Any]], *, finish: bool, usage: dict[str, int]) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL_VERSION, "responseId": "fake-1"}


def _usage(body: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, int]:
    prompt = sum(len(json.dumps(c)) // 16 + 1 for c in body["contents"])
    output = len(parts)
    return {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output}


def _embedding(request: dict[str, Any]) -> dict[str, Any]:
    text = " ".join(p.get("text", "") for p in request["content"]["parts"])
    size = int(request.get("outputDimensionality") or 4)
    return {"values": [((ord(text[i % len(text)]) if text else 0) % 17) / 16 for i in range(size)]}


PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
_ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")


def _predict(body: dict[str, Any]) -> web.Response:
    """Imagen's `:predict`: one image per sample, as base64 PNG (https://ai.google.dev/gemini-api/docs/imagen)."""
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0].get("prompt"), str):
        return _error(400, "instances must hold one instance with a prompt")
    parameters = body.get("parameters") or {}
    count = parameters.get("sampleCount", 4)
    if not isinstance(count, int) or not 1 <= count <= 4:
        return _error(400, "sampleCount must be between 1 and 4")
    if parameters.get("aspectRatio", "1:1") not in _ASPECT_RATIOS:
        return _error(400, "aspectRatio is not supported")
    return web.json_response({"predictions": [{"bytesBase64Encoded": PNG_1X1, "mimeType": "image/png"}] * count})


def _error(status: int, message: str, reason: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if reason is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "googleapis.com"}]  # fmt: skip
    if status == 429:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    return web.json_response({"error": error}, status=status)
