"""OpenAI's Responses API over HTTP: `POST /v1/responses` (JSON, or SSE with the Responses event types),
`GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`, translated to the engine's Responses calls.

Errors have OpenAI's error shape (the Responses API shares it). A stream is framed as OpenAI frames it, an `event:`
line with the event's type before each `data:` line, and no `[DONE]`; a failure after the first event is an `error`
event, the last of the stream.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.call import CallContext, Engine
from gateway.codec.json_fields import bad
from gateway.codec.responses_items import encode_item
from gateway.codec.responses_request import decode_response_params
from gateway.codec.responses_response import encode_event, encode_response
from gateway.errors import GatewayError
from gateway.frontdoor.handling import guarded, json_response, read_json, stream_events
from gateway.frontdoor.openai_http import error_response
from tollgate.gateway.v1 import responses_pb2 as rpb


class _EventEncoder:
    """The Responses stream's framing: `event: <type>` and `data: <event>` for each event."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0  # the sequence number an error event takes

    def start(self, event: rpb.StreamResponseResponse) -> bytes:
        return self.feed(event)

    def feed(self, event: rpb.StreamResponseResponse) -> bytes:
        self._next = event.sequence_number + 1
        return b"event: " + event.type.encode() + b"\ndata: " + orjson.dumps(encode_event(event)) + b"\n\n"

    def finish(self) -> bytes:
        return b""

    def fail(self, error: GatewayError, ctx: CallContext) -> bytes:
        body = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "sequence_number": self._next,
        }
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


class ResponsesFrontDoor:
    """The routes of the Responses API, over an `Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def routes(self) -> list[web.RouteDef]:
        """The Responses paths, with and without the `/v1` prefix."""
        table = [
            ("POST", "/responses", self.create),
            ("GET", "/responses/{response_id}", self.retrieve),
            ("DELETE", "/responses/{response_id}", self.delete),
            ("GET", "/responses/{response_id}/input_items", self.input_items),
        ]
        return [
            web.route(method, prefix + path, guarded(handler, error_response))
            for method, path, handler in table
            for prefix in ("/v1", "")
        ]

    async def create(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`POST /v1/responses`, streaming or not."""
        params, stream = decode_response_params(await read_json(request))
        if stream:
            events = self._engine.stream_response(params, ctx)
            return await stream_events(request, events, ctx, _EventEncoder())
        return json_response(encode_response(await self._engine.create_response(params, ctx)), ctx)

    async def retrieve(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`GET /v1/responses/{id}`: a stored response of the caller's."""
        response = await self._engine.get_response(request.match_info["response_id"], ctx)
        return json_response(encode_response(response), ctx)

    async def delete(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`DELETE /v1/responses/{id}`."""
        deleted = await self._engine.delete_response(request.match_info["response_id"], ctx)
        return json_response({"id": deleted.id, "object": "response.deleted", "deleted": deleted.deleted}, ctx)

    async def input_items(self, request: web.Request, ctx: CallContext) -> web.StreamResponse:
        """`GET /v1/responses/{id}/input_items?after=&limit=&order=`: a page of a stored response's input items."""
        query = request.query
        page = rpb.ListResponseInputItemsRequest(
            response_id=request.match_info["response_id"],
            after=query.get("after", ""),
            limit=_limit(query.get("limit")),
            order=query.get("order", ""),
        )
        listed = await self._engine.list_response_input_items(page, ctx)
        data = [encode_item(item) for item in listed.data]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        body = {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": listed.has_more}
        return json_response(body, ctx)


def _limit(value: str | None) -> int:
    """The `limit` query parameter: an integer (its range is the engine's rule), absent: 0."""
    if value is None:
        return 0
    try:
        limit = int(value)
    except ValueError:
        raise bad("limit", f"expected an integer, got {value[:32]!r}") from None
    if not -(2**63) <= limit < 2**63:
        raise bad("limit", "must be between 1 and 100")
    return limit
