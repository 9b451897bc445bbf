"""The Responses API in the engine: stored conversations, and the two ways a response is made.

- A model whose first target is a backend that serves the Responses API itself (OpenAI, Azure) is asked with
  the Responses API, unchanged but for the conversation, which the gateway keeps: the backend gets the whole input
  (`previous_response_id` expanded) with `store: false`. The call takes the engine's own steps (auth, model access,
  limits, routing, failover with health verdicts, metering); a later target that does not serve the Responses API
  is asked through chat, translated (`responses_chat`, `responses_events`).
- Any other model goes through the engine's chat flow, translated, so everything chat has (the response cache, route
  rules, usage records with cost) applies to it exactly as to a chat call.

Stored responses belong to the key that made them: another key (or the anonymous caller) is told 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

from gateway.call import CallContext
from gateway.engine.record import CallRecord
from gateway.engine.responses_chat import chat_params, chat_usage, fill_from_completion
from gateway.engine.responses_events import ChunkEvents
from gateway.engine.retry import Outcome, open_stream
from gateway.engine.router import Plan
from gateway.errors import GatewayError, NotFoundError
from gateway.providers.base import Provider, ResponsesProvider
from gateway.response_store import ResponseStore
from gateway.validation import bad
from gateway.validation_responses import DEFAULT_PAGE, check_page, check_response_id, validate_responses
from tollgate.auth.v1 import auth_pb2
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb

if TYPE_CHECKING:
    from gateway.engine.core import EngineCore

Event = rpb.StreamResponseResponse
Events = AsyncGenerator[Event, None]

log = logging.getLogger("tollgate.engine")

OPERATION = "responses"  # the usage records' and metrics' operation
_TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))
_KEPT = frozenset(("completed", "incomplete"))  # a failed response is not a conversation to continue


class ResponsesFlow:
    """The Responses API over one engine and one response store."""

    def __init__(self, core: EngineCore, store: ResponseStore) -> None:
        self._core = core
        self._store = store

    async def create(self, params: rpb.ResponseParams, ctx: CallContext) -> rpb.Response:
        """A whole response; kept for later unless the request says `store: false`."""
        validate_responses(params)
        owner = await self._owner(ctx, params.model)
        history = await self._history(params, owner)
        response = _new_response(params)
        if self._native(params.model):
            await self._native_whole(params, history, response, ctx)
        else:
            chat = chat_params(params, history, stream=False)
            fill_from_completion(response, await self._core.create_chat_completion(chat, ctx, operation=OPERATION))
        await self._keep(params, owner, history, response)
        return response

    async def stream(self, params: rpb.ResponseParams, ctx: CallContext) -> Events:
        """The response's events; errors before the first are raised from the first `anext`."""
        validate_responses(params)
        owner = await self._owner(ctx, params.model)
        history = await self._history(params, owner)
        response = _new_response(params)
        if self._native(params.model):
            events = self._native_events(params, history, response, ctx)
        else:
            events = self._chat_events(params, history, response, ctx)
        async with aclosing(events):
            async for event in events:
                if event.type in _TERMINAL:  # stored before the client has it: it may fetch or continue it at once
                    await self._keep(params, owner, history, response)
                yield event

    async def get(self, response_id: str, ctx: CallContext) -> rpb.Response:
        """A stored response of the caller's."""
        check_response_id(response_id, "response_id")
        return (await self._load(response_id, await self._owner(ctx, ""), "response_id")).response

    async def delete(self, response_id: str, ctx: CallContext) -> rpb.DeleteResponseResponse:
        """Forget a stored response of the caller's."""
        check_response_id(response_id, "response_id")
        await self._load(response_id, await self._owner(ctx, ""), "response_id")
        await self._store.delete(response_id)
        return rpb.DeleteResponseResponse(id=response_id, deleted=True)

    async def input_items(
        self, request: rpb.ListResponseInputItemsRequest, ctx: CallContext
    ) -> rpb.ListResponseInputItemsResponse:
        """A page of the items a stored response of the caller's answered (its whole conversation's input)."""
        check_page(request)
        stored = await self._load(request.response_id, await self._owner(ctx, ""), "response_id")
        items = [_listed(item, request.response_id, i) for i, item in enumerate(stored.input)]
        if request.order != "asc":
            items.reverse()
        if request.after:
            at = next((i for i, item in enumerate(items) if item.id == request.after), None)
            if at is None:
                raise bad("after", f"no input item {request.after!r} in this response")
            items = items[at + 1 :]
        limit = request.limit or DEFAULT_PAGE
        return rpb.ListResponseInputItemsResponse(data=items[:limit], has_more=len(items) > limit)

    # ------------------------------------------------------------------------------------------------ the store

    async def _owner(self, ctx: CallContext, model: str) -> str:
        """Whose the call's responses are: the key's id from the auth server; without one (`auth: none`), a digest
        of the key; without a key, the anonymous caller's ("")."""
        # Stored responses are read with the rights of a chat call (the model is empty for a stored one).
        principal = (await self._core._auth.check(ctx, model, auth_pb2.OPERATION_CHAT)).principal
        if principal.key_id:
            return "key:" + principal.key_id
        if ctx.api_key is not None:
            return "sha256:" + hashlib.sha256(ctx.api_key.reveal().encode()).hexdigest()
        return ""

    async def _load(self, response_id: str, owner: str, param: str) -> rpb.StoredResponse:
        stored = await self._store.get(response_id)
        if stored is None or stored.owner != owner:  # another key's is as unknown as one never made
            raise NotFoundError(f"Response with id '{response_id}' not found.", param=param, code="response_not_found")
        return stored

    async def _history(self, params: rpb.ResponseParams, owner: str) -> list[rpb.ResponseItem]:
        """The conversation before this request: the previous response's input, then its output."""
        if not params.HasField("previous_response_id"):
            return []
        stored = await self._load(params.previous_response_id, owner, "previous_response_id")
        return [*stored.input, *stored.response.output]

    async def _keep(
        self, params: rpb.ResponseParams, owner: str, history: Sequence[rpb.ResponseItem], response: rpb.Response
    ) -> None:
        if (params.HasField("store") and not params.store) or response.status not in _KEPT:
            return
        stored = rpb.StoredResponse(owner=owner, response=response, input=[*history, *_input_items(params)])
        try:
            await self._store.put(response.id, stored)
        except GatewayError as exc:  # the answer stands; it just cannot be continued or fetched later
            log.warning("response %s answered but not stored: %s", response.id, exc.message)

    # ------------------------------------------------------------------------------------------------ the paths

    def _native(self, model: str) -> bool:
        """Whether the model's first target serves the Responses API itself."""
        core = self._core
        if not core._router.knows(model):
            return False  # the chat flow tells the caller, in the order chat does (auth, access, then 404)
        try:
            attempts = core._router.plan(model)
        except GatewayError:
            return False
        return bool(attempts) and isinstance(core._providers[attempts[0].target.backend], ResponsesProvider)

    async def _chat_events(
        self, params: rpb.ResponseParams, history: Sequence[rpb.ResponseItem], response: rpb.Response, ctx: CallContext
    ) -> Events:
        """The chat flow's chunks as Responses events."""
        chat = chat_params(params, history, stream=True)
        events = ChunkEvents(response)
        async with aclosing(self._core.stream_chat_completion(chat, ctx, operation=OPERATION)) as chunks:
            first = await anext(chunks)  # a failure before the first chunk is the caller's status
            for event in (*events.opening(), *events.feed(first)):
                yield event
            async for chunk in chunks:
                for event in events.feed(chunk):
                    yield event
        for event in events.closing():
            yield event

    async def _plan(self, call: CallRecord, prompt: pb.ChatCompletionParams) -> Plan:
        """The engine's steps before the attempts: auth, model access and limits, then the route."""
        core = self._core
        call.params = prompt  # the prompt as chat: the limits' estimate, rules that read it, a cut stream's usage
        await core._admit(call, auth_pb2.OPERATION_CHAT, lambda: core._chat_estimate(prompt))
        return core._route(call, await core._decide(call, prompt) if core._router.routes.reads_prompts else None)

    async def _native_whole(
        self, params: rpb.ResponseParams, history: Sequence[rpb.ResponseItem], response: rpb.Response, ctx: CallContext
    ) -> None:
        """A whole response from a Responses backend (a chat target's, translated, on failover) into `response`."""
        core = self._core
        upstream = _upstream_params(params, history)

        async def attempt(provider: Provider, model: str) -> rpb.Response:
            if isinstance(provider, ResponsesProvider):
                return await provider.respond(model, upstream)
            answer = rpb.Response()
            fill_from_completion(answer, await provider.complete(model, chat_params(params, history, stream=False)))
            return answer

        with core._meter.call(ctx, OPERATION, params.model) as call:
            plan = await self._plan(call, chat_params(params, history, stream=False, strict=False))
            _adopt(await core._first_success(plan, call, attempt), response, call)

    async def _native_events(
        self, params: rpb.ResponseParams, history: Sequence[rpb.ResponseItem], response: rpb.Response, ctx: CallContext
    ) -> Events:
        """A Responses backend's events (a chat target's, translated, on failover), with the engine's steps."""
        core = self._core
        upstream = _upstream_params(params, history)

        def attempt(provider: Provider, model: str) -> Events:
            if isinstance(provider, ResponsesProvider):
                return provider.respond_stream(model, upstream)
            return _translated(provider.stream(model, chat_params(params, history, stream=True)), response)

        with core._meter.call(ctx, OPERATION, params.model) as call:
            call.stream = True
            plan = await self._plan(call, chat_params(params, history, stream=False, strict=False))
            outcome = Outcome(model=plan.model, hold=True)
            first, rest = await core._first_success(plan, call, lambda p, m: open_stream(attempt(p, m)), outcome)
            failure: BaseException | None = None
            try:
                async with aclosing(rest):
                    _account(first, call, response)
                    yield first
                    async for event in rest:
                        _account(event, call, response)
                        yield event
            except (GeneratorExit, asyncio.CancelledError):
                raise  # the caller went away from a target that was answering
            except BaseException as exc:  # a failure after the first event: the target's
                failure = exc
                raise
            finally:
                if outcome.open is not None:
                    outcome.open.settle(failure)


def _new_response(params: rpb.ResponseParams) -> rpb.Response:
    """A response with the gateway's id, echoing the request (all but its input)."""
    response = rpb.Response(id="resp_" + os.urandom(24).hex(), created_at=int(time.time()), status="in_progress")
    response.request.CopyFrom(params)
    for name in ("model", "input", "input_text"):
        response.request.ClearField(name)
    return response


_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def _listed(item: rpb.ResponseItem, response_id: str, index: int) -> rpb.ResponseItem:
    """An input item as listed: with an id (a stable one of the gateway's when the client's had none), and a
    message's text as a text part, as OpenAI lists them."""
    out = rpb.ResponseItem()
    out.CopyFrom(item)
    if not out.id:
        digest = hashlib.sha256(f"{response_id}\0{index}".encode()).hexdigest()[:32]
        out.id = f"{_ID_PREFIXES.get(item.type, 'item')}_{digest}"
    if out.HasField("content_text"):
        kind = "output_text" if out.role == "assistant" else "input_text"
        out.content.add(type=kind, text=out.content_text)
        out.ClearField("content_text")
    return out


def _input_items(params: rpb.ResponseParams) -> list[rpb.ResponseItem]:
    if params.HasField("input_text"):
        return [rpb.ResponseItem(type="message", role="user", content_text=params.input_text)]
    return list(params.input)


def _replayable(item: rpb.ResponseItem) -> bool:
    """Whether a stored item can be sent back to a stateless Responses backend: a reasoning item only with its
    encrypted content (the backend kept nothing else to find it by)."""
    return item.type != "reasoning" or "encrypted_content" in item.extra_json


def _upstream_params(params: rpb.ResponseParams, history: Sequence[rpb.ResponseItem]) -> rpb.ResponseParams:
    """The request a Responses backend gets: the whole conversation, and nothing stored there."""
    out = rpb.ResponseParams()
    out.CopyFrom(params)
    out.ClearField("previous_response_id")
    if history:
        out.ClearField("input_text")
        del out.input[:]
        out.input.extend(item for item in history if _replayable(item))
        out.input.extend(_input_items(params))
    out.store = False
    return out


def _adopt(answer: rpb.Response, response: rpb.Response, call: CallRecord) -> None:
    """`response` becomes the backend's `answer` with the gateway's id and the client's request; its usage the
    call's."""
    answer.id, answer.created_at = response.id, response.created_at
    answer.request.CopyFrom(response.request)
    response.CopyFrom(answer)
    if answer.HasField("usage"):
        call.usage = chat_usage(answer.usage)


def _account(event: Event, call: CallRecord, response: rpb.Response) -> None:
    """Give a backend's event the gateway's response id and the client's request; the event that ends the response
    is the whole response, and its usage the call's."""
    if not call.chunks:
        call.first_chunk_at = time.perf_counter()
    if event.type.endswith(".delta") or not call.chunks:
        call.chunks += 1  # a delta is about one token, should the stream be cut short
    if not event.HasField("response"):
        return
    answer = event.response
    if event.type in _TERMINAL:
        _adopt(answer, response, call)
        answer.CopyFrom(response)
    else:
        answer.id, answer.created_at = response.id, response.created_at
        answer.request.CopyFrom(response.request)


async def _translated(chunks: AsyncGenerator[pb.StreamChatCompletionResponse, None], response: rpb.Response) -> Events:
    """A chat target's chunks as Responses events (its response is completed by `_account`)."""
    events = ChunkEvents(rpb.Response(id=response.id, created_at=response.created_at))
    first = True
    async with aclosing(chunks):
        async for chunk in chunks:
            if first:
                for event in events.opening():
                    yield event
                first = False
            for event in events.feed(chunk):
                yield event
    for event in events.closing():
        yield event
