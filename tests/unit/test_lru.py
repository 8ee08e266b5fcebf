"""ByteBudgetLRU: recency order, the byte budget, time to live and partitions, on a fake clock."""

from __future__ import annotations

from server.scheduling.lru import ByteBudgetLRU, Partition
from tests.fake_clock import FakeClock


def lru(capacity: int, ttl_ns: int = 0, clock: FakeClock | None = None) -> ByteBudgetLRU[str]:
    return ByteBudgetLRU(capacity, ttl_ns, (clock or FakeClock()).now_ns)


def test_a_stored_value_is_found_and_counted() -> None:
    cache, share = lru(100), Partition()
    assert cache.put(b"a", "A", 40, share)
    assert cache.get(b"a") == "A"
    assert cache.get(b"b") is None
    assert (len(cache), cache.used_bytes, share.entries, share.bytes) == (1, 40, 1, 40)


def test_the_least_recently_used_entry_is_evicted_at_the_budget() -> None:
    cache, share = lru(100), Partition()
    cache.put(b"a", "A", 40, share)
    cache.put(b"b", "B", 40, share)
    cache.get(b"a")  # now b is the least recently used
    cache.put(b"c", "C", 40, share)
    assert cache.get(b"b") is None
    assert cache.get(b"a") == "A" and cache.get(b"c") == "C"
    assert (cache.used_bytes, cache.evictions, share.evictions, share.entries) == (80, 1, 1, 2)


def test_as_many_entries_as_needed_are_evicted_for_a_large_one() -> None:
    cache, share = lru(100), Partition()
    for key in (b"a", b"b", b"c"):
        cache.put(key, key.decode(), 30, share)
    cache.put(b"big", "BIG", 90, share)
    assert [cache.get(key) for key in (b"a", b"b", b"c", b"big")] == [None, None, None, "BIG"]
    assert (cache.used_bytes, cache.evictions) == (90, 3)


def test_a_value_larger_than_the_budget_is_never_stored_and_evicts_nothing() -> None:
    cache, share = lru(100), Partition()
    cache.put(b"a", "A", 60, share)
    assert not cache.put(b"huge", "H", 101, share)
    assert cache.get(b"huge") is None
    assert cache.get(b"a") == "A"
    assert (cache.used_bytes, cache.evictions) == (60, 0)


def test_storing_a_key_again_replaces_it_without_counting_twice() -> None:
    cache, share = lru(100), Partition()
    cache.put(b"a", "A1", 50, share)
    cache.put(b"a", "A2", 30, share)
    assert cache.get(b"a") == "A2"
    assert (len(cache), cache.used_bytes, share.bytes, cache.evictions) == (1, 30, 30, 0)


def test_an_entry_past_its_time_to_live_is_not_answered_and_is_removed() -> None:
    clock = FakeClock()
    cache, share = lru(100, ttl_ns=1_000_000, clock=clock), Partition()
    cache.put(b"a", "A", 10, share)
    clock.advance_us(999)
    assert cache.get(b"a") == "A"
    clock.advance_us(1)
    assert cache.get(b"a") is None
    assert (len(cache), cache.used_bytes, share.entries) == (0, 0, 0)


def test_dropping_a_partition_removes_only_its_entries() -> None:
    cache, mine, theirs = lru(100), Partition(), Partition()
    cache.put(b"m1", "M1", 10, mine)
    cache.put(b"t1", "T1", 20, theirs)
    cache.put(b"m2", "M2", 30, mine)
    assert cache.drop(mine) == 2
    assert cache.get(b"m1") is None and cache.get(b"m2") is None and cache.get(b"t1") == "T1"
    assert (cache.used_bytes, mine.entries, mine.bytes, theirs.entries) == (20, 0, 0, 1)


def test_an_eviction_is_charged_to_the_partition_of_the_evicted_entry() -> None:
    cache, old, new = lru(50), Partition(), Partition()
    cache.put(b"o", "O", 30, old)
    cache.put(b"n", "N", 30, new)
    assert (old.evictions, new.evictions, old.entries, new.entries) == (1, 0, 0, 1)
