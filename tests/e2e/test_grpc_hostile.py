"""Hostile messages at the gRPC door: valid protobuf saying wrong things, and bytes that are not a message at all,
sent straight to GatewayService and routed to every backend type. Never UNKNOWN or INTERNAL: a bad request is the
caller's mistake (INVALID_ARGUMENT, NOT_FOUND...) or is served.

The HTTP codec can only make well-typed messages; a gRPC caller can set any field to anything the wire format holds:
enum values with no name, NaN, negative counts, empty oneofs, `*_json` fields that are not JSON, 100 KB strings.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.engine.server import start_engine_server
from gateway.testing.fake_anthropic import FakeAnthropic
from gateway.testing.fake_gemini import FakeGemini
from gateway.testing.fake_openai import FakeOpenAI
from tests.e2e.test_hostile_bodies import ANTHROPIC_KEY, GEMINI_KEY, MODELS, config
from tests.engine.test_exchange import RawExchange, start
from tollgate.gateway.v1 import exchange_pb2 as xpb
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

SERVICE = "/tollgate.gateway.v1.GatewayService/"
BUGS = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
Mutation = tuple[str, Callable[[pb.ChatCompletionParams], None]]


@pytest.fixture
async def engine_address(upstream: FakeOpenAI) -> AsyncIterator[str]:
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as claude, FakeGemini(api_key=GEMINI_KEY).running() as gemini:
        engine = assemble(parse_config(config(upstream.base_url, claude.base_url, gemini.base_url), {})).engine
        await engine.start()
        server = await start_engine_server(engine, "127.0.0.1:0")
        try:
            yield f"127.0.0.1:{server.port}"
        finally:
            await server.stop(0)
            await engine.close()


def base(model: str) -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(
        model=model,
        messages=[
            pb.ChatMessage(role=pb.ROLE_SYSTEM, content="Be brief."),
            pb.ChatMessage(role=pb.ROLE_USER, content="hello"),
        ],
    )


def _set(name: str, value: Any) -> Callable[[pb.ChatCompletionParams], None]:
    return lambda p: setattr(p, name, value)


def _message(change: Callable[[pb.ChatMessage], None]) -> Callable[[pb.ChatCompletionParams], None]:
    return lambda p: change(p.messages[1])


def _part(change: Callable[[pb.ContentPart], None]) -> Callable[[pb.ChatCompletionParams], None]:
    def apply(p: pb.ChatCompletionParams) -> None:
        p.messages[1].ClearField("content")
        change(p.messages[1].content_parts.add())

    return apply


def _tool(change: Callable[[pb.Tool], None]) -> Callable[[pb.ChatCompletionParams], None]:
    def apply(p: pb.ChatCompletionParams) -> None:
        tool = p.tools.add(type="function")
        tool.function.name = "f"
        change(tool)

    return apply


def _numbers() -> Iterator[Mutation]:
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        for value in (math.nan, math.inf, -math.inf, -1e308, 1e308, -0.0, 5.0):
            yield f"{name}={value}", _set(name, value)
    for name in ("max_tokens", "max_completion_tokens", "n", "top_logprobs", "seed", "top_k"):
        for number in (-(2**63), -1, 0, 2**31, 2**63 - 1):
            yield f"{name}={number}", _set(name, number)


def _strings() -> Iterator[Mutation]:
    for name in ("model", "user", "reasoning_effort", "service_tier"):
        for value in ("", "x" * 100_000, "\u0000\ud7ff\U0010ffff", "tgk_0123456789abcdef_" + "A1b2" * 10):
            yield f"{name}={value[:20]!r}", _set(name, value)
    yield "stop x 1000", lambda p: p.stop.extend(["s"] * 1000)
    yield "logit_bias nan", lambda p: p.logit_bias.update({"1": math.nan})
    yield "metadata 1000 pairs", lambda p: p.metadata.update({f"k{i}": "v" for i in range(1000)})
    yield "modalities odd", lambda p: p.modalities.extend(["smell", ""])
    yield "tool_choice mode odd", lambda p: setattr(p.tool_choice, "mode", "sometimes")
    yield "tool_choice function empty", lambda p: setattr(p.tool_choice, "function_name", "")
    yield "response_format odd", lambda p: setattr(p.response_format, "type", "xml")
    yield "json_schema without schema", lambda p: setattr(p.response_format, "type", "json_schema")
    yield "stream_options usage", lambda p: setattr(p.stream_options, "include_usage", True)
    yield "anthropic_beta odd", lambda p: p.anthropic_beta.extend(["", "x" * 1000])


def _messages() -> Iterator[Mutation]:
    yield "no messages", lambda p: p.ClearField("messages")
    for role in (0, 7, 99, -5, pb.ROLE_TOOL, pb.ROLE_FUNCTION, pb.ROLE_DEVELOPER):
        yield f"role={role}", _message(lambda m, r=role: setattr(m, "role", r))  # type: ignore[misc]
    yield "no content", _message(lambda m: m.ClearField("content"))
    yield "assistant, nothing", lambda p: p.messages.add(role=pb.ROLE_ASSISTANT)
    yield "tool call, empty", lambda p: p.messages.add(role=pb.ROLE_ASSISTANT).tool_calls.add()
    yield "tool reply, no call", lambda p: p.messages.add(role=pb.ROLE_TOOL, content="42", tool_call_id="nope")
    yield "10k messages", lambda p: p.messages.extend([pb.ChatMessage(role=pb.ROLE_USER, content="x")] * 10_000)
    yield "empty part", _part(lambda part: None)
    yield "empty text part", _part(lambda part: setattr(part, "text", ""))
    yield "image no url", _part(lambda part: part.image_url.SetInParent())
    yield "image odd url", _part(lambda part: setattr(part.image_url, "url", "data:;base64,@@@"))
    yield "audio empty", _part(lambda part: part.input_audio.SetInParent())
    yield "file empty", _part(lambda part: part.file.SetInParent())
    yield "file data odd", _part(lambda part: setattr(part.file, "file_data", "%%%"))
    yield "tool no name", _tool(lambda t: t.function.ClearField("name"))
    yield "tool of another type", _tool(lambda t: setattr(t, "type", "computer"))


def _json_fields() -> Iterator[Mutation]:
    for text in ("not json", "[]", "null", "1", '"s"', "{" * 2000):
        short = text[:10]
        yield f"extra_json={short}", _set("extra_json", text)
        yield f"message extra_json={short}", _message(lambda m, t=text: setattr(m, "extra_json", t))  # type: ignore[misc]
        yield f"parameters_json={short}", _tool(lambda tool, t=text: setattr(tool.function, "parameters_json", t))  # type: ignore[misc]
        yield f"other_json={short}", _part(lambda part, t=text: setattr(part, "other_json", t))  # type: ignore[misc]
        yield f"thinking_json={short}", _set("thinking_json", text)
        yield (
            f"schema_json={short}",
            lambda p, t=text: (  # type: ignore[misc]
                setattr(p.response_format, "type", "json_schema"),
                setattr(p.response_format.json_schema, "schema_json", t),
            ),
        )


def mutations() -> list[Mutation]:
    return [*_numbers(), *_strings(), *_messages(), *_json_fields()]


def random_messages(count: int, seed: int) -> Iterator[tuple[str, pb.ChatCompletionParams]]:
    """Valid protobuf from random bytes: whatever parses is a message some caller could send."""
    rng = random.Random(seed)
    template = base("gpt").SerializeToString()
    made = 0
    while made < count:
        data = bytearray(template)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        params = pb.ChatCompletionParams()
        try:
            params.ParseFromString(bytes(data))
        except DecodeError:  # not a message: the undecodable tests below send such bytes
            continue
        params.model = rng.choice(MODELS)
        made += 1
        yield f"random {made}", params


async def _status(stub: pb_grpc.GatewayServiceStub, params: pb.ChatCompletionParams, rpc: str) -> grpc.StatusCode:
    try:
        if rpc == "stream":
            async for _ in stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=params), timeout=10):
                pass
        elif rpc == "count":
            await stub.CountTokens(pb.CountTokensRequest(params=params), timeout=10)
        else:
            await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=params), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_valid_but_wrong_messages_are_never_a_server_error(engine_address: str) -> None:
    cases: list[tuple[str, pb.ChatCompletionParams]] = []
    rpcs = ("unary", "stream", "count")
    for i, (label, mutate) in enumerate(mutations()):
        params = base(MODELS[i % len(MODELS)])
        mutate(params)
        cases.append((label, params))
    cases.extend(random_messages(150, seed=15))
    statuses: Counter[str] = Counter()
    problems: dict[str, str] = {}
    gate = asyncio.Semaphore(8)
    async with grpc.aio.insecure_channel(
        engine_address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)

        async def one(i: int, label: str, params: pb.ChatCompletionParams) -> None:
            rpc = rpcs[i % len(rpcs)]
            async with gate:
                code = await _status(stub, params, rpc)
            statuses[code.name] += 1
            if code in BUGS:
                problems[f"{label} ({params.model}, {rpc})"] = code.name

        await asyncio.gather(*(one(i, label, params) for i, (label, params) in enumerate(cases)))
    assert problems == {}, f"{len(problems)} server errors: {dict(list(problems.items())[:20])}"
    # Both kinds of answer must be common, or the cases are not exercising anything.
    assert statuses["OK"] > 20 and statuses["INVALID_ARGUMENT"] > 100, statuses


async def test_embeddings_and_models_with_wrong_messages(engine_address: str) -> None:
    requests = [
        pb.CreateEmbeddingsRequest(),
        pb.CreateEmbeddingsRequest(model="gpt", input=[""] * 3000),
        pb.CreateEmbeddingsRequest(model="gpt", input_tokens=[pb.TokenIds(ids=[-1])]),
        pb.CreateEmbeddingsRequest(model="gpt", input_tokens=[pb.TokenIds()]),
        pb.CreateEmbeddingsRequest(model="gpt", input=["x"], dimensions=-3, encoding_format="hex"),
        pb.CreateEmbeddingsRequest(model="gpt", input=["x"], extra_json="nope"),
        pb.CreateEmbeddingsRequest(model="claude", input=["x"], single_input=True, input_tokens=[pb.TokenIds(ids=[1])]),
        pb.CreateEmbeddingsRequest(model="x" * 100_000, input=["x"]),
    ]
    async with grpc.aio.insecure_channel(engine_address) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        for request in requests:
            try:
                await stub.CreateEmbeddings(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in BUGS, (request, exc.code(), exc.details())
        await stub.ListModels(pb.ListModelsRequest(), timeout=10)


UNDECODABLE = [
    pytest.param(b"\xff\xff\xff\xff", id="not-protobuf"),
    pytest.param(b"\x0a\x05\x0a\x02\xff\xfe", id="invalid-utf8-model"),  # params { model: <bad UTF-8> }
    pytest.param(b"\x0a\x10\x0a", id="truncated"),
]


HOSTILE_METHODS = [
    "CreateChatCompletion",
    "StreamChatCompletion",
    "CreateEmbeddings",
    "CountTokens",
    "CreateResponse",
    "StreamResponse",
    "GetResponse",
    "DeleteResponse",
    "ListResponseInputItems",
]


@pytest.mark.parametrize("data", UNDECODABLE)
@pytest.mark.parametrize("method", HOSTILE_METHODS)
async def test_undecodable_requests_are_invalid_arguments(engine_address: str, method: str, data: bytes) -> None:
    async with grpc.aio.insecure_channel(engine_address) as channel:
        if method.startswith("Stream"):
            call: Any = channel.unary_stream(SERVICE + method)(data, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
        else:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(SERVICE + method)(data, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("data", UNDECODABLE)
async def test_undecodable_requests_on_an_exchange_end_their_own_call(engine_address: str, data: bytes) -> None:
    """The same bytes as the request of every method, exchanged: each call ends INVALID_ARGUMENT, the exchange and a
    good call on it go on; a message of the exchange itself that does not decode ends it INVALID_ARGUMENT."""
    async with grpc.aio.insecure_channel(engine_address) as channel:
        raw = RawExchange(channel)
        await raw.send(*(start(number, SERVICE + method, data) for number, method in enumerate(HOSTILE_METHODS, 1)))
        for number in range(1, len(HOSTILE_METHODS) + 1):
            end = await raw.end_of(number)
            assert end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (HOSTILE_METHODS[number - 1], end)
        good = pb.CreateChatCompletionRequest(params=base("gpt")).SerializeToString()
        await raw.send(start(100, SERVICE + "CreateChatCompletion", good))
        assert (await raw.end_of(100)).code == 0
        await raw.call.write(xpb.ExchangeRequest())  # an empty message: nothing to do
        whole = channel.stream_stream(SERVICE + "Exchange")(None)
        await whole.write(data)
        assert await whole.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_undecodable_requests_leave_the_server_serving(engine_address: str) -> None:
    async with grpc.aio.insecure_channel(engine_address) as channel:
        for data in (b"\xff\xff\xff\xff", b"\x0a\x05\x0a\x02\xff\xfe"):
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary(SERVICE + "CreateChatCompletion")(data, timeout=10)
        stub = pb_grpc.GatewayServiceStub(channel)
        reply = await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=base("gpt")), timeout=10)
    assert reply.choices
