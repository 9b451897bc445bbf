"""OpenAI itself (`provider: openai`): the OpenAI-compatible adapter, plus the Responses API called as it is.

A Responses request goes to `POST {base_url}/responses` unchanged (nothing is lost: built-in tools, reasoning items,
`include`, every newer field), with `store: false`: the gateway keeps the conversation itself, so
`previous_response_id` works across backends and replicas. Shapes from OpenAI's API reference
(https://platform.openai.com/docs/api-reference/responses and /responses-streaming).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import orjson

from gateway.codec.responses_request import encode_response_params
from gateway.codec.responses_response import decode_event, decode_response
from gateway.config import BackendConfig
from gateway.errors import InvalidRequestError, UpstreamError
from gateway.providers.http import MALFORMED, json_body, sse_data
from gateway.providers.openai_compat import OPENAI_BASE_URL, OpenAICompatibleProvider, upstream_error
from tollgate.gateway.v1 import responses_pb2 as rpb

# The events that end a response's stream.
TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))
_DONE = b"[DONE]"


class OpenAIProvider(OpenAICompatibleProvider):
    """OpenAI's API: chat completions and embeddings as the compatible adapter calls them, and the Responses API
    (at `responses_url`: Azure's differs)."""

    def __init__(
        self, backend: BackendConfig, headers: Mapping[str, str] | None = None, responses_url: str = ""
    ) -> None:
        super().__init__(backend, headers)
        self._responses_url = responses_url or f"{backend.base_url or OPENAI_BASE_URL}/responses"

    async def respond(self, model: str, params: rpb.ResponseParams) -> rpb.Response:
        """The backend's whole response, from the non-streaming call (one JSON body: far cheaper to read than the
        events of the same answer)."""
        body = json_body(encode_response_params(params, model, stream=False))
        raw = await self._post(self._responses_url, body)
        try:
            return decode_response(orjson.loads(raw))
        except (*MALFORMED, InvalidRequestError) as exc:
            raise self._malformed(exc) from exc

    async def respond_stream(
        self, model: str, params: rpb.ResponseParams
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        """The backend's events for `params`, up to the one that ends the response."""
        body = json_body(encode_response_params(params, model, stream=True))
        with self._translate_errors():
            async with self._client().post(self._responses_url, data=body) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                async for payload in sse_data(resp):
                    if payload == _DONE:
                        break
                    try:
                        raw = orjson.loads(payload)
                        if raw.get("type") == "error":
                            raise _error_event(raw, self.backend.name)
                        event = decode_event(raw)
                    except (*MALFORMED, InvalidRequestError) as exc:
                        raise self._malformed(exc) from exc
                    yield event
                    if event.type in TERMINAL:
                        return
        raise UpstreamError(f"backend '{self.backend.name}' closed the stream before the response ended")


def _error_event(event: dict[str, object], backend: str) -> UpstreamError:
    """An `error` event in the stream: the backend's failure after the first byte."""
    error = {"message": event.get("message"), "code": event.get("code"), "param": event.get("param")}
    failure = upstream_error(502, {"error": error}, None, backend)
    return failure if isinstance(failure, UpstreamError) else UpstreamError(failure.message)
