"""The work queue on its own, driven by a processor the test controls and a manual clock: one run of
a key at a time, repeated schedules coalesced, a bounded number of workers, retries with backoff,
deadlines woken by the clock, and stop()."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from kubelock.domain.clock import ManualClock
from kubelock.operator.workqueue import MAX_WORKERS, WorkQueue, backoff_delay


class Transient(Exception):
    pass


class Processor:
    """Records every run; a key listed in `gates` blocks until its gate opens, a key in `failing`
    raises that exception."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.running: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Event] = {}
        self.failing: dict[str, BaseException] = {}
        self.cancelled: list[str] = []

    async def __call__(self, key: str) -> None:
        self.running[key] += 1
        self.most_at_once[key] = max(self.most_at_once[key], self.running[key])
        self.runs.append(key)
        try:
            if key in self.gates:
                await self.gates[key].wait()
            if key in self.failing:
                raise self.failing[key]
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.running[key] -= 1


async def until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def settle() -> None:
    """Let every ready task run (a run that can finish finishes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_key_runs_once_at_a_time_and_schedules_during_a_run_coalesce_into_one_more_run() -> None:
    async def scenario() -> None:
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, ManualClock())
        queue.start()
        process.gates["a"] = asyncio.Event()
        queue.schedule("a")
        queue.schedule("b")  # another key runs beside it
        await settle()
        assert process.runs == ["a", "b"] and process.running["a"] == 1
        for _ in range(5):
            queue.schedule("a")  # while a runs
        await settle()
        assert process.runs.count("a") == 1 and queue.pending("a")
        process.gates["a"].set()
        await until(lambda: process.runs.count("a") == 2 and queue.busy == 0, "a ran again")
        await settle()
        assert process.runs.count("a") == 2  # once more, not five times
        assert process.most_at_once["a"] == 1 and not queue.pending("a")
        await queue.stop()

    run(scenario)


def test_a_key_waiting_for_a_worker_is_queued_once_in_the_order_scheduled() -> None:
    async def scenario() -> None:
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, ManualClock(), max_workers=1)
        queue.start()
        process.gates["a"] = asyncio.Event()
        queue.schedule("a")
        for key in ("c", "b", "c", "b", "c"):
            queue.schedule(key)
        await settle()
        assert queue.busy == 1 and queue.waiting == ["c", "b"]
        process.gates["a"].set()
        await until(lambda: queue.busy == 0 and not queue.waiting, "the queue drained")
        assert process.runs == ["a", "c", "b"]
        await queue.stop()

    run(scenario)


def test_a_burst_of_keys_queues_for_a_bounded_number_of_workers() -> None:
    async def scenario() -> None:
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, ManualClock())
        queue.start()
        keys = [f"github://acme/app/issues/{i}" for i in range(MAX_WORKERS + 5)]
        for key in keys:
            queue.schedule(key)
        queue.schedule(keys[-1])  # already waiting: not queued twice
        assert queue.busy == MAX_WORKERS
        assert queue.waiting == keys[MAX_WORKERS:]
        await until(lambda: queue.busy == 0 and not queue.waiting, "the burst was processed")
        assert sorted(process.runs) == sorted(keys)
        await queue.stop()

    run(scenario)


def test_a_transient_failure_is_retried_soon_then_backs_off_to_the_retry_delay() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(
            process, clock, transient=(Transient,), first_retry_delay=0.01, retry_delay=0.05
        )
        queue.start()
        process.failing["a"] = Transient("connection refused")
        queue.schedule("a")
        delays = []
        for attempt in range(1, 7):
            await until(lambda attempt=attempt: len(process.runs) == attempt and queue.busy == 0, f"run {attempt}")
            deadline = queue.next_deadline()
            assert deadline is not None
            delays.append(round(deadline - clock.now(), 6))
            clock.advance(deadline - clock.now())
        assert delays == [0.01, 0.02, 0.04, 0.05, 0.05, 0.05]
        # A success forgets the failures: the next failure is retried soon again.
        del process.failing["a"]
        await until(lambda: len(process.runs) == 7 and queue.busy == 0, "the run that succeeds")
        assert queue.next_deadline() is None
        process.failing["a"] = Transient("connection refused")
        queue.schedule("a")
        await until(lambda: len(process.runs) == 8 and queue.busy == 0, "a new failure")
        assert queue.next_deadline() == pytest.approx(clock.now() + 0.01, abs=1e-6)
        await queue.stop()

    run(scenario)


def test_a_failed_run_scheduled_again_meanwhile_still_waits_out_its_backoff() -> None:
    """A run that fails while its key is scheduled again (by itself, or by events while the API server
    is away) is retried after its backoff, not at once: no run goes round before the clock moves."""

    async def scenario() -> None:
        clock = ManualClock()
        queue: WorkQueue[str]

        async def process(key: str) -> None:
            runs.append(key)
            queue.schedule(key)  # e.g. a reconcile that asks for one more run of its key
            raise Transient("connection refused")

        runs: list[str] = []
        queue = WorkQueue(process, clock, transient=(Transient,), first_retry_delay=0.01, retry_delay=0.05)
        queue.start()
        queue.schedule("a")
        await until(lambda: len(runs) == 1 and queue.busy == 0, "the first run")
        await settle()
        assert runs == ["a"], "retried before its backoff"
        assert queue.next_deadline() == pytest.approx(clock.now() + 0.01, abs=1e-6)
        clock.advance(0.01)
        await until(lambda: len(runs) == 2 and queue.busy == 0, "the retry at its deadline")
        await settle()
        assert len(runs) == 2
        await queue.stop()

    run(scenario)


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 0.01), (1, 0.02), (2, 0.04), (3, 0.05), (1023, 0.05), (1024, 0.05), (10**6, 0.05)]
)
def test_the_backoff_doubles_up_to_the_retry_delay_however_many_failures(failures: int, delay: float) -> None:
    assert backoff_delay(failures, 0.01, 0.05) == pytest.approx(delay)


def test_a_crash_is_retried_at_the_retry_delay(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(
            process, clock, transient=(Transient,), describe=lambda key: f"reconcile of {key}", retry_delay=0.05
        )
        queue.start()
        process.failing["a"] = KeyError("bug")
        queue.schedule("a")
        await until(lambda: queue.busy == 0 and queue.next_deadline() is not None, "the crash")
        assert queue.next_deadline() == clock.now() + 0.05
        del process.failing["a"]
        clock.advance(0.05)
        await until(lambda: len(process.runs) == 2, "the retry")
        await queue.stop()

    run(scenario)
    assert "reconcile of a crashed, retrying" in caplog.text


def test_a_deadline_wakes_its_key_when_the_clock_reaches_it_and_not_before() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock)
        queue.start()
        queue.schedule_at("a", clock.now() + 0.05)
        queue.schedule_at("a", clock.now() + 10)  # a later deadline does not replace an earlier one
        queue.schedule_at("b", clock.now() + 0.02)
        clock.advance(0.03)
        await until(lambda: process.runs == ["b"], "b at its deadline")
        await asyncio.sleep(0.1)  # past a's deadline in real time, not by the clock
        assert process.runs == ["b"] and queue.next_deadline() == pytest.approx(clock.now() + 0.02, abs=1e-6)
        clock.advance(0.02)
        await until(lambda: process.runs == ["b", "a"], "a at its deadline")
        queue.schedule_at("c", clock.now() - 1)  # already due
        await until(lambda: process.runs == ["b", "a", "c"], "c at once")
        assert queue.next_deadline() is None
        await queue.stop()

    run(scenario)


def test_a_deadline_earlier_than_the_sleepers_wakes_it_at_once() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock)
        queue.start()
        queue.schedule_at("late", clock.now() + 3600)
        await settle()  # the sleeper now sleeps for an hour
        queue.schedule_at("soon", clock.now())
        await until(lambda: process.runs == ["soon"], "the earlier deadline")
        await queue.stop()

    run(scenario)


def test_stop_cancels_runs_drops_waiting_keys_and_ignores_later_schedules() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock, max_workers=1)
        queue.schedule("early")  # before start: ignored
        queue.start()
        process.gates["a"] = asyncio.Event()
        queue.schedule("a")
        queue.schedule("b")
        queue.schedule_at("c", clock.now() + 0.01)
        await settle()
        await queue.stop()
        assert process.cancelled == ["a"] and queue.busy == 0 and queue.waiting == []
        assert not queue.pending("b")
        queue.schedule("d")
        clock.advance(1)
        await asyncio.sleep(0.05)
        assert process.runs == ["a"] and not queue.running

    run(scenario)


def test_every_run_is_reported_with_its_duration() -> None:
    async def scenario() -> None:
        seen: list[float] = []
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, ManualClock(), transient=(Transient,), processed=seen.append)
        queue.start()
        process.failing["b"] = Transient("gone")
        queue.schedule("a")
        queue.schedule("b")
        await until(lambda: len(seen) == 2, "two runs reported")
        assert all(seconds >= 0 for seconds in seen)
        await queue.stop()

    run(scenario)


def test_a_key_woken_by_its_deadline_waits_ahead_of_keys_scheduled_by_events() -> None:
    """A lease that ends during a burst of new claims is acted on before the rest of the burst."""

    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock, max_workers=1)
        queue.start()
        process.gates["busy"] = asyncio.Event()
        queue.schedule("busy")
        for key in ("new-1", "new-2", "new-3"):
            queue.schedule(key)  # a burst of events, waiting for the one worker
        queue.schedule_at("expiring", clock.now() + 1)
        queue.schedule_at("positions", clock.now() + 1, urgent=False)  # a refresh waits in line
        queue.schedule("new-2")  # waiting already: a deadline of it must not queue it twice
        queue.schedule_at("new-2", clock.now() + 1)
        clock.advance(1)
        await until(lambda: set(queue.waiting) >= {"expiring", "positions"}, "the deadlines are due")
        assert queue.waiting == ["expiring", "new-2", "new-1", "new-3", "positions"]
        process.gates["busy"].set()
        await until(lambda: queue.busy == 0 and not queue.waiting, "the queue drained")
        assert process.runs == ["busy", "expiring", "new-2", "new-1", "new-3", "positions"]
        await queue.stop()

    run(scenario)


def test_a_key_held_back_after_the_deadlines_runs_once_the_urgent_runs_are_done() -> None:
    """The deletion of a lock whose lease ended waits while other leases' Expired writes are due or
    under way, and goes once they are done."""

    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock, max_workers=1)
        queue.start()
        process.gates["expiring-1"] = asyncio.Event()
        queue.schedule_at("expiring-1", clock.now())
        queue.schedule_at("expiring-2", clock.now())
        await until(lambda: process.runs == ["expiring-1"], "the first deadline's run")
        queue.schedule_after_due("cleanup")
        queue.schedule("event")  # an event's key is not held back
        await settle()
        assert not queue.pending("cleanup")
        process.gates["expiring-1"].set()
        await until(lambda: queue.busy == 0 and not queue.waiting, "the queue drained")
        assert process.runs == ["expiring-1", "expiring-2", "event", "cleanup"]
        await queue.stop()

    run(scenario)


def test_a_key_held_back_after_the_deadlines_runs_at_once_when_none_is_pressing() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock)
        queue.start()
        queue.schedule_at("far", clock.now() + 60)  # beyond the horizon
        queue.schedule_after_due("cleanup")
        await until(lambda: process.runs == ["cleanup"], "the cleanup at once")
        await queue.stop()

    run(scenario)


def test_a_key_held_back_waits_for_a_deadline_within_the_horizon() -> None:
    """In a storm the next lease ends milliseconds after the last: a gap between two urgent runs
    is not the storm's end."""

    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock, after_due_horizon=0.5)
        queue.start()
        queue.schedule_at("soon", clock.now() + 0.2)
        queue.schedule_after_due("cleanup")
        await asyncio.sleep(0.05)
        assert process.runs == []
        clock.advance(0.2)
        await until(lambda: process.runs == ["soon", "cleanup"], "the deadline, then the cleanup")
        await queue.stop()

    run(scenario)


async def _running_endless(*, after_due_patience: float) -> tuple[ManualClock, Processor, WorkQueue[str]]:
    """A started queue with the given patience, running an urgent key ("endless") that does not end
    until `process.gates["endless"]` is set."""
    clock = ManualClock()
    process = Processor()
    queue: WorkQueue[str] = WorkQueue(process, clock, after_due_patience=after_due_patience)
    queue.start()
    process.gates["endless"] = asyncio.Event()
    queue.schedule_at("endless", clock.now())  # an urgent run that does not end
    await until(lambda: process.runs == ["endless"], "the urgent run")
    return clock, process, queue


def test_a_key_held_back_runs_after_its_patience_even_while_deadlines_keep_coming() -> None:
    async def scenario() -> None:
        clock, process, queue = await _running_endless(after_due_patience=0.05)
        queue.schedule_after_due("cleanup")
        queue.schedule_after_due("cleanup")  # held back once, from the first time
        await asyncio.sleep(0.1)
        assert process.runs == ["endless"], "patience is counted by the clock"
        clock.advance(0.05)
        await until(lambda: process.runs == ["endless", "cleanup"], "the cleanup out of patience")
        process.gates["endless"].set()
        await until(lambda: queue.busy == 0, "the queue drained")
        assert process.runs == ["endless", "cleanup"]
        await queue.stop()

    run(scenario)


def test_a_key_held_back_runs_at_its_own_latest_moment_while_deadlines_keep_coming() -> None:
    """A caller with a bound of its own (an expired lock must be gone within the liveness bound)
    gives the latest moment; it runs then, before the queue's patience, and a second hold-back
    never puts it off. (Small figures: the sleeper's wait is real time.)"""

    async def scenario() -> None:
        clock, process, queue = await _running_endless(after_due_patience=0.3)
        queue.schedule_after_due("cleanup", latest=clock.now() + 0.1)
        queue.schedule_after_due("cleanup", latest=clock.now() + 0.2)  # not later than the first
        queue.schedule_after_due("later")  # the queue's own patience
        clock.advance(0.05)
        await asyncio.sleep(0.15)
        assert process.runs == ["endless"], "held back until its latest moment"
        clock.advance(0.05)
        await until(lambda: process.runs == ["endless", "cleanup"], "the cleanup at its latest moment")
        await asyncio.sleep(0.15)
        assert process.runs == ["endless", "cleanup"], "the other key keeps the queue's patience"
        clock.advance(0.25)
        await until(lambda: process.runs == ["endless", "cleanup", "later"], "the other key out of patience")
        process.gates["endless"].set()
        await until(lambda: queue.busy == 0, "the queue drained")
        await queue.stop()

    run(scenario)


def test_a_held_back_key_scheduled_by_an_event_runs_at_once_and_only_once() -> None:
    """A new claim on the resource of a held-back deletion: its next holder must not wait."""

    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(process, clock)
        queue.start()
        process.gates["expiring"] = asyncio.Event()
        queue.schedule_at("expiring", clock.now())
        await until(lambda: process.runs == ["expiring"], "the urgent run")
        queue.schedule_after_due("cleanup")
        queue.schedule("cleanup")
        await until(lambda: process.runs == ["expiring", "cleanup"], "the event's run at once")
        process.gates["expiring"].set()
        await until(lambda: queue.busy == 0, "the queue drained")
        await asyncio.sleep(0.05)
        assert process.runs == ["expiring", "cleanup"], "the held-back run is not made again"
        await queue.stop()

    run(scenario)


def test_a_key_failing_for_long_is_logged_while_its_backoff_climbs_then_one_retry_in_thirty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An etcd that refuses writes until somebody reclaims its space fails the same key at every retry,
    for as long as that takes: 100 failures in a row are not 100 warnings (an error loop in the log),
    but the first few and then one in 30, each saying how many failures in a row it is."""

    async def scenario() -> None:
        clock = ManualClock()
        process = Processor()
        queue: WorkQueue[str] = WorkQueue(
            process, clock, transient=(Transient,), describe=lambda key: f"reconcile of {key}",
            first_retry_delay=0.01, retry_delay=0.05,
        )  # fmt: skip
        queue.start()
        process.failing["a"] = Transient("database space exceeded")
        queue.schedule("a")
        for attempt in range(1, 101):
            await until(lambda attempt=attempt: len(process.runs) == attempt and queue.busy == 0, f"run {attempt}")
            deadline = queue.next_deadline()
            assert deadline is not None
            clock.advance(deadline - clock.now())
        await queue.stop()

    with caplog.at_level("DEBUG", logger="kubelock.reconciler"):
        run(scenario)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 7, warned[:10]
    assert [m.split(" (")[1].split(" in a row")[0] for m in warned] == ["1", "2", "3", "4", "30", "60", "90"]
    assert all(m.startswith("reconcile of a failed (") and "database space exceeded" in m for m in warned)
    # The rest is still there for whoever turns on debug logging.
    assert sum(r.levelname == "DEBUG" and "failed (" in r.getMessage() for r in caplog.records) == 93
