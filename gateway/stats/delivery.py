"""Sending one batch to the `StatsService` until it is stored or refused: retries with jittered exponential backoff
while the server is unavailable, and one log line per change of the server's state, never one per retry."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from enum import Enum

import grpc

from gateway.config.model import StatsConfig
from gateway.stats.batches import Batch
from gateway.stats.wire import REPORT_METHOD, RETRYABLE, as_is, channel_options, details
from gateway.tls import open_channel
from tollgate.stats.v1 import stats_pb2

log = logging.getLogger("tollgate.stats")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Answer = stats_pb2.ReportResponse | grpc.aio.AioRpcError
# Told about each Report call once it is answered: the serialized records, when the call started (perf_counter) and
# its answer or error. Tracing makes the batch's span from it.
ReportObserver = Callable[[list[bytes], float, Answer], None]

_FIRST_BACKOFF = 0.1


class _State(Enum):
    UP = "up"
    DOWN = "down"  # retryable failures: the batch is kept and retried
    REJECTING = "rejecting"  # non-retryable: batches go to the spool


class Delivery:
    """The channel to the stats server and the state of the conversation with it."""

    def __init__(self, config: StatsConfig, *, sleep: Sleep, rng: random.Random, clock: Clock) -> None:
        self._config = config
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable[bytes, stats_pb2.ReportResponse] | None = None
        self._state = _State.UP
        self._down_since = 0.0
        self.retries = 0  # Report calls repeated after a retryable failure
        self.on_report: ReportObserver | None = None

    @property
    def open(self) -> bool:
        """Whether the channel is open."""
        return self._call is not None

    def connect(self) -> None:
        """Open the channel (it connects lazily)."""
        self._channel = open_channel(self._config.server, self._config.tls, channel_options(self._config))
        # Called with the request already serialized (see Batch); the answer is parsed as usual.
        self._call = self._channel.unary_unary(
            REPORT_METHOD, request_serializer=as_is, response_deserializer=stats_pb2.ReportResponse.FromString
        )

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = self._call = None

    async def send(self, batch: Batch, between_retries: Callable[[], None]) -> Answer:
        """Send `batch` until it is stored (the server's answer) or refused (a non-retryable error)."""
        attempt = 0
        while True:
            started = time.perf_counter()
            result = await self.report(batch.request, self._config.timeout)
            if self.on_report is not None:
                self.on_report(batch.payloads, started, result)
            if not isinstance(result, grpc.aio.AioRpcError):
                self._answering()
                return result
            if result.code() not in RETRYABLE:
                self._refused(batch, result)
                return result
            self._unavailable(result, len(batch.payloads))
            self.retries += 1
            between_retries()
            await self._sleep(self._backoff(attempt))
            attempt += 1

    async def report(self, request: bytes, deadline: float) -> Answer:
        """One Report call, its answer or its error."""
        assert self._call is not None
        try:
            response: stats_pb2.ReportResponse = await self._call(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            return exc
        return response

    def _backoff(self, attempt: int) -> float:
        """Exponential from ~100 ms, capped at retry_max, with jitter so many gateways do not retry in step."""
        ceiling = min(self._config.retry_max, _FIRST_BACKOFF * 2.0 ** min(attempt, 32))
        return ceiling * (0.5 + self._rng.random() / 2)

    def _answering(self) -> None:
        if self._state is _State.DOWN:
            log.info(
                "stats server %s answering again after %.1fs", self._config.server, self._clock() - self._down_since
            )
        elif self._state is _State.REJECTING:
            log.info("stats server %s accepting batches again", self._config.server)
        self._state = _State.UP

    def _refused(self, batch: Batch, error: grpc.aio.AioRpcError) -> None:
        if batch.from_spool:
            # A replay meeting the answer its records already got: nothing new to say.
            log.debug("stats server still rejects spooled records (%s)", error.code().name)
        elif self._state is not _State.REJECTING:
            self._state = _State.REJECTING
            log.error(
                "stats server %s rejected a batch of %d records (%s: %s); it goes to the spool for a later replay",
                self._config.server,
                len(batch.payloads),
                error.code().name,
                details(error),
            )

    def _unavailable(self, error: grpc.aio.AioRpcError, size: int) -> None:
        if self._state is not _State.DOWN:
            self._down_since = self._clock()
            log.warning(
                "stats server %s unavailable (%s: %s); retrying a batch of %d records, usage records queue meanwhile",
                self._config.server,
                error.code().name,
                details(error),
                size,
            )
        self._state = _State.DOWN
