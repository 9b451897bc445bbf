"""The exchange's own HTTP/2 connection (gateway.engine.exchange_wire) against a scripted HTTP/2 peer: what an engine
may send that the real one rarely does (GOAWAY, PING, resets, split header blocks, padding, small windows, error
statuses, silence, garbage), and what the client must answer. The real engine is its peer in every split-mode test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
import hpack
import pytest

from gateway.config.tls import ClientTLS
from gateway.engine import exchange_wire
from gateway.engine.exchange_wire import WireOpener, WireStream, split_target

_FRAME = struct.Struct(">BHBBI")
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


@dataclass
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) >> 16, len(payload) & 0xFFFF, kind, flags, stream) + payload


def message(body: bytes) -> bytes:
    return struct.pack(">BI", 0, len(body)) + body


@dataclass
class Peer:
    """One connection the scripted engine accepted: the frames it read, and a way to answer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    encoder: hpack.Encoder = field(default_factory=hpack.Encoder)
    frames: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    def headers(self, stream: int, fields: list[tuple[str, str]], end: bool = False) -> bytes:
        return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), stream, self.encoder.encode(fields))

    async def next(self, kind: int) -> Frame:
        """The next frame of `kind` the client sent (others are skipped)."""
        while True:
            got = await asyncio.wait_for(self.frames.get(), 5)
            if got.kind == kind:
                return got

    async def read_frames(self) -> None:
        assert await self.reader.readexactly(24) == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        try:
            while True:
                high, low, kind, flags, stream = _FRAME.unpack(await self.reader.readexactly(9))
                payload = await self.reader.readexactly(high << 16 | low)
                await self.frames.put(Frame(kind, flags, stream & 0x7FFFFFFF, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


Script = Callable[[Peer], Awaitable[None]]
Start = Callable[[Script], Awaitable[tuple[WireOpener[bytes, bytes], list[Peer]]]]


@pytest.fixture
async def engine() -> AsyncIterator[Start]:
    """A scripted engine: each connection runs the script; the opener dials it."""
    servers: list[asyncio.Server] = []
    openers: list[WireOpener[bytes, bytes]] = []

    async def start(script: Script) -> tuple[WireOpener[bytes, bytes], list[Peer]]:
        peers: list[Peer] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = Peer(reader, writer)
            peers.append(peer)
            task = asyncio.create_task(peer.read_frames())
            peer.send(frame(SETTINGS, 0, 0))
            try:
                await script(peer)
                await task
            finally:
                task.cancel()
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        opener: WireOpener[bytes, bytes] = WireOpener("127.0.0.1", port, "/svc/Method", bytes, bytes)
        openers.append(opener)
        return opener, peers

    yield start
    for opener in openers:
        await opener.close()
    for server in servers:
        server.close()


async def outcome(stream: WireStream[bytes, bytes]) -> tuple[list[bytes], grpc.aio.AioRpcError | None]:
    """The stream's messages, and its error (None: it ended OK)."""
    got: list[bytes] = []
    try:
        async with asyncio.timeout(5):
            async for response in stream:
                got.append(response)
    except grpc.aio.AioRpcError as exc:
        return got, exc
    return got, None


async def test_messages_both_ways_and_an_ok_end(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        fields = cast(dict[str, str], dict(hpack.Decoder().decode(opened.payload)))
        assert fields[":path"] == "/svc/Method" and fields["content-type"] == "application/grpc"
        assert fields["te"] == "trailers" and fields[":scheme"] == "http"
        data = await peer.next(DATA)
        assert data.payload == message(b"hello")
        peer.send(
            peer.headers(opened.stream, OK_HEADERS), frame(DATA, 0, opened.stream, message(b"one") + message(b"two"))
        )
        assert (await peer.next(DATA)).flags & END_STREAM  # done_writing
        peer.send(peer.headers(opened.stream, [("grpc-status", "0")], end=True))

    opener, _ = await engine(script)
    stream = opener()
    await stream.write(b"hello")
    await stream.done_writing()
    assert await outcome(stream) == ([b"one", b"two"], None)


async def test_trailers_give_the_status_details_and_metadata_a_grpc_call_would(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        blob = base64.b64encode(b"\x00\x01binary").rstrip(b"=").decode()
        trailers = [("grpc-status", "7"), ("grpc-message", "not%20yours"), ("tollgate-error", "x"), ("why-bin", blob)]
        peer.send(peer.headers(opened.stream, OK_HEADERS + trailers, end=True))  # trailers-only

    opener, _ = await engine(script)
    got, error = await outcome(opener())
    assert got == [] and error is not None
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "not yours"
    trailing = cast(list[tuple[str, str | bytes]], list(error.trailing_metadata()))
    assert ("tollgate-error", "x") in trailing
    assert ("why-bin", b"\x00\x01binary") in trailing


@pytest.mark.parametrize(
    ("status", "code"),
    [("404", grpc.StatusCode.UNIMPLEMENTED), ("503", grpc.StatusCode.UNAVAILABLE), ("418", grpc.StatusCode.UNKNOWN)],
)
async def test_an_http_error_status_is_the_grpc_code_the_protocol_maps_it_to(
    engine: Start, status: str, code: grpc.StatusCode
) -> None:
    async def script(peer: Peer) -> None:
        for trailers_only in (False, True):
            opened = await peer.next(HEADERS)
            peer.send(peer.headers(opened.stream, [(":status", status)], end=trailers_only))

    opener, _ = await engine(script)
    for _ in range(2):  # headers, then trailers-only
        _, error = await outcome(opener())
        assert error is not None and error.code() == code


async def test_a_reset_stream_ends_with_its_code(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        peer.send(frame(RST, 0, opened.stream, (0x7).to_bytes(4, "big")))  # REFUSED_STREAM

    opener, _ = await engine(script)
    _, error = await outcome(opener())
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE


async def test_split_header_blocks_and_padded_data_are_read(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        block = peer.encoder.encode([*OK_HEADERS, ("x-long", "v" * 300)])
        peer.send(
            frame(HEADERS, 0, opened.stream, block[:10]),
            frame(CONTINUATION, 0, opened.stream, block[10:100]),
            frame(CONTINUATION, END_HEADERS, opened.stream, block[100:]),
            frame(DATA, PADDED, opened.stream, bytes([4]) + message(b"padded")[:7] + bytes(4)),  # split mid-message
            frame(DATA, 0, opened.stream, message(b"padded")[7:]),
            peer.headers(opened.stream, [("grpc-status", "0")], end=True),
        )

    opener, _ = await engine(script)
    assert await outcome(opener()) == ([b"padded"], None)


async def test_pings_are_answered_with_their_payload(engine: Start) -> None:
    answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def script(peer: Peer) -> None:
        await peer.next(HEADERS)
        peer.send(frame(PING, 0, 0, b"8bytes!!"))
        answered.set_result((await peer.next(PING)).payload)

    opener, _ = await engine(script)
    stream = opener()
    await stream.write(b"x")
    assert await asyncio.wait_for(answered, 5) == b"8bytes!!"


async def test_settings_are_acknowledged_and_writes_wait_for_the_engines_window(engine: Start) -> None:
    seen: list[int] = []

    async def script(peer: Peer) -> None:
        peer.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 10)))  # a stream may send 10 bytes
        acks = 0
        while acks < 2:  # both of ours (the first, empty, and this one) are acknowledged
            acks += (await peer.next(SETTINGS)).flags & ACK
        opened = await peer.next(HEADERS)
        first = await peer.next(DATA)
        seen.append(len(first.payload))
        await asyncio.sleep(0.1)
        assert peer.frames.empty()  # nothing more until the window opens
        peer.send(frame(WINDOW_UPDATE, 0, opened.stream, (1000).to_bytes(4, "big")))
        seen.append(len((await peer.next(DATA)).payload))
        peer.send(peer.headers(opened.stream, [*OK_HEADERS, ("grpc-status", "0")], end=True))

    opener, _ = await engine(script)
    stream = opener()
    await asyncio.sleep(0.1)  # the settings have arrived
    await stream.write(b"x" * 95)
    assert await outcome(stream) == ([], None)
    assert seen == [10, 90]


async def test_received_data_is_returned_to_the_engines_windows(engine: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    updates: list[tuple[int, int]] = []

    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        peer.send(peer.headers(opened.stream, OK_HEADERS))
        body = b"z" * 16_000
        for _ in range(200):  # 3.2 MB: past half of the 4 MiB windows
            peer.send(frame(DATA, 0, opened.stream, message(body[:-5])))
        while len(updates) < 2:
            update = await peer.next(WINDOW_UPDATE)
            updates.append((update.stream, int.from_bytes(update.payload, "big")))
        peer.send(peer.headers(opened.stream, [("grpc-status", "0")], end=True))

    opener, _ = await engine(script)
    got, error = await outcome(opener())
    assert error is None and len(got) == 200
    assert {stream for stream, _ in updates} == {0, 1}
    assert all(increment >= 2 << 20 for _, increment in updates)


async def test_goaway_ends_the_streams_past_its_last_id_and_the_next_one_dials_again(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        first = await peer.next(HEADERS)
        if len(peers) > 1:  # the second connection: answer at once
            peer.send(peer.headers(first.stream, [*OK_HEADERS, ("grpc-status", "0")], end=True))
            return
        second = await peer.next(HEADERS)
        peer.send(frame(GOAWAY, 0, 0, struct.pack(">II", first.stream, 0)))
        peer.send(peer.headers(first.stream, OK_HEADERS), frame(DATA, 0, first.stream, message(b"finished")))
        peer.send(peer.headers(first.stream, [("grpc-status", "0")], end=True))
        assert second.stream > first.stream

    opener, peers = await engine(script)
    old, cut = opener(), opener()
    await old.write(b"a")
    await cut.write(b"b")
    assert await outcome(old) == ([b"finished"], None)
    _, error = await outcome(cut)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert await outcome(opener()) == ([], None)
    assert len(peers) == 2


async def test_a_silent_engine_is_found_by_keepalive(engine: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exchange_wire, "KEEPALIVE", 0.3)
    monkeypatch.setattr(exchange_wire, "PING_TIMEOUT", 0.3)
    pinged = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.next(PING)  # never answered
        pinged.set()
        await asyncio.sleep(10)

    opener, _ = await engine(script)
    stream = opener()
    await stream.write(b"x")
    _, error = await outcome(stream)
    assert pinged.is_set()
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE


async def test_garbage_ends_the_connection_and_its_streams(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        peer.send(frame(HEADERS, END_HEADERS, opened.stream, b"\xff\xff\xff\xff\xff"))  # no HPACK index is that big
        await peer.next(GOAWAY)

    opener, _ = await engine(script)
    _, error = await outcome(opener())
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_message_over_the_limit_ends_its_stream(engine: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exchange_wire, "MAX_MESSAGE", 1000)
    reset: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        peer.send(peer.headers(opened.stream, OK_HEADERS), frame(DATA, 0, opened.stream, struct.pack(">BI", 0, 5000)))
        reset.set_result(int.from_bytes((await peer.next(RST)).payload, "big"))

    opener, _ = await engine(script)
    _, error = await outcome(opener())
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await asyncio.wait_for(reset, 5) == 0x8  # CANCEL


async def test_an_engine_that_is_not_there_is_unavailable() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    opener: WireOpener[bytes, bytes] = WireOpener("127.0.0.1", port, "/svc/Method", bytes, bytes)
    stream = opener()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.write(b"x")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    _, error = await outcome(stream)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    await opener.close()


def test_targets_it_dials_and_those_left_to_grpc() -> None:
    assert split_target("engine:50051") == ("engine", 50051)
    assert split_target("dns:///engine.ns.svc:50051") == ("engine.ns.svc", 50051)
    assert split_target("dns:engine:50051") == ("engine", 50051)
    assert split_target("[::1]:7000") == ("::1", 7000)
    assert split_target("unix:/run/engine.sock") is None
    assert split_target("engine") is None


# ------------------------------------------------------------------------------------------ what a review found


async def test_a_window_made_negative_by_new_settings_holds_data_back(engine: Start) -> None:
    """RFC 9113 6.9.2: a lower SETTINGS_INITIAL_WINDOW_SIZE can take a stream's window below 0; nothing is sent then."""
    over: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def script(peer: Peer) -> None:
        peer.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 1000)))
        await peer.next(HEADERS)
        used = 0
        while used < 1000:  # the first message takes the whole window
            used += len((await peer.next(DATA)).payload)
        peer.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 200)))  # the window is now 200 - 1000 = -800
        sent = 0
        with contextlib.suppress(TimeoutError):
            while True:
                sent += len((await asyncio.wait_for(peer.next(DATA), 0.5)).payload)
        over.set_result(sent)

    opener, _ = await engine(script)
    stream = opener()
    await asyncio.sleep(0.1)
    await stream.write(b"a" * 995)
    writing = asyncio.ensure_future(stream.write(b"b" * 3000))
    assert await asyncio.wait_for(over, 5) == 0
    assert not writing.done()
    stream.cancel()
    with pytest.raises(grpc.aio.AioRpcError):
        await asyncio.wait_for(writing, 1)  # a writer waiting for a window is released when its stream ends


async def test_a_stream_reset_while_its_writer_waits_for_a_window_releases_the_writer(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        peer.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 10)))
        opened = await peer.next(HEADERS)
        await peer.next(DATA)
        peer.send(frame(RST, 0, opened.stream, (0x2).to_bytes(4, "big")))  # INTERNAL_ERROR

    opener, _ = await engine(script)
    stream = opener()
    await asyncio.sleep(0.1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(stream.write(b"x" * 100), 5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL


async def test_a_bad_status_ends_its_stream_and_the_connection_goes_on(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        first = await peer.next(HEADERS)
        peer.send(peer.headers(first.stream, [*OK_HEADERS, ("grpc-status", "seven")], end=True))
        second = await peer.next(HEADERS)
        peer.send(peer.headers(second.stream, [*OK_HEADERS, ("grpc-status", "0")], end=True))

    opener, peers = await engine(script)
    _, error = await outcome(opener())
    assert error is not None and error.code() == grpc.StatusCode.INTERNAL
    assert await outcome(opener()) == ([], None)
    assert len(peers) == 1


async def test_too_many_pings_makes_the_next_connection_ping_half_as_often(engine: Start) -> None:
    async def script(peer: Peer) -> None:
        await peer.next(HEADERS)
        peer.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0xB) + b"too_many_pings"))

    opener, _ = await engine(script)
    _, error = await outcome(opener())
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert opener._keepalive == 2 * exchange_wire.KEEPALIVE


async def test_an_unreadable_ca_ends_the_stream_rather_than_hanging(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_bytes(b"\x00\xff not a certificate")
    opener: WireOpener[bytes, bytes] = WireOpener("127.0.0.1", 9, "/svc/Method", bytes, bytes, ClientTLS(ca=str(bad)))
    _, error = await outcome(opener())
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    await opener.close()


async def test_a_connection_that_is_heard_from_is_alive_without_the_pings_ack(
    engine: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange_wire, "KEEPALIVE", 0.2)
    monkeypatch.setattr(exchange_wire, "PING_TIMEOUT", 0.25)
    pinged = asyncio.Event()

    async def script(peer: Peer) -> None:
        opened = await peer.next(HEADERS)
        peer.send(peer.headers(opened.stream, OK_HEADERS))
        for _ in range(6):  # a message every 0.3 s: silences long enough for a PING, which is never acknowledged
            await asyncio.sleep(0.3)
            peer.send(frame(DATA, 0, opened.stream, message(b"tick")))
            while not peer.frames.empty():
                if (await peer.frames.get()).kind == PING:
                    pinged.set()
        peer.send(peer.headers(opened.stream, [("grpc-status", "0")], end=True))

    opener, _ = await engine(script)
    got, error = await outcome(opener())
    assert error is None and len(got) == 6
    assert pinged.is_set()
