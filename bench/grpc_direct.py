"""A gRPC client streaming straight from the engine (`tollgate engine`, the split target's engine): what one stream
costs the engine when no front door is in between, asked chunk by chunk (`StreamChatCompletion`) and in batches of
the chunks that are ready together (`StreamChatCompletionBatches`).

The client runs in the bench process, like the HTTP load generator; only the engine's CPU is counted. Every stream is
checked: status OK and at least `chunks` content chunks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc

from bench.procs import cpu_seconds
from bench.targets import MODEL
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

__all__ = ["KINDS", "GrpcFigures", "measure"]

KINDS = ("chunks", "batches")  # StreamChatCompletion, StreamChatCompletionBatches
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


async def _one(stub: pb_grpc.GatewayServiceAsyncStub, kind: str, params: pb.ChatCompletionParams) -> int:
    """The content chunks of one stream."""
    metadata = (("authorization", "Bearer bench"),)
    content = 0
    if kind == "batches":
        request = pb.StreamChatCompletionBatchesRequest(params=params)
        async for message in stub.StreamChatCompletionBatches(request, metadata=metadata, timeout=60):
            content += sum(1 for chunk in message.chunks if chunk.choices and chunk.choices[0].delta.content)
    else:
        async for chunk in stub.StreamChatCompletion(
            pb.StreamChatCompletionRequest(params=params), metadata=metadata, timeout=60
        ):
            content += 1 if chunk.choices and chunk.choices[0].delta.content else 0
    return content


async def _run(
    stub: pb_grpc.GatewayServiceAsyncStub,
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
                got = await _one(stub, kind, params)
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
        for kind in KINDS:
            warm_errors, warm_samples, _ = await _run(stub, kind, params, warmup, concurrency, chunks)
            before = cpu_seconds(engine_pid)
            errors, samples, wall = await _run(stub, kind, params, streams, concurrency, chunks)
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
    return results
