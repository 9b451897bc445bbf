"""What the hop costs a GatewayService call, apart from the engine's own work: `python -m bench.exchange_cost`.

The same trivial call (`ListModels`: no provider, a few µs of the engine's own) made four ways, 50 in flight:
- `direct`: the engine in this process, called as one process's front door calls it;
- `queues`: through a split front door's exchange (`Exchanges`) and the engine's (`ExchangeServer`), both in this
  process, the gRPC stream between them replaced by two queues of serialized messages: the exchange's own Python at
  both ends, no gRPC;
- against a real `tollgate engine` (another process): `rpc`, one grpc.aio call each; `exchange`, on one `Exchange`
  stream over a grpc.aio channel; `wire`, on one `Exchange` stream over the connection a split front door uses
  (`gateway.engine.exchange_wire`); with this process's CPU (the caller's) and the engine's apart.

Each figure is CPU a call, the least of a few rounds. `queues` minus `direct` is what to shrink in our code;
`exchange` minus `queues` is gRPC's part (docs/benchmarks.md, Round 7), `exchange` minus `wire` grpc.aio's on the
calling side (Round 8).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import orjson
import uvloop

from bench.procs import GRPC_READY, Service, cpu_seconds, start_service, stop_all
from bench.targets import tollgate_config
from gateway.assemble import assemble
from gateway.config.load import load_config
from gateway.drain import Drain
from gateway.engine.exchange import METHOD_PREFIX, ExchangeServer
from gateway.engine.exchange_client import Exchanges, wire_opener
from gateway.engine.methods import methods_of
from gateway.engine.wire import call_context
from gateway.process import settle_collector
from tollgate.gateway.v1 import exchange_pb2 as xpb
from tollgate.gateway.v1 import gateway_pb2 as pb

_CONCURRENCY = 50
_PATH = METHOD_PREFIX + "ListModels"
_METADATA = (("authorization", "Bearer bench"), ("tollgate-client-address", "10.0.0.1"), ("tollgate-call", "b.1"))
_PEER = "ipv4:127.0.0.1:50000"


class _Peer:
    """The servicer context an `ExchangeServer` reads: only its peer."""

    def peer(self) -> str:
        return _PEER


class _QueuedStream:
    """An `Exchange` call whose stream is two queues: what the front door writes reaches the engine's exchange as
    serialized bytes, parsed again, and the engine's messages come back the same way (as gRPC would carry them)."""

    def __init__(self, server: ExchangeServer) -> None:
        self._up: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._down: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._serve(server))

    async def _requests(self) -> AsyncIterator[xpb.ExchangeRequest]:
        while (raw := await self._up.get()) is not None:
            yield xpb.ExchangeRequest.FromString(raw)

    async def _serve(self, server: ExchangeServer) -> None:
        async for response in server.serve(self._requests(), _Peer()):  # type: ignore[arg-type]  # a stand-in
            self._down.put_nowait(response.SerializeToString())
        self._down.put_nowait(None)

    async def write(self, message: xpb.ExchangeRequest) -> None:
        self._up.put_nowait(message.SerializeToString())

    async def done_writing(self) -> None:
        self._up.put_nowait(None)

    def cancel(self) -> None:
        self._task.cancel()

    def __aiter__(self) -> _QueuedStream:
        return self

    async def __anext__(self) -> xpb.ExchangeResponse:
        raw = await self._down.get()
        if raw is None:
            raise StopAsyncIteration
        return xpb.ExchangeResponse.FromString(raw)


class _QueuedChannel:
    """What `Exchanges` asks of a channel: an `Exchange` opener, here onto `_QueuedStream`s."""

    def __init__(self, server: ExchangeServer) -> None:
        self._server = server

    def stream_stream(self, *_: Any, **__: Any) -> Callable[[None], _QueuedStream]:
        return lambda _: _QueuedStream(self._server)


async def _per_call(
    call: Callable[[], Awaitable[object]], calls: int, rounds: int, *clocks: Callable[[], float]
) -> list[float]:
    """For each CPU clock (seconds; `time.process_time` counts all this process's threads, grpc's included), the
    least it read a call over `rounds` rounds of `calls` calls from `_CONCURRENCY` workers, in µs."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    each = calls // _CONCURRENCY
    best = [float("inf")] * len(clocks)
    await asyncio.gather(*(worker(4) for _ in range(_CONCURRENCY)))  # warm-up
    for _ in range(rounds):
        before = [clock() for clock in clocks]
        await asyncio.gather(*(worker(each) for _ in range(_CONCURRENCY)))
        for i, clock in enumerate(clocks):
            best[i] = min(best[i], (clock() - before[i]) * 1e6 / (each * _CONCURRENCY))
    return best


async def in_process(config_path: Path, calls: int, rounds: int) -> dict[str, float]:
    """`direct` and `queues`, this process's CPU a call (µs)."""
    assembly = assemble(load_config(config_path, os.environ))
    assembly.wire()
    await assembly.start()
    engine = assembly.engine
    exchanges = Exchanges(_QueuedChannel(ExchangeServer(methods_of(engine), (), Drain())))  # type: ignore[arg-type]
    request = pb.ListModelsRequest()
    try:
        direct = await _per_call(
            lambda: engine.list_models(call_context(_METADATA, _PEER)), calls, rounds, time.process_time
        )
        queues = await _per_call(lambda: exchanges.unary(_PATH, request, _METADATA), calls, rounds, time.process_time)
        return {"direct": direct[0], "queues": queues[0]}
    finally:
        await exchanges.close()
        await assembly.close()


async def against_engine(address: str, engine_pid: int, calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    """`rpc`, `exchange` and `wire` against a real engine: (this process's, the engine's) CPU a call, µs."""
    request = pb.ListModelsRequest()
    found: dict[str, tuple[float, float]] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        rpc = channel.unary_unary(
            _PATH,
            request_serializer=pb.ListModelsRequest.SerializeToString,
            response_deserializer=pb.ListModelsResponse.FromString,
        )
        exchanges = Exchanges(channel)
        opener = wire_opener(address, None)
        assert opener is not None
        wire = Exchanges(opener)
        try:
            for name, call in (
                ("rpc", lambda: rpc(request, metadata=_METADATA)),
                ("exchange", lambda: exchanges.unary(_PATH, request, _METADATA)),
                ("wire", lambda: wire.unary(_PATH, request, _METADATA)),
            ):
                caller, engine = await _per_call(
                    call, calls, rounds, time.process_time, lambda: cpu_seconds(engine_pid)
                )
                found[name] = (caller, engine)
        finally:
            await exchanges.close()
            await wire.close()
    return found


def start_engine(config_path: Path, log_dir: Path) -> tuple[Service, str]:
    """`tollgate engine` on `config_path`, started (the caller stops it, `stop_all`): it and its gRPC address."""
    argv = [sys.executable, "-m", "gateway", "engine", "--config", str(config_path), "--grpc", "127.0.0.1:0"]
    engine = start_service("engine", argv, log_dir)
    try:
        return engine, f"127.0.0.1:{engine.wait_for(GRPC_READY)[1]}"
    except BaseException:
        stop_all([engine])
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000, help="calls a round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way; the least is kept (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tollgate-exchange-cost-") as work:
        config_path = Path(work) / "engine.yaml"
        config_path.write_bytes(orjson.dumps(tollgate_config("http://127.0.0.1:9/v1")))  # never called: JSON is YAML
        settle_collector()  # the collector as every tollgate process has it
        local = uvloop.run(in_process(config_path, args.calls, args.rounds))
        service, address = start_engine(config_path, Path(work))
        try:
            remote = uvloop.run(against_engine(address, service.pid, args.calls, args.rounds))
        finally:
            stop_all([service])
    print(f"ListModels, {_CONCURRENCY} in flight, CPU a call (least of {args.rounds} rounds of {args.calls}):")
    print(f"  direct (the engine in this process)            {local['direct']:7.1f} µs")
    print(f"  exchange over queues (both ends, no gRPC)      {local['queues']:7.1f} µs")
    for name, (caller, engine) in remote.items():
        print(f"  {name:<8} to a real engine: caller {caller:7.1f} µs   engine {engine:7.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
