"""A generated gRPC client calling the Responses RPCs of `GatewayService` directly: what the HTTP door gets, the
gRPC client gets too (the engine serves both; errors are statuses with the same codes and params)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import RunningGateway
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc
from tollgate.gateway.v1 import responses_pb2 as rpb

REPLY = "This is a reply from the fake OpenAI "
ALICE = (("authorization", "Bearer sk-alice"),)
MALLORY = (("authorization", "Bearer sk-mallory"),)
TIMEOUT = 10.0


@pytest.fixture
async def stub(gateway: RunningGateway) -> AsyncIterator[pb_grpc.GatewayServiceStub]:
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        yield pb_grpc.GatewayServiceStub(channel)


def trailing(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {key: value for key, value in error.trailing_metadata() or ()}  # type: ignore[misc]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "demo"])
async def test_create_get_delete(stub: pb_grpc.GatewayServiceStub, model: str) -> None:
    params = rpb.ResponseParams(model=model, input_text="hello there", instructions="Be brief.")
    made = (
        await stub.CreateResponse(rpb.CreateResponseRequest(params=params), metadata=ALICE, timeout=TIMEOUT)
    ).response
    assert made.id.startswith("resp_") and made.status == "completed"
    assert made.output[-1].type == "message" and made.output[-1].content[0].type == "output_text"
    assert made.usage.output_tokens > 0 and made.request.instructions == "Be brief."
    got = await stub.GetResponse(rpb.GetResponseRequest(response_id=made.id), metadata=ALICE, timeout=TIMEOUT)
    assert got.response == made
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetResponse(rpb.GetResponseRequest(response_id=made.id), metadata=MALLORY, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    deleted = await stub.DeleteResponse(rpb.DeleteResponseRequest(response_id=made.id), metadata=ALICE)
    assert (deleted.id, deleted.deleted) == (made.id, True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetResponse(rpb.GetResponseRequest(response_id=made.id), metadata=ALICE, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_and_continue(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    params = rpb.ResponseParams(model="gpt-4o-mini", input_text="hello there")
    call = stub.StreamResponse(rpb.StreamResponseRequest(params=params), metadata=ALICE, timeout=TIMEOUT)
    events = [event async for event in call]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY
    first = events[-1].response
    tool_params = rpb.ResponseParams(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input=[rpb.ResponseItem(type="message", role="user", content_text="and again")],
        tools=[rpb.ResponseTool(type="function", name="lookup", parameters_json='{"type":"object"}')],
    )
    second = await stub.CreateResponse(rpb.CreateResponseRequest(params=tool_params), metadata=ALICE)
    call_item = second.response.output[-1]
    assert (call_item.type, call_item.name, call_item.arguments) == ("function_call", "lookup", '{"echo": "and again"}')
    sent = upstream.requests[-1].json
    assert [item["role"] for item in sent["input"]] == ["user", "assistant", "user"]


async def test_bad_input_is_invalid_argument_naming_the_field(stub: pb_grpc.GatewayServiceStub) -> None:
    cases = [
        (rpb.ResponseParams(model="gpt-4o-mini"), "input"),
        (rpb.ResponseParams(model="gpt-4o-mini", input_text="hi", top_p=1.5), "top_p"),
        (rpb.ResponseParams(model="demo", input=[rpb.ResponseItem(type="message", role="user")]), "input[0].content"),
        (rpb.ResponseParams(model="demo", input_text="hi", extra_json="[1]"), "extra_json"),
        (
            rpb.ResponseParams(model="demo", input_text="hi", tools=[rpb.ResponseTool(type="file_search")]),
            "tools[0].type",
        ),
    ]
    for params, param in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateResponse(rpb.CreateResponseRequest(params=params), metadata=ALICE, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, param
        assert trailing(caught.value)["tollgate-error-param"] == param
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetResponse(rpb.GetResponseRequest(response_id=""), metadata=ALICE, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_input_items(stub: pb_grpc.GatewayServiceStub, gateway: RunningGateway) -> None:
    params = rpb.ResponseParams(model="demo", input_text="hello there")
    made = (await stub.CreateResponse(rpb.CreateResponseRequest(params=params), metadata=ALICE)).response
    page = await stub.ListResponseInputItems(
        rpb.ListResponseInputItemsRequest(response_id=made.id, order="asc"), metadata=ALICE, timeout=TIMEOUT
    )
    assert [(i.type, i.content[0].text) for i in page.data] == [("message", "hello there")] and not page.has_more
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListResponseInputItems(rpb.ListResponseInputItemsRequest(response_id=made.id, limit=-1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with aiohttp.ClientSession() as session:
        for query in ("limit=abc", "limit=99999999999999999999999", "order=sideways"):
            url = f"{gateway.base_url}/responses/{made.id}/input_items?{query}"
            async with session.get(url, headers={"Authorization": "Bearer sk-alice"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["param"] in ("limit", "order"), query
