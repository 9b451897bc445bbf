"""`UsageReporter`: one usage record per request, from the routing engine to the external `StatsService`.

`submit` only appends to a bounded in-memory queue (or, when it is full, to the on-disk spool); one background task
sends batches with `Report`, retries while the server is down, and replays the spool when it answers. Delivery is at
least once; the server is idempotent on request_id, so each record is counted once. See docs/usage-reporting.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum

import grpc

from gateway.config.model import StatsConfig
from gateway.stats.spool import Segment, Spool
from gateway.tls import open_channel
from tollgate.stats.v1 import stats_pb2

log = logging.getLogger("tollgate.stats")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
# Told about each Report call once it is answered: the serialized records, when the call started (perf_counter) and
# its answer or error. Tracing makes the batch's span from it.
ReportObserver = Callable[[list[bytes], float, "stats_pb2.ReportResponse | grpc.aio.AioRpcError"], None]

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
_FIRST_BACKOFF = 0.1
_DROP_LOG_INTERVAL = 10.0
_MIN_WAIT = 0.001
_EMPTY_SEGMENTS_PER_SCAN = 100
_MIN_SCAN_INTERVAL = 0.05  # the spool directory is listed at most this often, however small flush_interval is
_DETAILS_MAX = 200
_MAX_BATCH_BYTES = 1 << 20  # well under gRPC's default 4 MiB message limit
_REPORT = f"/{stats_pb2.DESCRIPTOR.services_by_name['StatsService'].full_name}/Report"


class _State(Enum):
    UP = "up"
    DOWN = "down"  # retryable failures: the batch is kept and retried
    REJECTING = "rejecting"  # non-retryable: batches go to the spool


@dataclass(slots=True)
class ReporterCounters:
    """What became of the records handed to a `UsageReporter` since it was made."""

    submitted: int = 0
    delivered: int = 0  # stored for the first time, by the server's count (ReportResponse.accepted)
    duplicates: int = 0  # already stored, by the server's count: a batch resent after a lost answer, a replay
    spooled: int = 0  # written to the spool: memory full, a rejected batch, or left in memory at close
    dropped: int = 0  # lost: the spool was over spool_max_bytes or unwritable
    corrupt: int = 0  # lost: torn or corrupt spool entries skipped on replay (a crash mid-write)
    pending: int = 0  # in memory now: queued, or in the batch being sent
    retries: int = 0  # Report calls repeated after a retryable failure
    rejected: int = 0  # records in batches refused with a non-retryable status (moved to the spool), replays too


@dataclass(slots=True)
class _Batch:
    """Records travel serialized: spooled ones are never parsed, and a batch is encoded once for all its retries."""

    payloads: list[bytes]  # serialized UsageRecords
    request: bytes  # the serialized ReportRequest holding them
    spool_entries: int | None  # entries of the claimed segment it covers; None for a batch from memory


class UsageReporter:
    """Delivers usage records to a `tollgate.stats.v1.StatsService` without slowing or failing a request.

    `start` it once, `submit` from code running on the same event loop (it is not thread-safe), `close` it at
    shutdown after the last request has finished. `submit` serializes the record at once: later changes to the
    message are not seen.
    """

    def __init__(
        self,
        config: StatsConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._room = config.buffer  # zero once closed: late records go straight to the spool
        self._full_batch = max(1, min(config.max_batch, config.buffer))  # a batch that need not wait for the interval
        # Serialized at once: ~300 bytes a record instead of ~3 KB for a live message (nested messages, a map).
        self._queue: deque[tuple[float, bytes]] = deque()
        self._inflight: _Batch | None = None  # the memory batch being sent, kept across retries
        self._counts = ReporterCounters()
        self._spool = Spool(config.spool_dir, config.spool_max_bytes)
        self._claim: Segment | None = None
        self._claim_pos = 0
        self._next_scan = 0.0
        self._replay_at = 0.0  # after a rejected batch, the spool waits before it is replayed again
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._report_call: grpc.aio.UnaryUnaryMultiCallable[bytes, stats_pb2.ReportResponse] | None = None
        self._state = _State.UP
        self._down_since = 0.0
        self._spilling = False
        self._closed = False
        self._next_drop_log = -float("inf")
        self.on_report: ReportObserver | None = None

    @property
    def counters(self) -> ReporterCounters:
        """A snapshot of the counters."""
        inflight = len(self._inflight.payloads) if self._inflight is not None else 0
        return replace(self._counts, pending=len(self._queue) + inflight)

    @property
    def spool_bytes(self) -> int:
        """Bytes of usage records waiting in this process's spool."""
        return self._spool.bytes_used

    async def start(self) -> None:
        """Open the spool and the channel, and start the background task."""
        if self._task is not None:
            return
        self._spool.open()
        self._channel = open_channel(self._config.server, self._config.tls, _channel_options(self._config))
        # Called with the request already serialized (see _Batch); the answer is parsed as usual.
        self._report_call = self._channel.unary_unary(
            _REPORT, request_serializer=_as_is, response_deserializer=stats_pb2.ReportResponse.FromString
        )
        self._task = asyncio.create_task(self._run(), name="usage-reporter")

    def submit(self, record: stats_pb2.UsageRecord) -> None:
        """Hand over one record: O(1), never blocks, never raises (a record that cannot be kept is counted)."""
        self._counts.submitted += 1
        try:
            payload = record.SerializeToString()
        except Exception:  # never raise into a request's path: the record is counted as dropped instead
            log.exception("usage records: cannot serialize a record")
            self._drop(1)
            return
        queue = self._queue
        if len(queue) < self._room:
            queue.append((self._clock(), payload))
            size = len(queue)
            if size in (1, self._full_batch):
                self._wake.set()  # a deadline to start, or a full batch to send
            return
        if not self._spilling:
            self._start_spilling()
        self._spill(payload)

    async def close(self) -> None:
        """Deliver what memory holds within `config.timeout`, spool (fsync) the rest, stop; never raises.

        Records submitted after it go straight to the spool, into a segment this process holds until it exits or
        `close` is called again.
        """
        if self._closed:
            self._spool.close()
            return
        self._closed = True
        self._room = 0
        deadline = self._clock() + self._config.timeout
        try:
            if self._task is not None:
                self._task.cancel()
                await asyncio.wait([self._task])  # unlike awaiting it, leaves a cancellation of close() itself alone
                self._task = None
            await self._final_flush(deadline)
        except Exception:  # close must not fail a shutdown: what memory holds is spooled below
            log.exception("usage reporter: error during the final flush")
        finally:
            await self._shut_down()

    async def _shut_down(self) -> None:
        left = self._spool_memory()
        if self._claim is not None:
            self._spool.release(self._claim)
            self._claim = None
        self._spool.close()
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        c = self._counts
        log.info(
            "usage reporter closed: %d submitted, %d delivered, %d duplicates, %d spooled (%d at close), %d dropped, "
            "%d corrupt",
            c.submitted,
            c.delivered,
            c.duplicates,
            c.spooled,
            left,
            c.dropped,
            c.corrupt,
        )

    async def _final_flush(self, deadline: float) -> None:
        while self._report_call is not None and (self._inflight is not None or self._queue):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            batch = self._memory_batch()
            result = await self._report(batch.request, remaining)
            if isinstance(result, grpc.aio.AioRpcError):
                log.warning("usage reporter: final flush stopped (%s); the rest goes to the spool", result.code().name)
                return
            self._delivered(batch, result)

    def _spool_memory(self) -> int:
        """Move every record held in memory to the spool; how many there were."""
        payloads = self._inflight.payloads if self._inflight is not None else []
        self._inflight = None
        payloads.extend(payload for _, payload in self._queue)
        self._queue.clear()
        for payload in payloads:
            self._spill(payload)
        return len(payloads)

    def _start_spilling(self) -> None:
        self._spilling = True
        if self._closed:
            log.info("usage reporter closed: later records go to the spool in %s", self._spool.directory)
        else:
            log.warning("usage records: memory buffer (%d) full, spilling to %s", self._room, self._spool.directory)

    def _spill(self, payload: bytes) -> None:
        if self._spool.append(payload):
            self._counts.spooled += 1
        else:
            self._drop(1)

    def _drop(self, count: int) -> None:
        self._counts.dropped += count
        now = self._clock()
        if now >= self._next_drop_log:
            self._next_drop_log = now + _DROP_LOG_INTERVAL
            log.warning(
                "usage records dropped: %d so far (spool %s: %s)",
                self._counts.dropped,
                self._spool.directory,
                self._spool.last_error,
            )

    # The background task.

    async def _run(self) -> None:
        while True:
            try:
                self._spool.sync()
                batch = self._next_batch()
                if batch is None:
                    await self._wait(self._wait_time())
                else:
                    await self._deliver(batch)
            except Exception:  # a bug must not stop delivery for good: what is kept is retried on the next turn
                log.exception("usage reporter: unexpected error")
                await self._sleep(self._config.retry_max)

    def _next_batch(self) -> _Batch | None:
        self._wake.clear()
        now = self._clock()
        queue = self._queue
        if not queue and not self._closed:
            self._spilling = False
        due = bool(queue) and (len(queue) >= self._full_batch or queue[0][0] + self._config.flush_interval <= now)
        if self._inflight is not None or due:
            return self._memory_batch()
        if now >= self._replay_at:
            return self._spool_batch(now)
        return None

    def _wait_time(self) -> float:
        now = self._clock()
        deadline = max(self._replay_at, self._next_scan)
        if self._queue:
            deadline = min(deadline, self._queue[0][0] + self._config.flush_interval)
        return max(_MIN_WAIT, deadline - now)

    async def _wait(self, seconds: float) -> None:
        """Until `submit` wakes the task or `seconds` pass (with the injected sleep, so tests control time)."""
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def _memory_batch(self) -> _Batch:
        if self._inflight is None:
            queue = self._queue
            payloads: list[bytes] = []
            size = 0
            # Bounded in bytes too: a server refuses a message over its limit (4 MiB by gRPC's default) for good.
            while queue and len(payloads) < self._config.max_batch:
                size += len(queue[0][1])
                if payloads and size > _MAX_BATCH_BYTES:
                    break
                payloads.append(queue.popleft()[1])
            self._inflight = _Batch(payloads, encode_report_request(payloads), None)
        return self._inflight

    def _spool_batch(self, now: float) -> _Batch | None:
        if self._claim is None and not self._claim_next(now):
            return None
        assert self._claim is not None
        payloads: list[bytes] = []
        size = 0
        for payload in self._claim.entries[self._claim_pos : self._claim_pos + self._config.max_batch]:
            size += len(payload)
            if payloads and size > _MAX_BATCH_BYTES:
                break
            payloads.append(payload)
        return _Batch(payloads, encode_report_request(payloads), len(payloads))

    def _claim_next(self, now: float) -> bool:
        """Claim the oldest segment with records to replay, sealing our own active one when nothing else waits."""
        if now < self._next_scan:
            return False
        self._next_scan = now + max(self._config.flush_interval, _MIN_SCAN_INTERVAL)
        for _ in range(_EMPTY_SEGMENTS_PER_SCAN):
            segment = self._spool.claim()
            if segment is None and self._spool.active_records:
                self._spool.seal()
                segment = self._spool.claim()
            if segment is None:
                return False
            self._counts.corrupt += segment.torn
            if segment.entries:
                self._claim, self._claim_pos = segment, 0
                return True
            self._spool.delete(segment)
        return False

    async def _deliver(self, batch: _Batch) -> None:
        """Send one batch until it is stored or rejected, backing off while the server is unavailable."""
        attempt = 0
        while True:
            started = time.perf_counter()
            result = await self._report(batch.request, self._config.timeout)
            if self.on_report is not None:
                self.on_report(batch.payloads, started, result)
            if not isinstance(result, grpc.aio.AioRpcError):
                self._delivered(batch, result)
                return
            if result.code() not in _RETRYABLE:
                self._rejected(batch, result)
                return
            self._unavailable(result, len(batch.payloads))
            self._counts.retries += 1
            self._spool.sync()  # an outage is when the spool holds everything: segments rotated meanwhile go to disk
            await self._sleep(self._backoff(attempt))
            attempt += 1

    async def _report(self, request: bytes, deadline: float) -> stats_pb2.ReportResponse | grpc.aio.AioRpcError:
        assert self._report_call is not None
        try:
            response: stats_pb2.ReportResponse = await self._report_call(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            return exc
        return response

    def _backoff(self, attempt: int) -> float:
        """Exponential from ~100 ms, capped at retry_max, with jitter so many gateways do not retry in step."""
        ceiling = min(self._config.retry_max, _FIRST_BACKOFF * 2.0 ** min(attempt, 32))
        return ceiling * (0.5 + self._rng.random() / 2)

    def _delivered(self, batch: _Batch, response: stats_pb2.ReportResponse) -> None:
        self._counts.delivered += response.accepted
        self._counts.duplicates += response.duplicates
        if self._state is _State.DOWN:
            log.info(
                "stats server %s answering again after %.1fs", self._config.server, self._clock() - self._down_since
            )
        elif self._state is _State.REJECTING:
            log.info("stats server %s accepting batches again", self._config.server)
        self._state = _State.UP
        self._done_with(batch)

    def _rejected(self, batch: _Batch, error: grpc.aio.AioRpcError) -> None:
        self._counts.rejected += len(batch.payloads)
        if batch.spool_entries is not None:
            # A replay meeting the answer its records already got: nothing new to say.
            log.debug("stats server still rejects spooled records (%s)", error.code().name)
        elif self._state is not _State.REJECTING:
            self._state = _State.REJECTING
            log.error(
                "stats server %s rejected a batch of %d records (%s: %s); it goes to the spool for a later replay",
                self._config.server,
                len(batch.payloads),
                error.code().name,
                _details(error),
            )
        # Replaying the spool now would only meet the same answer: wait as long as for a server that is down.
        self._replay_at = self._clock() + self._config.retry_max
        if batch.spool_entries is not None:
            # Already safe on disk: let go of the segment, unchanged, to be replayed later. Copying it would need
            # room a full spool does not have, and the original would be deleted whether or not the copy fitted.
            self._release_claim()
            return
        for payload in batch.payloads:
            self._spill(payload)
        self._done_with(batch)

    def _unavailable(self, error: grpc.aio.AioRpcError, size: int) -> None:
        if self._state is not _State.DOWN:
            self._down_since = self._clock()
            log.warning(
                "stats server %s unavailable (%s: %s); retrying a batch of %d records, usage records queue meanwhile",
                self._config.server,
                error.code().name,
                _details(error),
                size,
            )
        self._state = _State.DOWN

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._spool.release(self._claim)
            self._claim = None

    def _done_with(self, batch: _Batch) -> None:
        """The batch is stored, or safely in the spool again: forget it, and its segment once all of it is."""
        if batch.spool_entries is None:
            self._inflight = None
            return
        claim = self._claim
        assert claim is not None
        self._claim_pos += batch.spool_entries
        if self._claim_pos >= len(claim.entries):
            self._spool.delete(claim)
            self._claim = None
            self._next_scan = 0.0  # look for the next segment right away


def _channel_options(config: StatsConfig) -> list[tuple[str, int]]:
    # Reconnect on our own retry cadence, not grpc's (which backs off to 2 minutes), so recovery is seen promptly.
    backoff_ms = max(100, int(config.retry_max * 1000))
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


def encode_report_request(payloads: Iterable[bytes]) -> bytes:
    """A serialized ReportRequest of serialized UsageRecords: each one is field 1, length-delimited."""
    parts: list[bytes] = []
    for payload in payloads:
        size = len(payload)
        if size < 0x80:
            parts.append(bytes((0x0A, size)))
        elif size < 0x4000:
            parts.append(bytes((0x0A, (size & 0x7F) | 0x80, size >> 7)))
        else:
            parts.append(b"\x0a" + _varint(size))
        parts.append(payload)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _as_is(request: bytes) -> bytes:
    return request


def _details(error: grpc.aio.AioRpcError) -> str:
    return (error.details() or "")[:_DETAILS_MAX]
