"""GatewayService.Exchange: many calls over one stream between a split front door and its engine. A real engine
gRPC server with a `Drain` in front of a real fake upstream; the front door's `RemoteEngine` (or a raw stream, for
frames no front door would send)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest

from gateway.call import CallContext, new_request_id
from gateway.config import parse_config
from gateway.drain import Drain
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.exchange import METHOD_PREFIX, _Credit
from gateway.engine.exchange_client import EXCHANGE_METHOD, WINDOW, Exchanges
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.engine.servicer import GatewayServicer
from gateway.errors import DeadlineExceededError, ServiceUnavailableError, ShuttingDownError
from gateway.grpc_guard import UNDECODABLE_MESSAGE
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI
from tests.polling import until
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import exchange_pb2 as xpb
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.stats.v1 import stats_pb2

PARAMS = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])
CHAT = METHOD_PREFIX + "CreateChatCompletion"
CHUNKS = METHOD_PREFIX + "StreamChatCompletion"


@dataclass
class Engine:
    address: str
    drain: Drain
    sink: RecordingSink
    upstream: FakeOpenAI


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with FakeOpenAI(chunks=20) as upstream:
        config = parse_config(
            f'backends: [{{name: up, provider: openai, base_url: "{upstream.base_url}"}}]\n'
            "models: [{name: m, targets: [{backend: up}]}]\n",
            os.environ,
        )
        sink = RecordingSink()
        core = EngineCore(config, EngineParts(build_providers(config), usage=sink))
        drain = Drain()
        server = await start_engine_server(core, "127.0.0.1:0", drain=drain)
        try:
            yield Engine(f"127.0.0.1:{server.port}", drain, sink, upstream)
        finally:
            await server.stop(0)
            await core.close()


@pytest.fixture(params=["own connection", "grpc.aio channel"])
async def door(engine: Engine, request: pytest.FixtureRequest) -> AsyncIterator[RemoteEngine]:
    """A split front door's engine client, its exchanges on their own connection (gateway.engine.exchange_wire), or,
    for an `ipv4:` target, which that connection does not dial, on the grpc.aio channel."""
    remote = RemoteEngine(engine.address if request.param == "own connection" else f"ipv4:{engine.address}")
    try:
        yield remote
    finally:
        await remote.close()


def ctx() -> CallContext:
    return CallContext(request_id=new_request_id())


async def text_of(door: RemoteEngine) -> str:
    chunks = [c async for c in door.stream_chat_completion(PARAMS, ctx())]
    return "".join(c.choices[0].delta.content for c in chunks if c.choices)


async def test_many_streams_share_one_exchange_and_its_messages(engine: Engine, door: RemoteEngine) -> None:
    texts = await asyncio.gather(*(text_of(door) for _ in range(500)))
    assert len(set(texts)) == 1 and texts[0].startswith("This is a reply from the fake OpenAI"), "every stream whole"
    counts = door.exchanges.counts
    assert counts.opened == 1, "one exchange carried the 500 calls"
    assert counts.frames_received >= 500, "each call's answer came in frames of its own"
    assert counts.received < counts.frames_received / 3, f"frames of many calls shared messages: {counts}"
    assert counts.sent < 500 / 3, f"so did the start frames: {counts}"
    assert len(engine.sink.records) == 500


async def test_unary_calls_and_their_reply(door: RemoteEngine) -> None:
    call = ctx()
    answers = await asyncio.gather(*(door.create_chat_completion(PARAMS, c) for c in (call, ctx(), ctx())))
    assert all(a.choices[0].message.content for a in answers)
    assert call.reply.request_id.startswith("req_") and call.reply.request_id != call.request_id
    assert call.reply.upstream_seconds > 0, "the trailing metadata came back"
    assert door.exchanges.counts.opened == 1


async def test_a_reader_that_stops_stops_its_call_and_no_other(engine: Engine) -> None:
    engine.upstream.chunks = 1000
    exchanges = Exchanges(grpc.aio.insecure_channel(engine.address))
    request = pb.StreamChatCompletionRequest(params=PARAMS)
    try:
        async with aclosing(exchanges.stream(CHUNKS, request, ())) as slow:
            await anext(slow)  # then stops reading
            engine.upstream.chunks = 5
            other = [m async for _, m in exchanges.stream(CHUNKS, request, ())]
            assert len(other) == 5 + 2, "the other call on the exchange went through (role and finish chunks)"
            await asyncio.sleep(0.3)
            assert exchanges.counts.frames_received <= WINDOW + 10, "the engine sent one window, no more"
            assert len(engine.sink.records) == 1, "the stalled call is still running at the engine"
            rest = [m async for _, m in slow]
        assert len(rest) == 1000 + 2 - 1, "credit granted as the reader went on: the whole stream"
        await until(lambda: len(engine.sink.records) == 2)
    finally:
        await exchanges.close()


async def test_closing_a_stream_cancels_its_call(engine: Engine, door: RemoteEngine) -> None:
    engine.upstream.chunk_delay = 0.05
    async with aclosing(door.stream_chat_completion(PARAMS, ctx())) as chunks:
        await anext(chunks)
    await until(lambda: len(engine.sink.records) == 1)
    assert engine.sink.records[0].outcome == stats_pb2.OUTCOME_CANCELLED, "a client that left, as per-call RPCs"
    assert engine.drain.in_flight == 0
    assert await text_of(door), "the exchange goes on"


async def test_a_callers_deadline(engine: Engine) -> None:
    engine.upstream.latency = 2.0
    exchanges = Exchanges(grpc.aio.insecure_channel(engine.address))
    request = pb.CreateChatCompletionRequest(params=PARAMS)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exchanges.unary(CHAT, request, (), 0.05)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (
            DeadlineExceededError.from_metadata(
                caught.value.code(), caught.value.details() or "", caught.value.trailing_metadata() or ()
            ).code
            == "deadline_exceeded"
        )
        await until(lambda: len(engine.sink.records) == 1)
        assert engine.sink.records[0].error_type == "deadline_exceeded"
    finally:
        await exchanges.close()


async def test_renewal_moves_new_calls_to_a_new_exchange(engine: Engine) -> None:
    now = [0.0]
    exchanges = Exchanges(grpc.aio.insecure_channel(engine.address), max_calls=3, clock=lambda: now[0])
    request = pb.CreateChatCompletionRequest(params=PARAMS)
    try:
        engine.upstream.chunk_delay = 0.02
        async with aclosing(exchanges.stream(CHUNKS, pb.StreamChatCompletionRequest(params=PARAMS), ())) as long:
            await anext(long)
            for _ in range(4):
                await exchanges.unary(CHAT, request, ())
            assert exchanges.counts.opened == 2, "the fourth call went on a new exchange"
            now[0] = 61.0
            await exchanges.unary(CHAT, request, ())
            assert exchanges.counts.opened == 3, "an exchange older than a minute takes no new call"
            assert len([m async for _, m in long]) == 20 + 1, "the retired exchange finished its call"
        await until(lambda: exchanges.counts.ended == 2)  # the two retired ones closed once idle
    finally:
        await exchanges.close()


async def test_an_engine_without_the_exchange_gets_its_own_rpcs() -> None:
    async with FakeOpenAI(chunks=3) as upstream:
        config = parse_config(
            f'backends: [{{name: up, provider: openai, base_url: "{upstream.base_url}"}}]\n'
            "models: [{name: m, targets: [{backend: up}]}]\n",
            os.environ,
        )
        core = EngineCore(config, EngineParts(build_providers(config)))
        server = grpc.aio.server()
        servicer = GatewayServicer(core)
        server.add_generic_rpc_handlers((_without_exchange(servicer),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        now = [0.0]
        door = RemoteEngine(f"127.0.0.1:{port}", clock=lambda: now[0])
        try:
            for _ in range(2):  # the first call finds out, the second goes per call at once
                assert (await door.create_chat_completion(PARAMS, ctx())).choices
                assert await text_of(door) == "This is a "
            assert door.exchanges.counts.opened == 1
            now[0] = 301.0  # five minutes on, the engine may have been upgraded: asked again, once
            assert await text_of(door) == "This is a "
            assert (await door.create_chat_completion(PARAMS, ctx())).choices
            assert door.exchanges.counts.opened == 2
        finally:
            await door.close()
            await server.stop(0)
            await core.close()


def _without_exchange(servicer: GatewayServicer) -> grpc.GenericRpcHandler:
    """The RPCs this test makes, served as a release before Exchange served them."""
    return grpc.method_handlers_generic_handler(
        "tollgate.gateway.v1.GatewayService",
        {
            "CreateChatCompletion": grpc.unary_unary_rpc_method_handler(
                servicer.CreateChatCompletion,
                request_deserializer=pb.CreateChatCompletionRequest.FromString,
                response_serializer=pb.CreateChatCompletionResponse.SerializeToString,
            ),
            "StreamChatCompletionBatches": grpc.unary_stream_rpc_method_handler(
                servicer.StreamChatCompletionBatches,
                request_deserializer=pb.StreamChatCompletionBatchesRequest.FromString,
                response_serializer=pb.StreamChatCompletionBatchesResponse.SerializeToString,
            ),
        },
    )


# Frames no front door sends: a raw exchange.


class RawExchange:
    """An exchange driven frame by frame."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = channel.stream_stream(
            EXCHANGE_METHOD,
            request_serializer=xpb.ExchangeRequest.SerializeToString,
            response_deserializer=xpb.ExchangeResponse.FromString,
        )(None)
        self.frames: dict[int, list[xpb.ExchangeEngineFrame]] = {}

    async def send(self, *frames: xpb.ExchangeClientFrame) -> None:
        await self.call.write(xpb.ExchangeRequest(frames=frames))

    async def end_of(self, number: int) -> xpb.ExchangeCallEnd:
        """Read until call `number` ends."""
        async with asyncio.timeout(10):
            while not any(f.HasField("end") for f in self.frames.get(number, ())):
                response = await self.call.read()
                assert response is not grpc.aio.EOF, "the exchange ended"
                for frame in response.frames:
                    self.frames.setdefault(frame.call, []).append(frame)
        return self.frames[number][-1].end


def start(number: int, method: str, request: bytes, **fields: object) -> xpb.ExchangeClientFrame:
    return xpb.ExchangeClientFrame(call=number, start=xpb.ExchangeCallStart(method=method, request=request, **fields))


GOOD = pb.CreateChatCompletionRequest(params=PARAMS).SerializeToString()


async def test_malformed_frames_end_their_own_call(engine: Engine) -> None:
    async with grpc.aio.insecure_channel(engine.address) as channel:
        raw = RawExchange(channel)
        engine.upstream.latency = 0.3
        await raw.send(start(1, CHAT, GOOD))  # in flight while the bad frames come
        await raw.send(
            start(2, METHOD_PREFIX + "NoSuchMethod", GOOD),
            start(3, "/tollgate.gateway.v1.AdminService/Reload", b""),
            start(4, METHOD_PREFIX + "Exchange", b""),
            start(5, CHAT, b"\xff\xff\xff\xff"),
            start(6, CHAT, b"\x0a\x05\x0a\x02\xff\xfe"),
            xpb.ExchangeClientFrame(call=7),  # no step
            xpb.ExchangeClientFrame(call=99, credit=xpb.ExchangeCallCredit(messages=5)),  # unknown: ignored
            xpb.ExchangeClientFrame(call=98, cancel=xpb.ExchangeCallCancel()),  # unknown: ignored
        )
        codes = {n: grpc.StatusCode.UNIMPLEMENTED for n in (2, 3, 4)} | {
            n: grpc.StatusCode.INVALID_ARGUMENT for n in (5, 6, 7)
        }
        for number, code in codes.items():
            end = await raw.end_of(number)
            assert end.code == code.value[0], (number, end)
        assert (await raw.end_of(5)).details == UNDECODABLE_MESSAGE
        assert (await raw.end_of(1)).code == 0, "the call in flight was not disturbed"
        assert 98 not in raw.frames and 99 not in raw.frames
        await raw.send(start(8, CHAT, GOOD))
        await raw.send(start(8, CHAT, GOOD))  # the same number again, while 8 runs
        end = await raw.end_of(8)
        assert end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "already in flight" in end.details
        engine.upstream.latency = 0
        await raw.send(start(9, CHAT, GOOD))
        assert (await raw.end_of(9)).code == 0, "the exchange survived it all"
        await raw.call.done_writing()
        assert await raw.call.code() == grpc.StatusCode.OK


async def test_an_undecodable_exchange_message_is_invalid_argument(engine: Engine) -> None:
    async with grpc.aio.insecure_channel(engine.address) as channel:
        call = channel.stream_stream(EXCHANGE_METHOD)(None)
        await call.write(b"\xff\xff\xff\xff")
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
        raw = RawExchange(channel)
        await raw.send(start(1, CHAT, GOOD))
        assert (await raw.end_of(1)).code == 0, "the server serves on"


async def test_the_timeout_frame(engine: Engine) -> None:
    engine.upstream.latency = 2.0
    async with grpc.aio.insecure_channel(engine.address) as channel:
        raw = RawExchange(channel)
        timeout = timedelta(milliseconds=50)
        frame = start(1, CHAT, GOOD)
        frame.start.timeout.FromTimedelta(timeout)
        await raw.send(frame)
        end = await raw.end_of(1)
        assert end.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_a_draining_engine_refuses_new_calls_and_cuts_the_rest(engine: Engine, door: RemoteEngine) -> None:
    engine.upstream.chunk_delay = 0.05
    running = door.stream_chat_completion(PARAMS, ctx())
    async with aclosing(running):
        await anext(running)
        engine.drain.begin()
        engine.drain.refuse_new()  # the listeners close: what `serve_until_stopped` does after the drain delay
        for opened in (1, 2):
            with pytest.raises(ServiceUnavailableError):
                await door.create_chat_completion(PARAMS, ctx())
            assert door.exchanges.counts.opened == opened, "told the exchange is retiring, the door opens another"
        assert engine.drain.cut() == 1, "the call in flight on the exchange is tracked, the exchange is not"
        with pytest.raises(ShuttingDownError):
            async for _ in running:
                pass
    await until(lambda: len(engine.sink.records) == 1)
    assert engine.sink.records[0].error_type == "shutting_down"
    assert engine.drain.in_flight == 0


async def test_an_exchange_answering_garbage_ends_its_calls_as_an_unavailable_engine() -> None:
    async def garbage(requests: AsyncIterator[bytes], _: object) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield b"\xff\xff\xff\xff"  # not an ExchangeResponse

    handler = grpc.method_handlers_generic_handler(
        "tollgate.gateway.v1.GatewayService", {"Exchange": grpc.stream_stream_rpc_method_handler(garbage)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    door = RemoteEngine(f"127.0.0.1:{port}")
    try:
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError):
                await door.create_chat_completion(PARAMS, ctx())
        assert door.exchanges.counts.opened == 2, "each broken exchange replaced by a new one"
    finally:
        await door.close()
        await server.stop(0)


CANCEL = xpb.ExchangeCallCancel()


async def test_a_call_cancelled_in_its_start_message_is_forgotten(engine: Engine) -> None:
    # The caller went before its start frame left: start and cancel ride one message, and the call's task is
    # cancelled before it ever ran. The exchange must forget the call, or it never ends.
    async with grpc.aio.insecure_channel(engine.address) as channel:
        raw = RawExchange(channel)
        await raw.send(start(1, CHAT, GOOD), xpb.ExchangeClientFrame(call=1, cancel=CANCEL))
        await raw.send(start(2, CHAT, GOOD))
        assert (await raw.end_of(2)).code == 0
        assert 1 not in raw.frames, "nothing more is sent for a cancelled call"
        await raw.call.done_writing()
        async with asyncio.timeout(5):
            assert await raw.call.code() == grpc.StatusCode.OK, "the exchange ended with its last call"
        assert engine.drain.in_flight == 0


async def test_a_timeout_out_of_range_ends_its_own_call(engine: Engine) -> None:
    async with grpc.aio.insecure_channel(engine.address) as channel:
        raw = RawExchange(channel)
        frame = start(1, CHAT, GOOD)
        frame.start.timeout.seconds = 10**15  # beyond any Duration (and any timedelta)
        await raw.send(frame)
        end = await raw.end_of(1)
        assert end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], end
        await raw.send(start(2, CHAT, GOOD))
        assert (await raw.end_of(2)).code == 0, "the exchange reads on"


async def _stream_in_a_window_of_one(engine: Engine, channel: grpc.aio.Channel) -> Any:
    """A raw exchange carrying call 1: a 50-chunk stream whose window is one message (credit must come for more)."""
    engine.upstream.chunks = 50
    call = channel.stream_stream(EXCHANGE_METHOD)(None)
    chunks = pb.StreamChatCompletionRequest(params=PARAMS).SerializeToString()
    await call.write(xpb.ExchangeRequest(frames=[start(1, CHUNKS, chunks, window=1)]).SerializeToString())
    return call


async def test_a_broken_read_ends_the_calls_in_flight(engine: Engine) -> None:
    # A stream waiting for credit it can no longer hear must not keep the exchange (and the engine's call) forever.
    async with grpc.aio.insecure_channel(engine.address) as channel:
        call = await _stream_in_a_window_of_one(engine, channel)
        first = xpb.ExchangeResponse.FromString(await call.read())
        assert first.frames[0].messages, "the call sent its window and waits for credit"
        await call.write(b"\xff\xff\xff\xff")  # not an ExchangeRequest: the exchange is over
        async with asyncio.timeout(5):
            assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
        await until(lambda: engine.drain.in_flight == 0)


async def test_a_caller_that_closes_its_side_gets_the_rest_of_its_streams(engine: Engine) -> None:
    # Credit comes on the caller's side of the stream: once it has closed it, a window would hold the call forever.
    async with grpc.aio.insecure_channel(engine.address) as channel:
        call = await _stream_in_a_window_of_one(engine, channel)
        await call.done_writing()
        messages, ended = 0, False
        async with asyncio.timeout(5):
            while not ended:
                response = xpb.ExchangeResponse.FromString(await call.read())
                for frame in response.frames:
                    messages += len(frame.messages)
                    ended = ended or (frame.HasField("end") and frame.end.code == 0)
            assert await call.code() == grpc.StatusCode.OK
        assert messages > 50, "every chunk came, with no credit granted"


async def test_a_call_waiting_for_credit_goes_on_when_its_caller_closes_its_side() -> None:
    # The race under test_a_caller_that_closes_its_side_gets_the_rest_of_its_streams, made certain: the call has
    # used its window and waits for credit when the caller's half-close lifts the window.
    credit = _Credit(1)
    await credit.take()
    waiting = asyncio.create_task(credit.take())
    await asyncio.sleep(0)
    assert not waiting.done()
    credit.lift()
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(credit.take(), 1)  # and no limit from then on
