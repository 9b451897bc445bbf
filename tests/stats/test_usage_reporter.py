"""UsageReporter against a real grpc.aio StatsService: batching, outages, the spool, rejections, a hanging server."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from gateway.config import StatsConfig
from gateway.stats import UsageReporter
from gateway.stats.spool_format import decode
from gateway.stats.wire import encode_report_request
from tests.stats.fake_stats import FakeStatsServer, free_port
from tollgate.stats.v1 import stats_pb2


def record(i: int | str) -> stats_pb2.UsageRecord:
    return stats_pb2.UsageRecord(
        request_id=f"req-{i}",
        key_id="key_1",
        team="search",
        operation="chat",
        requested_model="gpt-4o-mini",
        input_tokens=120,
        output_tokens=40,
        cost_usd=0.0001,
        outcome=stats_pb2.OUTCOME_COMPLETED,
    )


def config(address: str, tmp_path: Path, **overrides: object) -> StatsConfig:
    base = StatsConfig(
        server=address,
        flush_interval=0.05,
        max_batch=100,
        buffer=10_000,
        timeout=1.0,
        retry_max=0.2,
        spool_dir=str(tmp_path / "spool"),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]  # test overrides are the fields' own types


def segments(tmp_path: Path) -> list[str]:
    return glob.glob(str(tmp_path / "spool" / "*.spool"))


def spool_bytes(tmp_path: Path) -> int:
    return sum(os.path.getsize(p) for p in segments(tmp_path))


def tear_tail(path: str, size: int) -> None:
    """What a crash in the middle of the last entry leaves."""
    os.truncate(path, os.path.getsize(path) - size)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def server() -> AsyncIterator[FakeStatsServer]:
    fake = FakeStatsServer()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def reporters() -> AsyncIterator[list[UsageReporter]]:
    """Reporters a test made; closed at teardown (closing twice is harmless)."""
    made: list[UsageReporter] = []
    yield made
    for reporter in made:
        await reporter.close()


async def started(made: list[UsageReporter], cfg: StatsConfig, **kwargs: object) -> UsageReporter:
    reporter = UsageReporter(cfg, **kwargs)  # type: ignore[arg-type]
    made.append(reporter)
    await reporter.start()
    return reporter


async def test_batches_by_size(server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path) -> None:
    reporter = await started(reporters, config(server.address, tmp_path, flush_interval=30.0))
    for i in range(300):
        reporter.submit(record(i))
    await eventually(lambda: len(server.service.store) == 300)
    assert server.service.batches == [100, 100, 100]
    await eventually(lambda: reporter.counters.delivered == 300)  # the store fills just before the answer
    assert reporter.counters.pending == 0


async def test_batches_by_interval(server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path) -> None:
    reporter = await started(reporters, config(server.address, tmp_path, flush_interval=0.2))
    start = time.monotonic()
    for i in range(5):
        reporter.submit(record(i))
    await asyncio.sleep(0.1)
    assert server.service.batches == []
    await eventually(lambda: len(server.service.store) == 5)
    assert time.monotonic() - start >= 0.19
    assert server.service.batches == [5]


async def test_outage_of_1000_records_then_each_delivered_once(reporters: list[UsageReporter], tmp_path: Path) -> None:
    server = FakeStatsServer(free_port())
    reporter = await started(reporters, config(server.address, tmp_path))
    for i in range(1000):
        reporter.submit(record(i))
    await eventually(lambda: reporter.counters.retries >= 3)
    assert reporter.counters.delivered == 0
    await server.start()
    try:
        await eventually(lambda: len(server.service.store) == 1000)
        await eventually(lambda: reporter.counters.pending == 0)
        assert set(server.service.store) == {f"req-{i}" for i in range(1000)}
        assert server.service.accepted == reporter.counters.delivered == 1000
        assert server.service.duplicates == reporter.counters.duplicates == 0
        assert sum(server.service.batches) == 1000  # not even a harmless resend
        assert reporter.counters.spooled == reporter.counters.dropped == 0
    finally:
        await server.stop()


async def test_server_stopped_and_restarted_on_the_same_port(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    reporter = await started(reporters, config(server.address, tmp_path))
    for i in range(50):
        reporter.submit(record(i))
    await eventually(lambda: len(server.service.store) == 50)
    await server.stop()
    for i in range(50, 250):
        reporter.submit(record(i))
    await eventually(lambda: reporter.counters.retries >= 2)
    await server.start()
    await eventually(lambda: len(server.service.store) == 250)
    await eventually(lambda: reporter.counters.delivered == 250)
    assert server.service.accepted == 250


async def test_memory_full_spills_to_the_spool_then_delivers(reporters: list[UsageReporter], tmp_path: Path) -> None:
    server = FakeStatsServer(free_port())
    reporter = await started(reporters, config(server.address, tmp_path, buffer=50))
    for i in range(500):
        reporter.submit(record(i))
    counters = reporter.counters
    assert counters.spooled >= 350
    assert counters.spooled + counters.pending == 500
    assert counters.dropped == 0
    await server.start()
    try:
        await eventually(lambda: len(server.service.store) == 500)
        await eventually(lambda: not segments(tmp_path))
        await eventually(lambda: reporter.counters.delivered == 500)
        assert server.service.accepted == 500
    finally:
        await server.stop()


async def test_close_with_server_down_spools_all_and_a_new_reporter_delivers_it(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    first = await started(reporters, config(f"127.0.0.1:{free_port()}", tmp_path))
    for i in range(300):
        first.submit(record(i))
    start = time.monotonic()
    await first.close()
    assert time.monotonic() - start < 1.5
    assert first.counters.spooled == 300
    assert first.counters.pending == first.counters.dropped == 0
    first.submit(record("late"))  # a request that finished after close: straight to the spool
    assert first.counters.spooled == 301
    await first.close()  # again: seals what came late
    assert segments(tmp_path)

    second = await started(reporters, config(server.address, tmp_path))
    await eventually(lambda: len(server.service.store) == 301)
    await eventually(lambda: not segments(tmp_path))
    await eventually(lambda: second.counters.delivered == 301)
    assert server.service.accepted == 301
    assert second.counters.duplicates == server.service.duplicates == 0


async def test_close_delivers_what_memory_holds(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    reporter = await started(reporters, config(server.address, tmp_path, flush_interval=30.0))
    for i in range(250):
        reporter.submit(record(i))
    await reporter.close()
    assert len(server.service.store) == 250
    assert reporter.counters.spooled == 0
    assert not segments(tmp_path)


async def test_torn_tail_loses_only_the_torn_record(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    first = await started(reporters, config(f"127.0.0.1:{free_port()}", tmp_path))
    for i in range(300):
        first.submit(record(i))
    await first.close()
    [segment] = segments(tmp_path)
    tear_tail(segment, 10)

    second = await started(reporters, config(server.address, tmp_path))
    await eventually(lambda: len(server.service.store) == 299)
    await eventually(lambda: not segments(tmp_path))
    assert second.counters.corrupt == 1
    await eventually(lambda: second.counters.delivered == 299)
    assert len(set(server.service.store) ^ {f"req-{i}" for i in range(300)}) == 1


async def test_two_reporters_share_a_spool_dir(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    down = await started(reporters, config(f"127.0.0.1:{free_port()}", tmp_path, buffer=10))
    for i in range(100):
        down.submit(record(f"a{i}"))
    assert down.counters.spooled >= 80

    up = await started(reporters, config(server.address, tmp_path))
    for i in range(10):
        up.submit(record(f"b{i}"))
    await eventually(lambda: len(server.service.store) == 10)
    await asyncio.sleep(0.3)  # several scans of the spool dir: the other's active segment stays untouched
    assert set(server.service.store) == {f"req-b{i}" for i in range(10)}
    assert len(segments(tmp_path)) == 1

    await down.close()  # its server is still down: everything lands in the spool, sealed
    await eventually(lambda: len(server.service.store) == 110)
    await eventually(lambda: not segments(tmp_path))
    assert server.service.accepted == 110
    assert server.service.duplicates == 0


async def test_spool_over_its_bound_drops_and_counts(
    reporters: list[UsageReporter], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(f"127.0.0.1:{free_port()}", tmp_path, buffer=10, spool_max_bytes=2_000)
    reporter = await started(reporters, cfg)
    with caplog.at_level(logging.WARNING, logger="tollgate.stats"):
        for i in range(200):
            reporter.submit(record(i))
    counters = reporter.counters
    assert counters.dropped > 100
    assert counters.spooled > 0
    assert counters.spooled + counters.dropped + counters.pending == 200
    assert spool_bytes(tmp_path) <= 2_000
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1  # rate-limited: one line per 10 s, with the running count
    assert "over spool_max_bytes" in drops[0].getMessage()


async def test_rejected_batch_goes_to_the_spool_and_later_records_flow(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.service.reject_ids = {"req-poison"}
    reporter = await started(reporters, config(server.address, tmp_path, max_batch=10))
    with caplog.at_level(logging.ERROR, logger="tollgate.stats"):
        reporter.submit(record("poison"))
        for i in range(9):
            reporter.submit(record(i))
        await eventually(lambda: reporter.counters.spooled == 10)
        for i in range(9, 29):
            reporter.submit(record(i))
        await eventually(lambda: len(server.service.store) == 20)
        assert reporter.counters.retries == 0
        await asyncio.sleep(0.5)  # the spool is replayed after retry_max, and rejected again, quietly
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1
    assert reporter.counters.rejected >= 20  # the first batch, and at least one replay of it

    server.service.reject_ids = set()  # the fix
    await eventually(lambda: len(server.service.store) == 30)
    await eventually(lambda: not segments(tmp_path))
    await eventually(lambda: reporter.counters.delivered == 30)
    assert server.service.accepted == 30


async def test_submit_never_blocks_or_raises_when_the_server_hangs(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    server.service.delay = 5.0
    reporter = await started(reporters, config(server.address, tmp_path, timeout=0.2, buffer=1_000))
    worst = total = 0.0
    for i in range(5_000):
        start = time.perf_counter()
        reporter.submit(record(i))
        took = time.perf_counter() - start
        worst, total = max(worst, took), total + took
        if i % 500 == 0:
            await asyncio.sleep(0.05)  # let the background task run and hit its deadlines
    # Nothing waits on the server (5 s) or on a deadline (0.2 s); the bound on the worst leaves room for a GC pause.
    assert total < 0.25
    assert worst < 0.05
    assert reporter.counters.retries >= 1
    start = time.monotonic()
    await reporter.close()
    assert time.monotonic() - start < 1.0
    counters = reporter.counters
    assert counters.spooled == 5_000  # nothing was ever stored: all of it is on disk
    assert counters.dropped == counters.pending == 0


async def test_backoff_is_exponential_with_jitter_and_capped(reporters: list[UsageReporter], tmp_path: Path) -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    cfg = config(f"127.0.0.1:{free_port()}", tmp_path, max_batch=1, retry_max=1.0)
    reporter = await started(reporters, cfg, sleep=sleep, rng=random.Random(7))
    reporter.submit(record(0))
    await eventually(lambda: len(delays) >= 10)
    for attempt, delay in enumerate(delays[:10]):
        ceiling = min(1.0, 0.1 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[:10])) == 10  # jittered
    assert reporter.counters.retries >= 10


async def test_non_retryable_status_list(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    server.service.fail = grpc.StatusCode.UNAUTHENTICATED
    reporter = await started(reporters, config(server.address, tmp_path, max_batch=5))
    for i in range(5):
        reporter.submit(record(i))
    await eventually(lambda: reporter.counters.spooled == 5)
    assert reporter.counters.retries == 0
    server.service.fail = grpc.StatusCode.RESOURCE_EXHAUSTED
    for i in range(5, 10):
        reporter.submit(record(i))
    await eventually(lambda: reporter.counters.retries >= 2)
    assert reporter.counters.spooled == 5
    server.service.fail = None
    await eventually(lambda: len(server.service.store) == 10)


def test_report_request_encoding_matches_protobuf() -> None:
    records = [
        stats_pb2.UsageRecord(request_id="a"),  # a one-byte length
        record(1),  # two bytes
        stats_pb2.UsageRecord(request_id="b", labels={"big": "x" * 20_000}),  # three bytes
    ]
    data = encode_report_request([r.SerializeToString() for r in records])
    assert stats_pb2.ReportRequest.FromString(data) == stats_pb2.ReportRequest(records=records)
    assert encode_report_request([]) == b""


async def test_batches_stay_under_a_megabyte_however_large_the_records(
    server: FakeStatsServer, tmp_path: Path, reporters: list[UsageReporter]
) -> None:
    """Huge labels must not make a message a server refuses for good (gRPC's default limit is 4 MiB)."""
    reporter = UsageReporter(config(server.address, tmp_path, max_batch=500, buffer=20))
    reporters.append(reporter)
    await reporter.start()
    big = {"note": "x" * 300_000}
    for i in range(40):  # 20 stay in memory, 20 spill to the spool
        r = record(i)
        r.labels.update(big)
        reporter.submit(r)
    await eventually(lambda: len(server.service.store) == 40, within=10)
    assert max(server.service.batches) <= 3  # 3 records of 300 KB fit under 1 MiB, 4 do not
    assert reporter.counters.dropped == 0


async def test_write_ahead_puts_each_record_on_disk_before_submit_returns(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    server.service.fail = grpc.StatusCode.UNAVAILABLE
    reporter = await started(reporters, config(server.address, tmp_path, flush_interval=10.0))
    for i in range(3):
        reporter.submit(record(i))
        # What a SIGKILL right now would leave for the next start: every record submitted so far.
        found = [stats_pb2.UsageRecord.FromString(p).request_id for s in segments(tmp_path) for p in read(s)]
        assert found == [f"req-{j}" for j in range(i + 1)]
    assert reporter.counters.journaled == 3
    server.service.fail = None
    await reporter.close()  # delivered at close: marked in the journal, which is then deleted
    assert len(server.service.store) == 3
    assert segments(tmp_path) == []


async def test_without_write_ahead_memory_records_are_not_on_disk(
    reporters: list[UsageReporter], tmp_path: Path
) -> None:
    reporter = await started(
        reporters, config(f"127.0.0.1:{free_port()}", tmp_path, write_ahead=False, flush_interval=10.0)
    )
    reporter.submit(record(1))
    assert segments(tmp_path) == []
    assert reporter.counters.journaled == 0


def read(path: str) -> list[bytes]:
    with open(path, "rb") as file:
        return decode(file.read()).entries


async def test_fsync_interval_zero_syncs_each_turn_without_spinning(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))

    reporter = await started(
        reporters, config(server.address, tmp_path, fsync_interval=0.0, flush_interval=10.0), sleep=sleep
    )
    reporter.submit(record(1))
    await asyncio.sleep(0.2)
    assert not reporter._spool.needs_sync  # synced on the task's first turn after the write
    assert len(sleeps) < 30  # idle, it waits for the flush interval, not for the next fsync


CRASHING_CHILD = """
import asyncio, os, signal, sys
from gateway.config import StatsConfig
from gateway.stats import UsageReporter
from tollgate.stats.v1 import stats_pb2

async def main():
    config = StatsConfig(server=sys.argv[1], spool_dir=sys.argv[2], max_batch=100, flush_interval=10.0)
    reporter = UsageReporter(config)
    await reporter.start()
    # One segment: the first 100 are a full batch, sent at once, stored and acknowledged in the segment; the other
    # 50 wait for the flush interval when the process is killed.
    for i in range(150):
        reporter.submit(stats_pb2.UsageRecord(request_id=f"req-{i}"))
    while reporter.counters.delivered < 100:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_sigkill_loses_nothing_and_the_next_start_resends_nothing_stored(
    server: FakeStatsServer, reporters: list[UsageReporter], tmp_path: Path
) -> None:
    spool = str(tmp_path / "spool")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CRASHING_CHILD, server.address, spool)
    assert await asyncio.wait_for(child.wait(), 20) == -signal.SIGKILL
    assert len(server.service.store) == 100
    await started(reporters, config(server.address, tmp_path))  # the same spool
    await eventually(lambda: len(server.service.store) == 150)
    assert server.service.duplicates == 0  # the first 100 were acknowledged in the segment: not sent again
    await eventually(lambda: segments(tmp_path) == [])
