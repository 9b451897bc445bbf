"""A gRPC client streaming straight from the engine (`tollgate engine`, the split target's engine): what one stream
costs the engine when no front door is in between, asked chunk by chunk (`StreamChatCompletion`), in batches of
the chunks that are ready together (`StreamChatCompletionBatches`), and in batches over one `Exchange` carrying all
the client's streams (the way a split front door calls; `gateway.engine.exchange_client`).

The client runs in the bench process, like the HTTP load generator; only the engine's CPU is counted. Every stream is
checked: status OK and at least `chunks` content chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from contextlib import aclosing
from dataclasses import dataclass, field

import grpc

from bench.procs import cpu_seconds
from bench.targets import MODEL
from gateway.engine.exchange_client import Exchanges
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

__all__ = ["KINDS", "GrpcFigures", "measure"]

KINDS = ("chunks", "batches", "exchange")  # StreamChatCompletion, StreamChatCompletionBatches, both over Exchange
_BATCHES = "/tollgate.gateway.v1.GatewayService/StreamChatCompletionBatches"
_MAX_ERROR_SAMPLES = 5


@dataclass
class GrpcFigures:
    """One measured run of gRPC streams."""

    kind: str
    concurrency: int
    streams: int
    errors: int
    wall_s: float
    engine_cpu_per_stream_ms: float
    error_samples: list[str] = field(default_factory=list)

    @property
    def streams_per_s(self) -> float:
        return self.streams / self.wall_s if self.wall_s > 0 else 0.0


def _params(model: str) -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(
        model=model,
        messages=[
            pb.ChatMessage(role=pb.ROLE_SYSTEM, content="You are a benchmark."),
            pb.ChatMessage(role=pb.ROLE_USER, content="Say hello to the gateway benchmark."),
        ],
    )


def _content(chunks: Iterable[pb.StreamChatCompletionResponse]) -> int:
    return sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)


@dataclass(frozen=True)
class _Client:
    """The engine's stub (a call per stream) and the client's exchanges (all its streams on one)."""

    stub: pb_grpc.GatewayServiceAsyncStub
    exchanges: Exchanges


async def _one(client: _Client, kind: str, params: pb.ChatCompletionParams) -> int:
    """The content chunks of one stream."""
    stub, exchanges = client.stub, client.exchanges
    metadata = (("authorization", "Bearer bench"),)
    content = 0
    if kind == "exchange":
        request = pb.StreamChatCompletionBatchesRequest(params=params)
        async with aclosing(exchanges.stream(_BATCHES, request, metadata, 60.0)) as messages:
            async for _, raw in messages:
                content += _content(pb.StreamChatCompletionBatchesResponse.FromString(raw).chunks)
    elif kind == "batches":
        request = pb.StreamChatCompletionBatchesRequest(params=params)
        async for message in stub.StreamChatCompletionBatches(request, metadata=metadata, timeout=60):
            content += _content(message.chunks)
    else:
        async for chunk in stub.StreamChatCompletion(
            pb.StreamChatCompletionRequest(params=params), metadata=metadata, timeout=60
        ):
            content += 1 if chunk.choices and chunk.choices[0].delta.content else 0
    return content


async def _run(
    client: _Client,
    kind: str,
    params: pb.ChatCompletionParams,
    n: int,
    concurrency: int,
    chunks: int,
) -> tuple[int, list[str], float]:
    remaining = n
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                got = await _one(client, kind, params)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            if got < chunks:
                errors.append(f"short stream: {got} content chunks, expected at least {chunks}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(errors), errors[:_MAX_ERROR_SAMPLES], time.perf_counter() - start


async def measure(
    address: str, engine_pid: int, chunks: int, streams: int, warmup: int, concurrency: int
) -> list[GrpcFigures]:
    """For each kind: a warm-up, then `streams` streams from `concurrency` closed-loop workers, the engine's CPU
    read before and after."""
    params = _params(MODEL)
    results: list[GrpcFigures] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub: pb_grpc.GatewayServiceAsyncStub = pb_grpc.GatewayServiceStub(channel)
        client = _Client(stub, Exchanges(channel))
        try:
            for kind in KINDS:
                warm_errors, warm_samples, _ = await _run(client, kind, params, warmup, concurrency, chunks)
                before = cpu_seconds(engine_pid)
                errors, samples, wall = await _run(client, kind, params, streams, concurrency, chunks)
                used = cpu_seconds(engine_pid) - before
                results.append(
                    GrpcFigures(
                        kind=kind,
                        concurrency=concurrency,
                        streams=streams,
                        errors=errors + warm_errors,
                        wall_s=wall,
                        engine_cpu_per_stream_ms=used * 1000 / streams,
                        error_samples=(warm_samples + samples)[:_MAX_ERROR_SAMPLES],
                    )
                )
        finally:
            await client.exchanges.close()
    return results
