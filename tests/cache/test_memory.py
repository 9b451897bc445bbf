"""The in-process tier: TTL (an injected clock), eviction by size in LRU order."""

from __future__ import annotations

from gateway.cache.memory import ENTRY_OVERHEAD, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_its_ttl() -> None:
    clock = Clock()
    store = MemoryStore(10_000, clock=clock)
    assert store.set("a", b"answer", 10.0)
    clock.now += 9.5
    assert store.get("a") == (b"answer", 0.5)
    clock.now += 0.5
    assert store.get("a") is None
    assert len(store) == 0 and store.bytes == 0


def test_the_least_recently_used_go_first_when_full() -> None:
    store = MemoryStore(3 * (100 + ENTRY_OVERHEAD), clock=Clock())
    for key in "abc":
        store.set(key, bytes(100), 60)
    assert store.get("a") is not None  # now b is the least recently used
    store.set("d", bytes(100), 60)
    assert store.get("b") is None
    assert all(store.get(k) is not None for k in "acd")
    assert store.evictions == 1
    assert store.bytes == 3 * (100 + ENTRY_OVERHEAD)


def test_a_big_entry_evicts_as_many_as_it_needs() -> None:
    store = MemoryStore(4 * (100 + ENTRY_OVERHEAD), clock=Clock())
    for key in "abcd":
        store.set(key, bytes(100), 60)
    store.set("big", bytes(250), 60)  # costs 450: a and b (300 each) must go
    assert [k for k in "abcd" if store.get(k) is not None] == ["c", "d"]
    assert store.bytes <= store.max_bytes


def test_a_value_bigger_than_the_store_is_not_kept() -> None:
    store = MemoryStore(1000, clock=Clock())
    store.set("a", b"x", 60)
    assert not store.set("huge", bytes(1000), 60)
    assert store.get("a") is not None


def test_replacing_an_entry_counts_its_size_once() -> None:
    store = MemoryStore(10_000, clock=Clock())
    store.set("a", bytes(100), 60)
    store.set("a", bytes(50), 60)
    assert store.bytes == 50 + ENTRY_OVERHEAD and len(store) == 1
