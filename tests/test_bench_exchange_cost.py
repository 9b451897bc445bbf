"""`bench.exchange_cost`: the queued exchange answers as the engine does, and every way of calling is timed (a real
engine process included)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from bench.exchange_cost import _METADATA, _PATH, _PEER, _QueuedChannel, against_engine, in_process, start_engine
from bench.procs import stop_all
from bench.targets import tollgate_config
from gateway.assemble import assemble
from gateway.config.load import load_config
from gateway.drain import Drain
from gateway.engine.exchange import ExchangeServer
from gateway.engine.exchange_client import Exchanges
from gateway.engine.methods import methods_of
from gateway.engine.wire import call_context
from tollgate.gateway.v1 import gateway_pb2 as pb


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_bytes(orjson.dumps(tollgate_config("http://127.0.0.1:9/v1")))
    return path


async def test_a_call_over_the_queued_exchange_gets_the_engines_own_answer(tmp_path: Path) -> None:
    assembly = assemble(load_config(_config(tmp_path), os.environ))
    assembly.wire()
    exchanges = Exchanges(_QueuedChannel(ExchangeServer(methods_of(assembly.engine), (), Drain())))  # type: ignore[arg-type]
    try:
        direct = await assembly.engine.list_models(call_context(_METADATA, _PEER))
        answer, _, trailing = await exchanges.unary(_PATH, pb.ListModelsRequest(), _METADATA)
    finally:
        await exchanges.close()
        await assembly.close()
    assert direct.models and pb.ListModelsResponse.FromString(answer) == direct
    assert any(key == "x-request-id" for key, _ in trailing)


async def test_every_way_is_timed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    local = await in_process(config, calls=100, rounds=1)
    assert local["direct"] > 0 and local["queues"] > 0
    engine, address = start_engine(config, tmp_path)
    try:
        remote = await against_engine(address, engine.pid, calls=500, rounds=1)
    finally:
        stop_all([engine])
    # The engine's CPU is read from /proc in clock ticks (10 ms): enough calls for the RPCs to register; the
    # exchange's may read 0 on so few. An RPC costs its caller several times what a call on the exchange does.
    (rpc_caller, rpc_engine), (exchange_caller, exchange_engine) = remote["rpc"], remote["exchange"]
    assert rpc_engine > 0 and exchange_engine >= 0
    assert rpc_caller > exchange_caller > 0
    wire_caller, wire_engine = remote["wire"]
    assert wire_caller > 0 and wire_engine >= 0
