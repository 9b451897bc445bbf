"""A generated gRPC client calling the engine directly: GatewayService, errors as statuses, health and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.errors import GatewayError, RateLimitError
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

SERVICE = "tollgate.gateway.v1.GatewayService"
TIMEOUT = 10.0
REPLY = "This is a reply from the fake OpenAI "  # the fake's deterministic answer in 8 one-word pieces


def params(model: str = "gpt-4o-mini", *, include_usage: bool = False) -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(
        model=model,
        messages=[
            pb.ChatMessage(role=pb.ROLE_SYSTEM, content="Be brief."),
            pb.ChatMessage(role=pb.ROLE_USER, content="hello there"),
        ],
        stream_options=pb.StreamOptions(include_usage=include_usage),
    )


@pytest.fixture
async def channel(gateway: RunningGateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway.grpc_address) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.GatewayServiceStub:
    return pb_grpc.GatewayServiceStub(channel)


def metadata_dict(metadata: object) -> dict[str, str]:
    return {key: value for key, value in metadata or ()}  # type: ignore[attr-defined]


def content_pieces(chunks: list[pb.StreamChatCompletionResponse]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


# ---------------------------------------------------------------------------------------------------- success


async def test_create_chat_completion(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    call = stub.CreateChatCompletion(
        pb.CreateChatCompletionRequest(params=params()),
        metadata=(("x-request-id", "req-grpc-direct-1"),),
        timeout=TIMEOUT,
    )
    response = await call
    assert len(response.choices) == 1
    choice = response.choices[0]
    assert choice.message.role == pb.ROLE_ASSISTANT
    assert choice.message.content == REPLY
    assert choice.finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.completion_tokens == 8
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + 8
    assert response.model == "gpt-4o-mini"

    trailing = metadata_dict(await call.trailing_metadata())
    assert float(trailing["tollgate-upstream-ms"]) > 0
    assert trailing["x-request-id"].startswith("req_")  # the engine's own; the caller's is for correlation only
    assert await call.code() == grpc.StatusCode.OK

    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]


async def test_create_chat_completion_generates_request_id(stub: pb_grpc.GatewayServiceStub) -> None:
    call = stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=params()), timeout=TIMEOUT)
    await call
    trailing = metadata_dict(await call.trailing_metadata())
    assert trailing["x-request-id"], "a request id is made up when the caller sends none"
    assert "tollgate-upstream-ms" in trailing


async def test_stream_without_usage(stub: pb_grpc.GatewayServiceStub) -> None:
    call = stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params()), timeout=TIMEOUT)
    chunks = [chunk async for chunk in call]
    assert await call.code() == grpc.StatusCode.OK
    pieces = content_pieces(chunks)
    assert len(pieces) == 8
    assert "".join(pieces) == REPLY
    assert all(chunk.choices for chunk in chunks), "no usage-only chunk unless asked for"
    assert not any(chunk.HasField("usage") for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == pb.FINISH_REASON_STOP
    initial = metadata_dict(await call.initial_metadata())
    assert float(initial["tollgate-upstream-ms"]) >= 0


async def test_stream_with_usage(stub: pb_grpc.GatewayServiceStub) -> None:
    call = stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params(include_usage=True)), timeout=TIMEOUT)
    chunks = [chunk async for chunk in call]
    assert await call.code() == grpc.StatusCode.OK
    assert len(content_pieces(chunks)) == 8
    last = chunks[-1]
    assert len(last.choices) == 0
    assert last.HasField("usage")
    assert last.usage.completion_tokens == 8
    assert last.usage.total_tokens == last.usage.prompt_tokens + 8
    assert sum(1 for chunk in chunks if not chunk.choices) == 1
    assert chunks[-2].choices[0].finish_reason == pb.FINISH_REASON_STOP


async def test_stream_in_batches_carries_the_same_chunks(stub: pb_grpc.GatewayServiceStub) -> None:
    request = pb.StreamChatCompletionRequest(params=params(include_usage=True))
    one_by_one = [chunk async for chunk in stub.StreamChatCompletion(request, timeout=TIMEOUT)]
    batched = pb.StreamChatCompletionBatchesRequest(params=params(include_usage=True))
    call = stub.StreamChatCompletionBatches(batched, timeout=TIMEOUT)
    messages = [message async for message in call]
    assert await call.code() == grpc.StatusCode.OK
    assert all(message.chunks for message in messages), "never an empty batch"
    chunks = [chunk for message in messages for chunk in message.chunks]
    assert content_pieces(chunks) == content_pieces(one_by_one)
    assert len(chunks) == len(one_by_one)
    assert chunks[-1].HasField("usage") and not chunks[-1].choices
    reply = dict(messages[0].reply_metadata)  # the reply rides in the first message, not as initial metadata
    assert float(reply["tollgate-upstream-ms"]) >= 0
    assert reply["x-request-id"].startswith("req_")
    assert not any(message.reply_metadata for message in messages[1:])


async def test_stream_in_batches_never_holds_a_chunk_back(
    stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI
) -> None:
    upstream.chunk_delay = 0.05  # chunks that arrive apart go apart, each as it comes
    call = stub.StreamChatCompletionBatches(pb.StreamChatCompletionBatchesRequest(params=params()), timeout=TIMEOUT)
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    sizes: list[int] = []
    async for message in call:
        arrivals.append(loop.time())
        sizes.append(len(message.chunks))
    assert sum(sizes) >= 8
    assert len(sizes) >= 8, f"content chunks 50 ms apart were held back into batches: {sizes}"
    assert arrivals[-1] - arrivals[0] >= 0.25


async def test_stream_in_batches_error_is_a_status(stub: pb_grpc.GatewayServiceStub) -> None:
    call = stub.StreamChatCompletionBatches(
        pb.StreamChatCompletionBatchesRequest(params=params("nope")), timeout=TIMEOUT
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert metadata_dict(info.value.trailing_metadata())["tollgate-error-code"] == "model_not_found"


async def test_create_embeddings(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    call = stub.CreateEmbeddings(
        pb.CreateEmbeddingsRequest(model="text-embedding-3-small", input=["one two", "three"]), timeout=TIMEOUT
    )
    response = await call
    assert [e.index for e in response.data] == [0, 1]
    for embedding in response.data:
        assert len(embedding.values) == 8  # the fake's default dimensions
        assert sum(v * v for v in embedding.values) == pytest.approx(1.0, rel=1e-4)
    assert list(response.data[0].values) != list(response.data[1].values)
    assert response.usage.prompt_tokens == 3
    assert "tollgate-upstream-ms" in metadata_dict(await call.trailing_metadata())
    assert upstream.requests[-1].json["input"] == ["one two", "three"]


async def test_list_models(stub: pb_grpc.GatewayServiceStub) -> None:
    response = await stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT)
    assert sorted(m.id for m in response.models) == ["demo", "gpt-4o-mini", "text-embedding-3-small"]


# ---------------------------------------------------------------------------------------------------- errors


async def test_unknown_model(stub: pb_grpc.GatewayServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=params("nope")), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    trailing = metadata_dict(info.value.trailing_metadata())
    assert trailing["tollgate-error-code"] == "model_not_found"
    assert trailing["tollgate-error-class"] == "NotFoundError"
    assert trailing["tollgate-http-status"] == "404"
    assert "nope" in (info.value.details() or "")


async def test_unknown_model_stream(stub: pb_grpc.GatewayServiceStub) -> None:
    call = stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params("nope")), timeout=TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert metadata_dict(info.value.trailing_metadata())["tollgate-error-code"] == "model_not_found"


async def test_empty_messages(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    request = pb.CreateChatCompletionRequest(params=pb.ChatCompletionParams(model="gpt-4o-mini"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateChatCompletion(request, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailing = metadata_dict(info.value.trailing_metadata())
    assert trailing["tollgate-error-param"] == "messages"
    assert trailing["tollgate-http-status"] == "400"
    assert upstream.requests == [], "an invalid request never reaches the provider"


async def test_upstream_rate_limit(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=429, error_type="rate_limit_error", retry_after="3"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=params()), timeout=TIMEOUT)
    exc = info.value
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = exc.trailing_metadata()
    assert metadata_dict(trailing)["retry-after"] == "3"

    rebuilt = GatewayError.from_metadata(exc.code(), exc.details() or "", tuple(trailing or ()))  # type: ignore[arg-type]
    assert isinstance(rebuilt, RateLimitError)
    assert rebuilt.retry_after == 3.0
    assert rebuilt.http_status == 429
    assert rebuilt.message == exc.details()


# ---------------------------------------------------------------------------------------------------- cancellation


async def test_cancelled_stream_reaches_upstream(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    upstream.chunks = 200
    upstream.chunk_delay = 0.02
    call = stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params()), timeout=TIMEOUT)
    received = 0
    async for _ in call:
        received += 1
        if received == 2:
            break
    assert call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED

    for _ in range(100):  # up to 2 s
        if upstream.disconnects:
            break
        await asyncio.sleep(0.02)
    assert upstream.disconnects == 1, "the upstream request was not abandoned when the gRPC client cancelled"
    assert upstream.completed_streams == 0


async def test_cancelled_batched_stream_reaches_upstream(
    stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI
) -> None:
    upstream.chunks = 200
    upstream.chunk_delay = 0.02
    call = stub.StreamChatCompletionBatches(pb.StreamChatCompletionBatchesRequest(params=params()), timeout=TIMEOUT)
    async for _ in call:
        break
    assert call.cancel()
    for _ in range(100):  # up to 2 s
        if upstream.disconnects:
            break
        await asyncio.sleep(0.02)
    assert upstream.disconnects == 1, "the upstream request was not abandoned when the gRPC client cancelled"
    assert upstream.completed_streams == 0


# ------------------------------------------------------------------------------------------ health, reflection


@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_serving(channel: grpc.aio.Channel, service: str) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_unknown_service(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
    )
    responses = [response async for response in call]
    assert len(responses) == 1
    names = {service.name for service in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_reflection_describes_gateway_service(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]), timeout=TIMEOUT
    )
    responses = [response async for response in call]
    assert len(responses) == 1
    assert responses[0].file_descriptor_response.file_descriptor_proto, "the proto file of the service is served"
