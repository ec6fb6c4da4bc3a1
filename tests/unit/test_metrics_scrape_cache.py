"""The cache's gauges are read on the metrics server's thread while the event loop changes the cache.
A garbage collection during the read runs Python code (finalizers, and here `gc.callbacks`), which is
where another thread gets in: the change is made from such a callback, so the race is met on every
run instead of once in many scrapes. Before, the read built a list of the dict's items, allocating a
tuple per item, and failed with "dictionary changed size during iteration" (the scrape answered 500
at 10 000 locks)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from kubelock.operator.cache import Cache, LockRecord
from kubelock.operator.metrics import Metrics, _CacheCollector


@pytest.fixture
def eager_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.set_threshold(1)  # a collection at nearly every allocation of a tracked object
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def test_the_gauges_are_read_while_the_cache_changes(eager_gc: None) -> None:
    cache = Cache()
    for index in range(2_000):
        cache.locks[("ns", f"r{index}")] = LockRecord((), str(index))
    added = iter(range(2_000, 2_100))

    def change(phase: str, info: dict[str, int]) -> None:
        index = next(added, None)
        if phase == "start" and index is not None:
            cache.locks[("ns", f"r{index}")] = LockRecord((), str(index))  # the event loop's thread, meanwhile

    gc.callbacks.append(change)
    try:
        families = list(_CacheCollector(cache).collect())
    finally:
        gc.callbacks.remove(change)
    held = next(f for f in families if f.name == "kubelock_locks_held")
    assert 2_000 <= held.samples[0].value <= 2_100


def test_a_scrape_of_a_changing_cache_answers(eager_gc: None) -> None:
    metrics = Metrics()
    cache = Cache()
    metrics.watch_cache(cache)
    for index in range(2_000):
        cache.locks[("ns", f"r{index}")] = LockRecord((), str(index))
    removed = iter(range(2_000))

    def change(phase: str, info: dict[str, int]) -> None:
        index = next(removed, None)
        if phase == "start" and index is not None:
            cache.locks.pop(("ns", f"r{index}"), None)

    gc.callbacks.append(change)
    try:
        text = generate_latest(metrics.registry).decode()
    finally:
        gc.callbacks.remove(change)
    assert 'kubelock_locks_held{namespace="ns"}' in text
