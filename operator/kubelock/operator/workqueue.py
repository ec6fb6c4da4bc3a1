"""The operator's work queue: which key is processed when, and never what processing does.

A key scheduled while it waits is not queued twice; a key scheduled while it is being processed is
processed once more after that run (never two runs of one key at once, and however many schedules
arrive meanwhile, one more run sees them all). At most `max_workers` keys run at once; the rest wait
in the order they were scheduled. Keys can also be scheduled at a time: one heap of deadlines with one
sleeper task wakes them (`kubelock.domain.deadlines`), not a timer per key. A key woken by its
deadline (a lease that ends, a wait that times out, a retry) waits ahead of keys scheduled by events:
a burst of thousands of new claims must not make every lease that ends meanwhile late by the time the
burst takes to grant. A deadline scheduled with `urgent=False` (a mere refresh, such as rewriting
queue positions) waits in line with the events. A key scheduled to run after the deadlines
(`schedule_after_due`: cleanup that makes nobody late, such as deleting the lock of an expired lease
nobody waits for) is held back while urgent keys wait or run, or an urgent deadline is near, so that
a storm of leases ending together spends the API server on the statuses their holders wait for; it
is held `patience` seconds at most, and any other schedule of the key runs it at once. A run that fails is run
again later: after a transient failure soon, then backing off to `retry_delay`; after a crash at
`retry_delay`.

The processor is given as a callable, so the queue is tested on its own with an explicit clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from kubelock.domain.clock import Clock
from kubelock.domain.deadlines import DeadlineHeap

K = TypeVar("K", bound=Hashable)

log = logging.getLogger("kubelock.reconciler")
RETRY_DELAY = 1.0
FIRST_RETRY_DELAY = 0.1
# A key that keeps failing (an etcd that is full until somebody reclaims its space, an API server away
# for an hour) is retried every RETRY_DELAY for as long as that lasts: a warning at each retry would be
# a line a second per key, the log an error loop. The first failures in a row are logged each (the
# backoff's climb), then one in LOG_EVERY_FAILURES (about every 30 s at the retry delay); the rest at
# debug level.
LOUD_FAILURES = 4
LOG_EVERY_FAILURES = 30
# Keys processed at once. More would not go faster (the API server sets the pace), but each would be
# a task holding its decision while it waits for a connection: a burst of 10 000 claims must queue as
# keys, not as 10 000 coroutines.
MAX_WORKERS = 64
# Cleanup held back behind the deadlines (`schedule_after_due`) waits at most this long: with
# thousands of leases whose deadlines never stop coming, it must still run.
AFTER_DUE_PATIENCE = 30.0
# ... and is held back while the next deadline is this close: in a storm of leases ending together
# the next one is milliseconds away, and the gap between two urgent runs is not the storm's end.
AFTER_DUE_HORIZON = 0.5


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[None]],
        clock: Clock,
        *,
        transient: tuple[type[BaseException], ...] = (),
        describe: Callable[[K], str] = lambda key: f"processing of {key}",
        processed: Callable[[float], None] | None = None,
        max_workers: int = MAX_WORKERS,
        first_retry_delay: float = FIRST_RETRY_DELAY,
        retry_delay: float = RETRY_DELAY,
        after_due_patience: float = AFTER_DUE_PATIENCE,
        after_due_horizon: float = AFTER_DUE_HORIZON,
    ) -> None:
        """`transient`: the failures retried with backoff (a lost connection, a restarting API
        server); `describe` names the run of a key in logs ("reconcile of x in y"); `processed` is
        told how long each run took."""
        self._process = process
        self._clock = clock
        self._transient = transient
        self._describe = describe
        self._processed = processed or (lambda seconds: None)
        self._max_workers = max_workers
        self._first_retry_delay = first_retry_delay
        self._retry_delay = retry_delay
        self._dirty: set[K] = set()  # keys to process (again)
        self._workers: dict[K, asyncio.Task[None]] = {}
        self._waiting: deque[K] = deque()  # dirty keys for which no worker was free, in order
        self._due: deque[K] = deque()  # the same, woken by an urgent deadline: taken first
        self._deadlines: DeadlineHeap[K] = DeadlineHeap()
        self._not_urgent: set[K] = set()  # keys whose only deadline is not urgent
        self._wakeup = asyncio.Event()
        self._sleeper: asyncio.Task[None] | None = None
        self._failures: dict[K, int] = {}  # transient failures in a row, per key
        self._urgent_runs: set[K] = set()  # keys running because an urgent deadline woke them
        # Keys held back behind the deadlines (`schedule_after_due`), each at when it runs anyway (its
        # patience's end, or sooner when its caller said so): a heap, as in a storm they are thousands.
        self._after_due: DeadlineHeap[K] = DeadlineHeap()
        self._after_due_patience = after_due_patience
        self._after_due_horizon = after_due_horizon
        self.running = False

    # ---- what callers see -------------------------------------------------------------------

    def start(self) -> None:
        """Accept work. Keys scheduled before are ignored (nothing runs before the caller is ready)."""
        self.running = True
        self._sleeper = asyncio.create_task(self._sleep_until_deadlines(), name="kubelock-deadlines")

    async def stop(self) -> None:
        """Drop every waiting key and cancel every run in progress; later schedules are ignored."""
        self.running = False
        self._waiting.clear()
        self._due.clear()
        self._dirty.clear()
        self._after_due.pop_all()
        tasks = [t for t in (self._sleeper, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def schedule(self, key: K | None) -> None:
        """Process `key` as soon as a worker is free (None: nothing to do)."""
        self._schedule(key, urgent=False)

    def schedule_after_due(self, key: K, *, latest: float | None = None) -> None:
        """Process `key` once no urgent deadline waits for a worker, is being acted on or comes within
        the horizon; at the latest after the patience, or at `latest` (by the clock) when that is
        sooner: a caller whose work has a bound of its own says when it must run. A key scheduled
        otherwise meanwhile runs as that schedule says (the run decides afresh, and may hold the key
        back again)."""
        if not self.running or key in self._dirty:
            return  # already to run (sooner)
        limit = self._clock.now() + self._after_due_patience
        if latest is not None:
            limit = min(limit, latest)
        self._after_due.schedule(key, limit)  # held back already: the earlier limit stands
        self._release_after_due()
        self._wakeup.set()  # the sleeper wakes for the patience's end too

    def _schedule(self, key: K | None, *, urgent: bool) -> None:
        if key is None or not self.running:
            return
        self._after_due.cancel(key)  # this run sees whatever the held-back one was for
        if key in self._dirty and key not in self._workers:
            if urgent:
                self._due.append(key)  # already waiting, now due: the first of the two entries wins
            return
        self._dirty.add(key)
        if key in self._workers:
            if urgent:
                self._urgent_runs.add(key)
            return  # its worker goes round again
        if len(self._workers) < self._max_workers:
            self._start(key, urgent=urgent)
        else:
            (self._due if urgent else self._waiting).append(key)

    def schedule_at(self, key: K, when: float, *, urgent: bool = True) -> None:
        """Process `key` at `when` (by the clock), unless it is already due earlier; once due, ahead
        of keys scheduled by events unless `urgent` is False."""
        if urgent:
            self._not_urgent.discard(key)
        elif not self._deadlines.scheduled(key):
            self._not_urgent.add(key)
        if self._deadlines.schedule(key, when):
            self._wakeup.set()

    def forget(self, key: K) -> None:
        """Drop `key`'s deadline: its object is gone, and an event schedules it again if it comes back."""
        self._deadlines.cancel(key)
        self._not_urgent.discard(key)

    def pending(self, key: K) -> bool:
        """`key` is to be processed (again) as soon as a worker takes it."""
        return key in self._dirty

    def processing(self, key: K) -> bool:
        """A worker is processing `key` now."""
        return key in self._workers

    def next_deadline(self) -> float | None:
        return self._deadlines.next_deadline()

    @property
    def busy(self) -> int:
        """Keys being processed now."""
        return len(self._workers)

    @property
    def waiting(self) -> list[K]:
        """Keys waiting for a free worker, in the order they will be taken."""
        order = dict.fromkeys(k for k in (*self._due, *self._waiting) if k in self._dirty and k not in self._workers)
        return list(order)

    # ---- workers ----------------------------------------------------------------------------

    def _start(self, key: K, *, urgent: bool) -> None:
        if urgent:
            self._urgent_runs.add(key)
        self._workers[key] = asyncio.create_task(self._work(key), name=self._describe(key))

    def _start_waiting(self) -> None:
        while (self._due or self._waiting) and len(self._workers) < self._max_workers:
            urgent = bool(self._due)
            key = (self._due or self._waiting).popleft()
            if key in self._dirty and key not in self._workers:
                self._start(key, urgent=urgent)
        self._release_after_due()

    def _deadlines_pressing(self) -> bool:
        """An urgent key waits for a worker or is being processed, or a deadline is within the horizon."""
        while self._due and (self._due[0] not in self._dirty or self._due[0] in self._workers):
            self._due.popleft()  # entries of keys taken since (through their other entry)
        if self._due or self._urgent_runs:
            return True
        head = self._deadlines.next_deadline()
        return head is not None and head <= self._clock.now() + self._after_due_horizon

    def _release_after_due(self) -> None:
        """Schedule the held-back keys whose wait is over: all of them once the deadlines are not
        pressing, else those out of patience."""
        if not self._after_due:
            return
        if self._deadlines_pressing():
            released = self._after_due.pop_due(self._clock.now())
        else:
            released = self._after_due.pop_all()
        for key in released:
            self._schedule(key, urgent=False)  # takes it off `_after_due`

    def _next_wake(self) -> float | None:
        """When the sleeper must look again: the next deadline, or a held-back key's patience (or the
        horizon's end, when a key is held back only because a deadline is near)."""
        head = self._deadlines.next_deadline()
        patience = self._after_due.next_deadline()
        if patience is None:
            return head
        if head is None:
            return patience
        return min(head, patience)

    async def _sleep_until_deadlines(self) -> None:
        while True:
            head = self._next_wake()
            self._wakeup.clear()
            timeout = None if head is None else max(0.0, head - self._clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            for key in self._deadlines.pop_due(self._clock.now()):
                urgent = key not in self._not_urgent
                self._not_urgent.discard(key)
                self._schedule(key, urgent=urgent)
            self._release_after_due()

    async def _work(self, key: K) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                started = time.perf_counter()
                try:
                    await self._process(key)
                    self._failures.pop(key, None)
                except self._transient as error:
                    # The retry waits out its backoff even when the key was scheduled again during the
                    # failed run: a run that fails and schedules its key (or is scheduled by events
                    # while the API server is away) must not go round at once, over and over.
                    self._dirty.discard(key)
                    delay = self._backoff(key)
                    failures = self._failures[key]
                    level = logging.WARNING if failure_logged(failures) else logging.DEBUG
                    log.log(level, "%s failed (%d in a row), retrying in %.1f s: %s", self._describe(key),
                            failures, delay, error)  # fmt: skip
                    self.schedule_at(key, self._clock.now() + delay)
                except Exception:
                    log.exception("%s crashed, retrying", self._describe(key))
                    self.schedule_at(key, self._clock.now() + self._retry_delay)
                finally:
                    self._processed(time.perf_counter() - started)
        finally:
            self._workers.pop(key, None)
            self._urgent_runs.discard(key)
            if self.running:
                self._start_waiting()

    def _backoff(self, key: K) -> float:
        """Retry soon, then back off to the retry delay. A lost response is harmless to retry when
        every write the processor makes is conditional."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return backoff_delay(failures, self._first_retry_delay, self._retry_delay)


def failure_logged(failures: int) -> bool:
    """Whether the `failures`-th failure of a key in a row (counted from 1) is logged as a warning."""
    return failures <= LOUD_FAILURES or failures % LOG_EVERY_FAILURES == 0


def backoff_delay(failures: int, first: float, cap: float) -> float:
    """The delay before the retry after `failures` failures in a row: `first`, doubled each time, at
    most `cap`. The exponent is bounded: 2.0**1024 does not fit a float (OverflowError, which would
    end the key's worker), and the delay reached `cap` long before."""
    return float(min(cap, first * 2.0 ** min(failures, 64)))
