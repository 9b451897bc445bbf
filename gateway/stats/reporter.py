"""`UsageReporter`: one usage record per request, from the routing engine to the external `StatsService`.

`submit` appends the record to the on-disk spool (the write-ahead journal: one `write` call, so a killed process
loses nothing) and to a bounded in-memory queue; one background task sends batches with `Report`, marks what the
server stored in the journal, retries while the server is down, and replays the spool when it answers. Delivery is
at least once; the server is idempotent on request_id, so each record is counted once. The wire encoding is in
`wire`, the queue and batches in `batches`, sending and retrying in `delivery`, the files in `spool`. See
docs/usage-reporting.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace

import grpc

from gateway.config.model import StatsConfig
from gateway.stats.batches import Batch, RecordQueue, spool_batch
from gateway.stats.delivery import Clock, Delivery, ReportObserver, Sleep
from gateway.stats.spool import OwnSegment, Segment, Slot, Spool
from tollgate.stats.v1 import stats_pb2

__all__ = ["ReportObserver", "ReporterCounters", "UsageReporter"]

log = logging.getLogger("tollgate.stats")

_DROP_LOG_INTERVAL = 10.0
_MIN_WAIT = 0.001
_EMPTY_SEGMENTS_PER_SCAN = 100
_WRITE_AHEAD_CLOSE = 0.3  # the final flush's budget when every record is in the spool already
_MIN_SCAN_INTERVAL = 0.05  # the spool directory is listed at most this often, however small flush_interval is


@dataclass(slots=True)
class ReporterCounters:
    """What became of the records handed to a `UsageReporter` since it was made."""

    submitted: int = 0
    journaled: int = 0  # written to the spool as they were submitted (stats.write_ahead)
    delivered: int = 0  # stored for the first time, by the server's count (ReportResponse.accepted)
    duplicates: int = 0  # already stored, by the server's count: a batch resent after a lost answer, a replay
    spooled: int = 0  # left in the spool for a later replay: memory full, a rejected batch, or in memory at close
    dropped: int = 0  # lost: the spool was over spool_max_bytes or unwritable, and memory full
    corrupt: int = 0  # lost: torn or corrupt spool entries skipped on replay (a crash mid-write)
    pending: int = 0  # in memory now: queued, or in the batch being sent
    retries: int = 0  # Report calls repeated after a retryable failure
    rejected: int = 0  # records in batches refused with a non-retryable status (moved to the spool), replays too


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
        self._clock = clock
        self._sleep = sleep
        self._queue = RecordQueue(config.buffer)
        self._full_batch = max(1, min(config.max_batch, config.buffer))  # a batch that need not wait for the interval
        self._inflight: Batch | None = None  # the memory batch being sent, kept across retries
        self._counts = ReporterCounters()
        self._spool = Spool(config.spool_dir, config.spool_max_bytes)
        self._delivery = Delivery(config, sleep=sleep, rng=rng or random.Random(), clock=clock)
        self._claim: Segment | None = None
        self._claim_pos = 0
        self._next_scan = 0.0
        self._next_sync = 0.0
        self._replay_at = 0.0  # after a rejected batch, the spool waits before it is replayed again
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._spilling = False
        self._closed = False
        self._next_drop_log = -float("inf")
        self._next_journal_log = -float("inf")

    @property
    def on_report(self) -> ReportObserver | None:
        """Told about each Report call once it is answered (tracing)."""
        return self._delivery.on_report

    @on_report.setter
    def on_report(self, observer: ReportObserver | None) -> None:
        self._delivery.on_report = observer

    @property
    def counters(self) -> ReporterCounters:
        """A snapshot of the counters."""
        inflight = len(self._inflight.payloads) if self._inflight is not None else 0
        return replace(self._counts, pending=len(self._queue) + inflight, retries=self._delivery.retries)

    @property
    def spool_bytes(self) -> int:
        """Bytes of usage records waiting in this process's spool."""
        return self._spool.bytes_used

    async def start(self) -> None:
        """Open the spool and the channel, and start the background task."""
        if self._task is not None:
            return
        self._spool.open()
        self._delivery.connect()
        self._task = asyncio.create_task(self._run(), name="usage-reporter")

    def submit(self, record: stats_pb2.UsageRecord) -> None:
        """Hand over one record: O(1), never blocks, never raises (a record that cannot be kept is counted).

        With `write_ahead` the record is in the spool file (the page cache) when this returns.
        """
        self._counts.submitted += 1
        try:
            payload = record.SerializeToString()
        except Exception:  # never raise into a request's path: the record is counted as dropped instead
            log.exception("usage records: cannot serialize a record")
            self._drop(1)
            return
        slot = self._journal(payload) if self._config.write_ahead and not self._closed else None
        size = self._queue.push(self._clock(), payload, slot)
        if size:
            if size in (1, self._full_batch):
                self._wake.set()  # a deadline to start, or a full batch to send
            return
        if not self._spilling:
            self._start_spilling()
        if slot is not None:
            self._leave_in_spool(slot)  # already on disk: replayed from there
        else:
            self._spill(payload)

    async def close(self) -> None:
        """Deliver what memory holds within `config.timeout` (0.3 s at most with `write_ahead`), leave the rest in
        the spool (fsynced), stop; never raises.

        Records submitted after it go straight to the spool, into a segment this process holds until it exits or
        `close` is called again.
        """
        if self._closed:
            self._spool.close()
            return
        self._closed = True
        self._queue.room = 0
        # Written ahead, what memory holds is safe in the spool already: a short try, then the next start sends it.
        budget = min(self._config.timeout, _WRITE_AHEAD_CLOSE) if self._config.write_ahead else self._config.timeout
        deadline = self._clock() + budget
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
        self._release_claim()
        self._spool.close()
        await self._delivery.close()
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
        while self._delivery.open and (self._inflight is not None or self._queue):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            batch = self._memory_batch()
            result = await self._delivery.report(batch.request, remaining)
            if isinstance(result, grpc.aio.AioRpcError):
                log.warning("usage reporter: final flush stopped (%s); the rest goes to the spool", result.code().name)
                return
            self._delivered(batch, result)

    def _spool_memory(self) -> int:
        """Leave every record held in memory in the spool (writing those not yet there); how many there were."""
        held: list[tuple[bytes, Slot | None]] = []
        if self._inflight is not None:
            held.extend(zip(self._inflight.payloads, self._inflight.slots, strict=True))
            self._inflight = None
        held.extend(self._queue.drain())
        for payload, slot in held:
            if slot is not None:
                self._leave_in_spool(slot)
            else:
                self._spill(payload)
        return len(held)

    def _journal(self, payload: bytes) -> Slot | None:
        slot = self._spool.write(payload, held=True)
        if slot is not None:
            self._counts.journaled += 1
            return slot
        now = self._clock()
        if now >= self._next_journal_log:  # kept in memory all the same: delivered unless the process dies first
            self._next_journal_log = now + _DROP_LOG_INTERVAL
            log.warning("usage records: cannot write ahead to %s (%s)", self._spool.directory, self._spool.last_error)
        return None

    def _leave_in_spool(self, slot: Slot) -> None:
        self._spool.let_go(slot.segment, 1)
        self._counts.spooled += 1

    def _start_spilling(self) -> None:
        self._spilling = True
        if self._closed:
            log.info("usage reporter closed: later records go to the spool in %s", self._spool.directory)
        else:
            room, directory = self._config.buffer, self._spool.directory
            log.warning("usage records: memory buffer (%d) full, spilling to %s", room, directory)

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
                self._sync_due()
                batch = self._next_batch()
                if batch is None:
                    await self._wait(self._wait_time())
                else:
                    await self._deliver(batch)
            except Exception:  # a bug must not stop delivery for good: what is kept is retried on the next turn
                log.exception("usage reporter: unexpected error")
                await self._sleep(self._config.retry_max)

    def _sync_due(self) -> None:
        """Fsync the spool every `fsync_interval`: the most a power loss can take from records already written."""
        now = self._clock()
        if now >= self._next_sync:
            self._next_sync = now + self._config.fsync_interval
            self._spool.sync()

    def _next_batch(self) -> Batch | None:
        self._wake.clear()
        now = self._clock()
        queue = self._queue
        if not queue and not self._closed:
            self._spilling = False
        due = bool(queue) and (len(queue) >= self._full_batch or queue.oldest() + self._config.flush_interval <= now)
        if self._inflight is not None or due:
            return self._memory_batch()
        if now >= self._replay_at:
            return self._spool_batch(now)
        return None

    def _wait_time(self) -> float:
        now = self._clock()
        deadline = max(self._replay_at, self._next_scan)
        if self._spool.needs_sync:
            deadline = min(deadline, self._next_sync)
        if self._queue:
            deadline = min(deadline, self._queue.oldest() + self._config.flush_interval)
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

    def _memory_batch(self) -> Batch:
        if self._inflight is None:
            self._inflight = self._queue.take(self._config.max_batch)
        return self._inflight

    def _spool_batch(self, now: float) -> Batch | None:
        if self._claim is None and not self._claim_next(now):
            return None
        claim = self._claim
        assert claim is not None
        pos = self._claim_pos
        return spool_batch(claim.entries[pos:], claim.indices[pos:], self._config.max_batch)

    def _claim_next(self, now: float) -> bool:
        """Claim the oldest segment with records to replay, sealing our own active one when it holds records memory
        let go of and nothing else waits."""
        if now < self._next_scan:
            return False
        self._next_scan = now + max(self._config.flush_interval, _MIN_SCAN_INTERVAL)
        for _ in range(_EMPTY_SEGMENTS_PER_SCAN):
            segment = self._spool.claim()
            if segment is None and self._spool.active_unheld:
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

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch until it is stored or rejected (backing off while the server is unavailable)."""
        result = await self._delivery.send(batch, self._spool.sync)
        if isinstance(result, grpc.aio.AioRpcError):
            self._rejected(batch)
        else:
            self._delivered(batch, result)

    def _delivered(self, batch: Batch, response: stats_pb2.ReportResponse) -> None:
        self._counts.delivered += response.accepted
        self._counts.duplicates += response.duplicates
        if batch.claimed is None:
            self._inflight = None
            _acknowledge(self._spool, batch.slots)
            return
        claim = self._claim
        assert claim is not None
        self._spool.ack_claimed(claim, batch.claimed)
        self._claim_pos += len(batch.payloads)
        if self._claim_pos >= len(claim.entries):
            self._spool.delete(claim)
            self._claim = None
            self._next_scan = 0.0  # look for the next segment right away

    def _rejected(self, batch: Batch) -> None:
        self._counts.rejected += len(batch.payloads)
        # Replaying the spool now would only meet the same answer: wait as long as for a server that is down.
        self._replay_at = self._clock() + self._config.retry_max
        if batch.from_spool:
            # Already safe on disk: let go of the segment, unchanged, to be replayed later. Copying it would need
            # room a full spool does not have, and the original would be deleted whether or not the copy fitted.
            self._release_claim()
            return
        self._inflight = None
        for payload, slot in zip(batch.payloads, batch.slots, strict=True):
            if slot is not None:
                self._leave_in_spool(slot)
            else:
                self._spill(payload)

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._spool.release(self._claim)
            self._claim = None


def _acknowledge(spool: Spool, slots: list[Slot | None]) -> None:
    """Mark the journaled records of a stored batch in their segments (usually one, at most a few)."""
    groups: dict[OwnSegment, list[int]] = {}
    for slot in slots:
        if slot is not None:
            groups.setdefault(slot.segment, []).append(slot.index)
    for segment, indices in groups.items():
        spool.ack(segment, indices)
