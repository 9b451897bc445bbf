"""A split front door asks its engine for batches of chunks; an engine from before batching (no such method) is
asked chunk by chunk instead, and the stream is the same."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.assemble import assemble
from gateway.call import CallContext
from gateway.config import parse_config
from gateway.engine.remote import RemoteEngine
from gateway.engine.servicer import GatewayServicer
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import UPSTREAM_KEY, config_for
from tollgate.gateway.v1 import gateway_pb2 as pb

SERVICE = "tollgate.gateway.v1.GatewayService"
PARAMS = pb.ChatCompletionParams(
    model="gpt-4o-mini",
    messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello")],
    stream_options=pb.StreamOptions(include_usage=True),
)


@pytest.fixture
async def old_engine() -> AsyncIterator[str]:
    """An engine that serves StreamChatCompletion but not StreamChatCompletionBatches, as releases before it."""
    async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=8) as upstream:
        assembly = assemble(parse_config(config_for(upstream.base_url), os.environ))
        await assembly.start()
        servicer = GatewayServicer(assembly.engine)
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamChatCompletion": grpc.unary_stream_rpc_method_handler(
                    servicer.StreamChatCompletion,
                    request_deserializer=pb.StreamChatCompletionRequest.FromString,
                    response_serializer=pb.StreamChatCompletionResponse.SerializeToString,
                )
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(0)
            await assembly.close()


async def test_an_engine_without_batches_is_asked_chunk_by_chunk(old_engine: str) -> None:
    remote = RemoteEngine(old_engine)
    try:
        for attempt in range(2):  # the first call finds out, the second asks chunk by chunk at once
            ctx = CallContext(f"req_{attempt}")
            chunks = [chunk async for chunk in remote.stream_chat_completion(PARAMS, ctx)]
            text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
            assert text == "This is a reply from the fake OpenAI "
            assert chunks[-1].usage.completion_tokens == 8
            assert ctx.reply.request_id.startswith("req_") and ctx.reply.request_id != ctx.request_id
    finally:
        await remote.close()
