"""`UsageStore`: idempotent inserts, filters, grouping, buckets, ordering, and the SQLite file itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from statssvc.schema import COLUMNS, MIGRATIONS, SCHEMA_VERSION, SchemaError, row_from_record
from statssvc.store import UsageStore
from tests.statssvc.usage_helpers import HOUR, T0, FakeClock, record, seconds, window
from tollgate.stats.v1 import stats_pb2 as pb

MINUTE = 60.0


async def test_a_retried_batch_counts_once(store: UsageStore) -> None:
    batch = [record("a"), record("b"), record("c")]
    assert await store.insert(batch) == (3, 0)
    assert await store.insert(batch) == (0, 3)
    assert await store.insert([record("c"), record("d")]) == (1, 1)
    assert (await store.query(window())).totals.requests == 4


async def test_a_duplicate_inside_one_batch_counts_once(store: UsageStore) -> None:
    first = record("a", input_tokens=10)
    again = record("a", input_tokens=99)  # the first copy wins; the second is a duplicate, not an update
    assert await store.insert([first, again, record("b")]) == (2, 1)
    totals = (await store.query(window())).totals
    assert (totals.requests, totals.input_tokens) == (2, 10)


async def test_an_empty_batch_stores_nothing(store: UsageStore) -> None:
    assert await store.insert([]) == (0, 0)


async def test_a_batch_is_one_transaction(store: UsageStore) -> None:
    # A trigger refuses the second row: the first, already inserted, must be rolled back with it.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.request_id = 'bad'"
            " BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    with pytest.raises(sqlite3.Error):
        await store.insert([record("good"), record("bad")])
    assert await store.get("good") is None
    assert await store.insert([record("good")]) == (1, 0)


async def test_every_field_round_trips(store: UsageStore) -> None:
    sent = record(
        "r1",
        at=T0 + 1.234567,
        key_id="key_123",
        user="alice",
        team="ml",
        operation="chat",
        input_tokens=1000,
        output_tokens=200,
        cached_tokens=300,
        reasoning_tokens=50,
        usage_estimated=True,
        cost_usd=0.001234,
        http_status=499,
        grpc_status=1,
        error_type="client_closed",
        stream=True,
        cache_hit=True,
        attempts=2,
        route="gpt-4o-mini>openai",
        outcome=pb.OUTCOME_CANCELLED,
        labels={"cost_centre": "cc-42", "arm": "b", "ünïcode": "✓"},
        experiment="qwen-trial",
        experiment_arm="treatment",
    )
    sent.time_to_first_token.FromMilliseconds(35)
    await store.insert([sent])
    assert await store.get("r1") == sent


async def test_unset_time_to_first_token_is_null(store: UsageStore) -> None:
    await store.insert([record("r1")])
    got = await store.get("r1")
    assert got is not None and not got.HasField("time_to_first_token")
    with sqlite3.connect(store.path) as conn:
        row = conn.execute("SELECT ttft_ms, outcome, labels FROM usage").fetchone()
    assert row == (None, "OUTCOME_COMPLETED", "{}")


async def test_an_outcome_newer_than_this_code_is_kept(store: UsageStore) -> None:
    await store.insert([record("r1", outcome=7)])
    got = await store.get("r1")
    assert got is not None and got.outcome == 7


async def test_the_file_is_wal_with_a_schema_version(store: UsageStore) -> None:
    await store.insert([record("a")])
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"usage_start_time", "usage_key_id", "usage_user", "usage_team", "usage_requested_model"} <= indexes


async def test_sqlite_runs_on_the_store_thread(store: UsageStore) -> None:
    name = await store._call(lambda: threading.current_thread().name)
    assert name.startswith("usage-store") and name != threading.current_thread().name


async def test_records_survive_reopening(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "usage.db"
    first = await UsageStore.open(path, clock=clock)
    await first.insert([record("a"), record("b")])
    await first.close()
    await first.close()  # closing twice is harmless
    second = await UsageStore.open(path, clock=clock)
    try:
        assert await second.insert([record("b"), record("c")]) == (1, 1)
        assert (await second.query(window())).totals.requests == 3
    finally:
        await second.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="schema version"):
        await UsageStore.open(path)


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = await UsageStore.open(tmp_path / "usage.db")
    await s.close()
    with pytest.raises(RuntimeError, match="closed"):
        await s.insert([record("a")])


async def test_concurrent_inserts_are_serialized(store: UsageStore) -> None:
    batches = [[record(f"r{i}-{j}") for j in range(50)] for i in range(10)]
    results = await asyncio.gather(*(store.insert(b) for b in batches), *(store.insert(b) for b in batches))
    assert sum(accepted for accepted, _ in results) == 500
    assert sum(duplicates for _, duplicates in results) == 500


# Queries


@pytest.fixture
async def sample(store: UsageStore) -> UsageStore:
    """Five records over two users, teams, keys, models and backends."""
    await store.insert(
        [
            record("1", key_id="k1", user="alice", team="ml", input_tokens=100, output_tokens=10, cost_usd=0.5),
            record("2", key_id="k1", user="alice", team="ml", requested_model="gpt-4o", cost_usd=2.0),
            record("3", key_id="k2", user="bob", team="web", input_tokens=7, cached_tokens=3, reasoning_tokens=1),
            record("4", key_id="k2", user="bob", team="web", outcome=pb.OUTCOME_FAILED, backend="azure"),
            record("5", user="carol", at=T0 + 2 * HOUR, cost_usd=0.25, outcome=pb.OUTCOME_FAILED),
        ]
    )
    return store


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"key_id": "k1"}, {"1", "2"}),
        ({"user": "bob"}, {"3", "4"}),
        ({"team": "ml"}, {"1", "2"}),
        ({"model": "gpt-4o"}, {"2"}),
        ({"user": "alice", "model": "gpt-4o-mini"}, {"1"}),
        ({"user": "nobody"}, set()),
        ({"user": "x' OR 1=1 --"}, set()),  # a value is a parameter, never SQL
    ],
)
async def test_filters(sample: UsageStore, filters: dict[str, str], expected: set[str]) -> None:
    total = (await sample.query(pb.QueryUsageRequest(**filters))).totals  # type: ignore[arg-type]  # str fields
    assert total.requests == len(expected)


async def test_the_window_is_start_inclusive_end_exclusive(sample: UsageStore) -> None:
    assert (await sample.query(window(T0, T0 + 2 * HOUR))).totals.requests == 4
    assert (await sample.query(window(T0 + 2 * HOUR, T0 + 3 * HOUR))).totals.requests == 1
    assert (await sample.query(window(T0 + 1, None))).totals.requests == 1
    assert (await sample.query(window(None, T0))).totals.requests == 0


async def test_an_unset_end_is_now(sample: UsageStore, clock: FakeClock) -> None:
    clock.now = T0 + HOUR  # record 5 (at T0 + 2h) has not happened yet
    assert (await sample.query(window())).totals.requests == 4


async def test_totals_count_errors_tokens_and_cost(sample: UsageStore) -> None:
    response = await sample.query(window())
    assert len(response.groups) == 1 and list(response.groups[0].keys) == []
    assert response.groups[0].totals == response.totals
    t = response.totals
    assert (t.requests, t.errors, t.input_tokens, t.output_tokens, t.cached_tokens, t.reasoning_tokens) == (
        5,
        2,
        107,
        10,
        3,
        1,
    )
    assert t.cost_usd == pytest.approx(2.75)


async def test_no_records_gives_one_empty_group_without_dimensions(store: UsageStore) -> None:
    response = await store.query(window())
    assert len(response.groups) == 1 and response.groups[0].totals.requests == 0
    assert not (await store.query(window(group_by=[pb.GROUP_BY_USER]))).groups


async def test_group_by_several_dimensions_in_order(sample: UsageStore) -> None:
    response = await sample.query(window(group_by=[pb.GROUP_BY_MODEL, pb.GROUP_BY_USER]))
    got = {tuple(g.keys): g.totals.requests for g in response.groups}
    assert got == {
        ("gpt-4o", "alice"): 1,
        ("gpt-4o-mini", "alice"): 1,
        ("gpt-4o-mini", "bob"): 2,
        ("gpt-4o-mini", "carol"): 1,
    }
    assert response.totals.requests == 5


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        (pb.GROUP_BY_KEY, {"k1": 2, "k2": 2, "": 1}),
        (pb.GROUP_BY_TEAM, {"ml": 2, "web": 2, "": 1}),
        (pb.GROUP_BY_BACKEND, {"openai": 4, "azure": 1}),
    ],
)
async def test_group_by_each_dimension(sample: UsageStore, dimension: int, expected: dict[str, int]) -> None:
    response = await sample.query(window(group_by=[dimension]))
    assert {g.keys[0]: g.totals.requests for g in response.groups} == expected


async def test_groups_are_ordered_by_cost_then_requests(sample: UsageStore) -> None:
    # alice $2.50; carol $0.25; bob $0 but 2 requests; then dave $0 with 1 request.
    await sample.insert([record("6", user="dave")])
    response = await sample.query(window(group_by=[pb.GROUP_BY_USER]))
    assert [g.keys[0] for g in response.groups] == ["alice", "carol", "bob", "dave"]


async def test_buckets_are_epoch_aligned_oldest_first_without_empties(store: UsageStore) -> None:
    times = [T0 + 50 * MINUTE, T0 + 10 * MINUTE, T0 + 3 * HOUR + 5 * MINUTE, T0 - 1]
    await store.insert([record(f"r{i}", at=t, user="u", cost_usd=1.0) for i, t in enumerate(times)])
    request = window(T0 - HOUR, T0 + 4 * HOUR, group_by=[pb.GROUP_BY_USER])
    request.bucket.FromSeconds(3600)
    response = await store.query(request)
    (group,) = response.groups
    assert [(seconds(b.start_time), b.totals.requests) for b in group.buckets] == [
        (T0 - HOUR, 1),
        (T0, 2),
        (T0 + 3 * HOUR, 1),
    ]
    assert group.totals.requests == 4 and group.totals.cost_usd == pytest.approx(4.0)
    assert response.totals == group.totals


async def test_buckets_split_each_group(sample: UsageStore) -> None:
    request = window(group_by=[pb.GROUP_BY_USER])
    request.bucket.FromSeconds(3600)
    response = await sample.query(request)
    buckets = {g.keys[0]: [(seconds(b.start_time), b.totals.requests) for b in g.buckets] for g in response.groups}
    assert buckets == {"alice": [(T0, 2)], "bob": [(T0, 2)], "carol": [(T0 + 2 * HOUR, 1)]}


async def test_odd_bucket_widths_align_to_the_epoch(store: UsageStore) -> None:
    await store.insert([record("a", at=T0 + 100), record("b", at=T0 + 8)])
    request = window()
    request.bucket.FromMilliseconds(7500)  # 7.5s: T0 is a multiple of it
    (group,) = (await store.query(request)).groups
    assert [seconds(b.start_time) for b in group.buckets] == [T0 + 7.5, T0 + 97.5]


async def test_usage_groups_by_experiment_and_arm(store: UsageStore) -> None:
    await store.insert(
        [
            record("a", experiment="qwen-trial", experiment_arm="control", cost_usd=1.0),
            record("b", experiment="qwen-trial", experiment_arm="treatment", cost_usd=0.25),
            record("c", experiment="qwen-trial", experiment_arm="treatment", cost_usd=0.25),
            record("d"),
        ]
    )
    by = [pb.GROUP_BY_EXPERIMENT, pb.GROUP_BY_EXPERIMENT_ARM]
    groups = {
        tuple(g.keys): (g.totals.requests, g.totals.cost_usd) for g in (await store.query(window(group_by=by))).groups
    }
    assert groups == {
        ("qwen-trial", "control"): (1, 1.0),
        ("qwen-trial", "treatment"): (2, 0.5),
        ("", ""): (1, 0.0),
    }


async def test_a_database_from_before_experiments_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as conn:  # schema version 1, as the first release wrote it
        conn.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        columns = ", ".join(f'"{c}"' for c in COLUMNS[:-4])  # without experiment, experiment_arm, config_hash, resumed
        old = row_from_record(record("old"), 0)[:-4]
        conn.execute(f"INSERT INTO usage ({columns}) VALUES ({', '.join('?' * len(old))})", old)
    store = await UsageStore.open(path)
    try:
        got = await store.get("old")
        assert got is not None and (got.experiment, got.experiment_arm, got.config_hash) == ("", "", "")
        await store.insert([record("new", experiment="e", experiment_arm="treatment", config_hash="0123456789ab")])
        got = await store.get("new")
        assert got is not None and (got.experiment_arm, got.config_hash) == ("treatment", "0123456789ab")
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


async def test_a_database_from_before_stream_failover_is_migrated_and_keeps_resumes(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as conn:  # schema version 3: experiments and config_hash, no `resumed`
        conn.executescript(MIGRATIONS[0] + MIGRATIONS[1] + MIGRATIONS[2] + "PRAGMA user_version = 3;")
        columns = ", ".join(f'"{c}"' for c in COLUMNS[:-1])
        old = row_from_record(record("old"), 0)[:-1]
        conn.execute(f"INSERT INTO usage ({columns}) VALUES ({', '.join('?' * len(old))})", old)
    store = await UsageStore.open(path)
    try:
        got = await store.get("old")
        assert got is not None and got.resumed == 0
        await store.insert([record("new", resumed=2)])
        got = await store.get("new")
        assert got is not None and got.resumed == 2
    finally:
        await store.close()
