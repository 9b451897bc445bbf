"""One validation for both doors: each bad value, sent over HTTP (JSON) and straight to the engine over gRPC (the
generated stub), gets the same answer: 400 / INVALID_ARGUMENT, naming the same field.

The gRPC message is what the codec makes of the JSON body (types only, no value checks), so both doors carry
exactly the same bad value to the engine, which is where `gateway.validation` runs.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest

from gateway.codec.openai_decode import decode_chat_params, decode_embeddings_request
from tests.conftest import RunningGateway
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

KEY_AS_MODEL = "tgk_0123456789abcdef_Zx9-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab"
USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": USER}
    body.update(fields)
    return body


def embed(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": "hello"}
    body.update(fields)
    return body


CHAT_CASES = [
    pytest.param(chat(temperature=5), "temperature", id="temperature-5"),
    pytest.param(chat(temperature=-0.5), "temperature", id="temperature-negative"),
    pytest.param(chat(top_p=3), "top_p", id="top_p-3"),
    pytest.param(chat(n=0), "n", id="n-0"),
    pytest.param(chat(n=1000), "n", id="n-1000"),
    pytest.param(chat(max_tokens=-1), "max_tokens", id="max_tokens-negative"),
    pytest.param(chat(max_tokens=0), "max_tokens", id="max_tokens-0"),
    pytest.param(chat(max_completion_tokens=0), "max_completion_tokens", id="max_completion_tokens-0"),
    pytest.param(chat(presence_penalty=2.5), "presence_penalty", id="presence_penalty"),
    pytest.param(chat(frequency_penalty=-3), "frequency_penalty", id="frequency_penalty"),
    pytest.param(chat(top_logprobs=21), "top_logprobs", id="top_logprobs-21"),
    pytest.param(chat(stop=["a", "b", "c", "d", "e"]), "stop", id="stop-5"),
    pytest.param(chat(logit_bias={"42": 101}), "logit_bias.42", id="logit_bias-101"),
    pytest.param(chat(tool_choice="sometimes"), "tool_choice", id="tool_choice-mode"),
    pytest.param(chat(response_format={"type": "xml"}), "response_format.type", id="response_format-type"),
    pytest.param(chat(user="u" * 257), "user", id="user-too-long"),
    pytest.param(chat(metadata={f"k{i}": "v" for i in range(17)}), "metadata", id="metadata-17-pairs"),
    pytest.param(chat(messages=[]), "messages", id="messages-empty"),
    pytest.param(chat(messages=[{"role": "user"}]), "messages[0].content", id="content-missing"),
    pytest.param(
        chat(messages=[*USER, {"role": "tool", "content": "42"}]), "messages[1].tool_call_id", id="tool-without-id"
    ),
    pytest.param(chat(model=""), "model", id="model-empty"),
    pytest.param(chat(model="m" * 60_000), "model", id="model-60KB"),  # the test gateway takes 64 KiB bodies
    pytest.param(chat(model=KEY_AS_MODEL), "model", id="model-is-a-key"),
]
EMBEDDING_CASES = [
    pytest.param(embed(dimensions=0), "dimensions", id="dimensions-0"),
    pytest.param(embed(encoding_format="hex"), "encoding_format", id="encoding_format"),
    pytest.param(embed(input=[]), "input", id="input-empty"),
    pytest.param(embed(input=["x"] * 2049), "input", id="input-2049"),
    pytest.param(embed(model="sk-ant-api03-" + "q" * 40), "model", id="model-is-a-key"),
]


async def http_error(gateway: RunningGateway, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.base_url}/{path}", json=body, headers={"Authorization": "Bearer any"}) as response,
    ):
        return response.status, (await response.json())["error"]


async def grpc_error(
    call: grpc.aio.UnaryUnaryMultiCallable[Any, Any], request: Any
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, timeout=10)
    trailing = dict(caught.value.trailing_metadata() or ())
    return caught.value.code(), str(trailing.get("tollgate-error-param", "")), caught.value.details() or ""


@pytest.mark.parametrize(("body", "field"), CHAT_CASES)
async def test_chat_bad_values_get_the_same_answer_at_both_doors(
    gateway: RunningGateway, body: dict[str, Any], field: str
) -> None:
    status, error = await http_error(gateway, "chat/completions", body)
    assert (status, error["type"], error["param"]) == (400, "invalid_request_error", field)

    params, _ = decode_chat_params(body)
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        code, param, details = await grpc_error(
            stub.CreateChatCompletion, pb.CreateChatCompletionRequest(params=params)
        )
        assert (code, param) == (grpc.StatusCode.INVALID_ARGUMENT, field)
        assert details == error["message"]
        # The streaming RPC runs the same check before its first chunk.
        stream = stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for text in (error["message"], details):
        assert KEY_AS_MODEL not in text
        assert len(text) < 300  # a huge model name is not echoed either


@pytest.mark.parametrize(("body", "field"), EMBEDDING_CASES)
async def test_embedding_bad_values_get_the_same_answer_at_both_doors(
    gateway: RunningGateway, body: dict[str, Any], field: str
) -> None:
    status, error = await http_error(gateway, "embeddings", body)
    assert (status, error["param"]) == (400, field)
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        code, param, details = await grpc_error(stub.CreateEmbeddings, decode_embeddings_request(body))
    assert (code, param) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert details == error["message"]
    assert "sk-ant-" not in details


async def test_count_tokens_is_validated_too(gateway: RunningGateway) -> None:
    params, _ = decode_chat_params(chat(temperature=9))
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        code, param, _ = await grpc_error(stub.CountTokens, pb.CountTokensRequest(params=params))
    assert (code, param) == (grpc.StatusCode.INVALID_ARGUMENT, "temperature")
