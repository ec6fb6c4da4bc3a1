"""The single heap of deadlines behind every lease, wait timeout and stale check."""

from __future__ import annotations

import random

import pytest

from kubelock.domain.clock import ManualClock
from kubelock.domain.deadlines import DeadlineHeap


def heap_of(**deadlines: float) -> DeadlineHeap[str]:
    heap: DeadlineHeap[str] = DeadlineHeap()
    for key, when in deadlines.items():
        heap.schedule(key, when)
    return heap


def test_empty_heap() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    assert len(heap) == 0
    assert heap.next_deadline() is None
    assert heap.pop_due(1e18) == []


def test_keys_come_out_in_deadline_order() -> None:
    heap = heap_of(c=30.0, a=10.0, d=40.0, b=20.0)
    assert len(heap) == 4
    assert heap.next_deadline() == 10.0
    assert heap.pop_due(25.0) == ["a", "b"]
    assert heap.next_deadline() == 30.0
    assert heap.pop_due(100.0) == ["c", "d"]
    assert len(heap) == 0


def test_equal_deadlines_come_out_in_scheduling_order_without_comparing_keys() -> None:
    heap: DeadlineHeap[object] = DeadlineHeap()
    first, second = object(), object()  # not orderable: the heap must never compare keys
    heap.schedule(first, 5.0)
    heap.schedule(second, 5.0)
    assert heap.pop_due(5.0) == [first, second]


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        pytest.param(50.0, 20.0, 20.0, id="earlier-reschedule-wins"),
        pytest.param(20.0, 50.0, 20.0, id="later-reschedule-ignored"),
        pytest.param(20.0, 20.0, 20.0, id="same-time-is-a-no-op"),
    ],
)
def test_only_the_earliest_deadline_per_key_is_kept(first: float, second: float, kept: float) -> None:
    heap = heap_of(k=first)
    heap.schedule("k", second)
    assert len(heap) == 1
    assert heap.next_deadline() == kept
    assert heap.pop_due(kept - 0.001) == []
    assert heap.pop_due(kept) == ["k"]
    assert heap.pop_due(1e18) == [], "the superseded entry must not fire again"


@pytest.mark.parametrize(
    ("existing", "key", "when", "moves_head"),
    [
        pytest.param({}, "a", 10.0, True, id="first-key"),
        pytest.param({"a": 10.0}, "b", 5.0, True, id="new-key-before-head"),
        pytest.param({"a": 10.0}, "b", 10.0, False, id="new-key-at-head"),
        pytest.param({"a": 10.0}, "b", 15.0, False, id="new-key-after-head"),
        pytest.param({"a": 10.0, "b": 20.0}, "b", 15.0, False, id="non-head-moves-earlier-but-not-past-head"),
        pytest.param({"a": 10.0, "b": 20.0}, "b", 5.0, True, id="non-head-moves-past-head"),
        pytest.param({"a": 10.0, "b": 20.0}, "a", 7.0, True, id="head-moves-earlier"),
        pytest.param({"a": 10.0, "b": 20.0}, "a", 30.0, False, id="head-later-ignored"),
        pytest.param({"a": 10.0}, "a", 10.0, False, id="head-same-time"),
    ],
)
def test_schedule_reports_when_the_head_moves_earlier(
    existing: dict[str, float], key: str, when: float, moves_head: bool
) -> None:
    heap = heap_of(**existing)
    assert heap.schedule(key, when) is moves_head


def test_schedule_after_the_head_was_cancelled_compares_with_the_live_head() -> None:
    heap = heap_of(a=10.0, b=20.0)
    heap.cancel("a")
    assert heap.schedule("c", 15.0) is True  # the live head was b at 20
    assert heap.next_deadline() == 15.0


def test_pop_due_returns_each_due_key_once() -> None:
    heap = heap_of(a=10.0, b=20.0)
    heap.schedule("a", 5.0)  # leaves a superseded entry for a at 10
    assert heap.pop_due(4.0) == []
    assert heap.pop_due(10.0) == ["a"]
    assert heap.pop_due(10.0) == []
    assert heap.pop_due(20.0) == ["b"]
    assert heap.pop_due(20.0) == []
    assert len(heap) == 0


def test_a_popped_key_can_be_scheduled_again() -> None:
    heap = heap_of(a=10.0)
    assert heap.pop_due(10.0) == ["a"]
    assert heap.schedule("a", 30.0) is True
    assert heap.pop_due(29.0) == []
    assert heap.pop_due(30.0) == ["a"]


@pytest.mark.parametrize(
    ("keys", "cancel", "due"),
    [
        pytest.param({"a": 10.0, "b": 20.0}, "a", ["b"], id="cancel-head"),
        pytest.param({"a": 10.0, "b": 20.0}, "b", ["a"], id="cancel-tail"),
        pytest.param({"a": 10.0}, "zzz", ["a"], id="cancel-unknown-is-harmless"),
    ],
)
def test_cancel(keys: dict[str, float], cancel: str, due: list[str]) -> None:
    heap = heap_of(**keys)
    heap.cancel(cancel)
    assert len(heap) == len(due)
    assert heap.next_deadline() == (min(keys[k] for k in due) if due else None)
    assert heap.pop_due(1e18) == due


def test_cancel_then_reschedule_at_the_same_time_fires_once() -> None:
    heap = heap_of(a=10.0)
    heap.cancel("a")
    heap.schedule("a", 10.0)
    assert heap.pop_due(10.0) == ["a"]
    assert heap.pop_due(10.0) == []


def test_cancel_then_reschedule_later_does_not_fire_at_the_old_time() -> None:
    heap = heap_of(a=10.0)
    heap.cancel("a")
    heap.schedule("a", 50.0)
    assert heap.next_deadline() == 50.0
    assert heap.pop_due(10.0) == []
    assert heap.pop_due(50.0) == ["a"]


def test_driven_by_a_manual_clock() -> None:
    clock = ManualClock(start=1000.0)
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.schedule("lease", clock.now() + 30)
    heap.schedule("stale", clock.now() + 120)
    heap.schedule("wait", clock.now() + 10)
    fired: list[tuple[float, list[str]]] = []
    for _ in range(4):
        nxt = heap.next_deadline()
        if nxt is None:
            break
        clock.advance(nxt - clock.now())
        fired.append((clock.now() - 1000.0, heap.pop_due(clock.now())))
    assert fired == [(10.0, ["wait"]), (30.0, ["lease"]), (120.0, ["stale"])]


@pytest.mark.parametrize("seed", [3, 11, 99])
def test_matches_a_dict_of_earliest_deadlines(seed: int) -> None:
    """Random schedule/cancel/pop against a model: a dict of the earliest deadline per key."""
    rng = random.Random(seed)
    heap: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(2000):
        op = rng.random()
        key = rng.randrange(40)
        if op < 0.6:
            when = now + rng.uniform(0, 100)
            head = min(model.values(), default=None)
            moved = heap.schedule(key, when)
            if key not in model or when < model[key]:
                model[key] = when
            assert moved is (head is None or (model[key] == when and when < head))
        elif op < 0.75:
            heap.cancel(key)
            model.pop(key, None)
        else:
            now += rng.uniform(0, 30)
            due = heap.pop_due(now)
            expected = sorted((k for k, w in model.items() if w <= now), key=lambda k: model[k])
            assert sorted(due) == sorted(expected)
            assert [model[k] for k in due] == sorted(model[k] for k in due)
            for k in due:
                del model[k]
        assert len(heap) == len(model)
        assert heap.next_deadline() == min(model.values(), default=None)


def test_pop_all_takes_every_key_earliest_first_and_leaves_the_heap_empty() -> None:
    heap = heap_of(late=30.0, soon=1.0, middle=5.0)
    heap.schedule("late", 2.0)  # moved earlier: its superseded entry is not returned twice
    heap.cancel("middle")
    assert heap.pop_all() == ["soon", "late"]
    assert len(heap) == 0 and heap.next_deadline() is None and heap.pop_due(100.0) == []


def test_cancelled_and_superseded_entries_do_not_pile_up_until_their_time() -> None:
    """Keys forgotten long before their deadline (a deleted claim's expiry, hours away) leave the heap
    its live entries and a bounded slack, not one entry per key ever scheduled."""
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.schedule("live", 1_000.0)  # at the top: the dead entries behind it are not dropped on the way
    for i in range(5000):
        heap.schedule(f"gone-{i}", 10_000.0 + i)
        heap.schedule(f"gone-{i}", 5_000.0 + i)  # an earlier deadline supersedes the first
        heap.cancel(f"gone-{i}")
    assert len(heap) == 1
    assert len(heap._heap) <= 2 * len(heap) + 64 + 1
    assert heap.next_deadline() == 1_000.0
    assert heap.pop_due(1e18) == ["live"]
