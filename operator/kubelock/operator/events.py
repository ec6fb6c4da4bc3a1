"""Kubernetes Events written by kubelock itself (kopf's own event posting is off).

Every Event the operator emits goes through `EventRecorder.record`, which takes what happened (the
object, reason, message and type) and owns everything about how it is sent: call sites never build
Event bodies, so sending can change (for example aggregating routine Events into counts, as
client-go's EventCorrelator does) without touching them.

Recording an Event never delays a grant: it goes into a bounded queue that sender tasks drain.
The queue holds what an Event says, not its body (the body is built when it is sent): one sender
posting one Event at a time fell behind at a thousand decisions a minute, and its backlog of 10 000
bodies was most of the operator's memory. Events are for people and must not crowd out the writes
that grant locks, so a storm is not chased: when the queue is full, the newest Events are dropped
and counted (as client-go's recorder does).

Events past a limit are folded (`Folding`): one summary Event per namespace and reason and period,
sent about the last claim it covers, naming the first SUMMARY_NAMES of them and the count ("1234 more
claims: Granted in the last 60 s (...): a, b, c, …; the last: <its message>"), as client-go's
EventCorrelator folds similar Events into one. Its count is exact (a summary not yet sent when the
operator stops is lost, like any Event still queued).

Routine (Normal) Events, a grant or a release, have a token bucket per namespace: ROUTINE_BURST at
once, refilled at the operator's `routineEventRate` (default 1 every 300 s), as client-go's spam
filter does per object. client-go's EventCorrelator itself would not help here: it limits Events *of
one object*, and every grant and release is of a claim of its own, so it would still send one write
per grant. Past the bucket, a namespace's routine Events of one reason go out as one summary every
ROUTINE_SUMMARY_SECONDS: a namespace churning locks pays at most one Event write per reason a minute,
not two per acquire+release cycle (Granted, Released) on top of the five the protocol needs. A rate
of 0 sends no routine Event at all, summaries neither.

Warning Events are never dropped: each is something a person may have to act on. But a burst of them
(a thousand leases ending in the same second) would cost one write each, competing with the writes
that expire those leases and grant the next holders. So each namespace and reason gets a burst of
WARNING_BURST Events one by one, then WARNING_RATE a second; the Warnings over that are folded into
one summary Warning per namespace and reason every SUMMARY_SECONDS.

What `kubectl describe lockclaim` shows: every claim's own phase, reason, message and conditions in
its status (a claim granted past the burst is `Held` with its `Held` condition and fencing token like
any other), and the operator's log has one line per decision. Its Events are its own while the
namespace is within its burst; past it, a claim has no Event of its own unless it is the last one a
summary covers, which then carries the summary; `kubectl get events` in the namespace shows the
summaries, each naming the claims it covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from kubelock.api.constants import CLAIM_KIND
from kubelock.domain.clock import Clock
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.codec import event_body
from kubelock.kube.errors import ApiError, Conflict, Unreachable
from kubelock.operator.settings import ROUTINE_EVENT_RATE

log = logging.getLogger("kubelock.events")
COMPONENT = "kubelock-operator"
SENDERS = 1
CAPACITY = 1_000
# Routine Events a namespace may send at once, refilled at `settings.ROUTINE_EVENT_RATE` by default:
# client-go's spam filter (tools/record/events_cache.go: defaultSpamBurst 25, defaultSpamQPS 1/300,
# per source and object). Enough for every Event of an interactive session or a small test; the
# Events past it are folded into one summary per namespace and reason every ROUTINE_SUMMARY_SECONDS.
ROUTINE_BURST = 25.0
ROUTINE_SUMMARY_SECONDS = 60.0
# Namespaces whose bucket is remembered at most; a full bucket is the same as none, so only those
# that sent recently are kept.
MAX_BUCKETS = 10_000
# Warnings a namespace sends one by one per reason before they are summarised, and the rate after.
WARNING_BURST = 25.0
WARNING_RATE = 1.0
SUMMARY_SECONDS = 1.0
SUMMARY_NAMES = 10  # claims a summary names; the count covers the rest


class Unsent(Protocol):
    """Counts Events that were not sent (metrics)."""

    def event_unsent(self, why: str) -> None: ...


class NoCount:
    def event_unsent(self, why: str) -> None:
        pass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RoutineLimit:
    """Per-namespace token buckets for routine Events. `rate` 0 sends none."""

    def __init__(self, rate: float, burst: float = ROUTINE_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, namespace: str, now: float) -> bool:
        if self.rate <= 0:
            return False
        bucket = self._buckets.get(namespace)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[namespace] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_full(self, now: float) -> None:
        full = [ns for ns, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for namespace in full:
            del self._buckets[namespace]


@dataclass(slots=True)
class _Summary:
    """Events of one namespace and reason over their limit, waiting to be sent as one."""

    kind: str
    name: str  # the last one's object: the summary is about it
    uid: str
    message: str  # the last one's message
    since: float
    count: int = 0
    names: list[str] | None = None

    def add(self, kind: str, name: str, uid: str, message: str) -> None:
        self.kind, self.name, self.uid, self.message = kind, name, uid, message
        self.count += 1
        if self.names is None:
            self.names = []
        if len(self.names) < SUMMARY_NAMES:
            self.names.append(name)

    def text(self, reason: str, now: float, why: str) -> str:
        names = ", ".join(self.names or ())
        more = ", …" if self.count > len(self.names or ()) else ""
        return (
            f"{self.count} more claims: {reason} in the last {max(1.0, now - self.since):.0f} s "
            f"({why}): {names}{more}; the last: {self.message}"
        )


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One thing to report: about which object, why, and when it happened."""

    namespace: str
    kind: str
    name: str
    uid: str
    reason: str
    message: str
    warning: bool
    at: float
    # The Event's own name, when every replica reports the occurrence (a LockPolicy deleted): the API
    # server keeps the first create, the others fail with 409 and are not reported again.
    event_name: str | None = None


class Folding:
    """Events of one type (Warning or Normal) past their limit, folded into one summary per namespace
    and reason until `flush` sends them. A limit of rate 0 is `off`: nothing is sent or folded."""

    def __init__(self, limit: RoutineLimit, *, warning: bool, per_reason: bool, why: str) -> None:
        self.limit = limit
        self.warning = warning
        self.per_reason = per_reason  # one bucket per namespace and reason, else per namespace
        self.why = why  # said in each summary
        self._summaries: dict[tuple[str, str], _Summary] = {}

    @property
    def off(self) -> bool:
        return self.limit.rate <= 0

    def allow(self, namespace: str, reason: str, now: float) -> bool:
        return self.limit.allow(f"{namespace}/{reason}" if self.per_reason else namespace, now)

    def fold(self, namespace: str, kind: str, name: str, uid: str, reason: str, message: str, now: float) -> None:
        summary = self._summaries.get((namespace, reason))
        if summary is None:
            summary = self._summaries[namespace, reason] = _Summary(kind, name, uid, message, now)
        summary.add(kind, name, uid, message)

    def flush(self, now: float) -> list[Occurrence]:
        summaries, self._summaries = self._summaries, {}
        return [
            Occurrence(namespace, s.kind, s.name, s.uid, reason, s.text(reason, now, self.why), self.warning, now)
            for (namespace, reason), s in summaries.items()
        ]


def _per(rate: float) -> str:
    if rate <= 0:
        return "none"
    return f"{rate:g} a second" if rate >= 1 else f"1 every {1 / rate:.0f} s"


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        clock: Clock,
        instance: str,
        capacity: int = CAPACITY,
        senders: int = SENDERS,
        *,
        routine_rate: float = ROUTINE_EVENT_RATE,
        unsent: Unsent | None = None,
        summary_seconds: float = SUMMARY_SECONDS,
        routine_summary_seconds: float = ROUTINE_SUMMARY_SECONDS,
    ) -> None:
        self._client = client
        self._clock = clock
        self._instance = instance
        self._routine = Folding(
            RoutineLimit(routine_rate), warning=False, per_reason=False,
            why=f"a namespace's Normal Events past {ROUTINE_BURST:g}, then {_per(routine_rate)}, are summarised "
            f"every {routine_summary_seconds:g} s",
        )
        self._warnings = Folding(
            RoutineLimit(WARNING_RATE, WARNING_BURST), warning=True, per_reason=True,
            why=f"Warnings over {WARNING_RATE:g} a second are summarised",
        )
        self._periods = ((self._warnings, summary_seconds), (self._routine, routine_summary_seconds))
        self._unsent = unsent or NoCount()
        self._queue: asyncio.Queue[Occurrence] = asyncio.Queue(capacity)
        self._senders = senders
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0  # queue full
        self.limited = 0  # routine Events not sent at all (a routine rate of 0)
        self.summarised = 0  # Events sent as part of a summary rather than one by one

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"kubelock-events-{i}") for i in range(self._senders)]
        self._tasks += [
            asyncio.create_task(self._summarise_forever(folding, seconds), name=f"kubelock-events-summaries-{i}")
            for i, (folding, seconds) in enumerate(self._periods)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def record(
        self, namespace: str, name: str, uid: str, reason: str, message: str, *, warning: bool, kind: str = CLAIM_KIND,
        routine: bool = True, once: bool = False,
    ) -> None:
        """`routine=False`: a Normal Event of something rare that an admin did (a LockPolicy deleted),
        sent one by one like a Warning is, never limited nor folded into a summary of claims.
        `once` (with `routine=False`): every replica sees it happen and records it, but the Event is
        kept once (named after the object's uid and the reason, see `Occurrence.event_name`)."""
        now = self._clock.now()
        if not routine and not warning:
            event_name = f"{name[:180].rstrip('.-')}.{reason.lower()}.{uid}" if once and uid else None
            self._enqueue(Occurrence(namespace, kind, name, uid, reason, message, warning, now, event_name))
            return
        folding = self._warnings if warning else self._routine
        if folding.off:
            self.limited += 1
            self._unsent.event_unsent("limited")
            return
        if not folding.allow(namespace, reason, now):
            folding.fold(namespace, kind, name, uid, reason, message, now)
            self.summarised += 1
            self._unsent.event_unsent("summarised")
            return
        self._enqueue(Occurrence(namespace, kind, name, uid, reason, message, warning, now))

    def summarise(self, *foldings: Folding) -> None:
        """Send one Event for each namespace and reason with Events folded since the last summary (of
        `foldings`; of both types when none is named)."""
        now = self._clock.now()
        for folding in foldings or (self._warnings, self._routine):
            for occurrence in folding.flush(now):
                self._enqueue(occurrence)

    async def _summarise_forever(self, folding: Folding, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.summarise(folding)

    def _enqueue(self, occurrence: Occurrence) -> None:
        try:
            self._queue.put_nowait(occurrence)
        except asyncio.QueueFull:
            self.dropped += 1
            self._unsent.event_unsent("queue full")

    async def drain(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            occurrence = await self._queue.get()
            try:
                await self._send(occurrence)
            finally:
                self._queue.task_done()

    async def _send(self, event: Occurrence) -> None:
        body = event_body(
            namespace=event.namespace, kind=event.kind, name=event.name, uid=event.uid, reason=event.reason,
            message=event.message, warning=event.warning, now=event.at, component=COMPONENT, instance=self._instance,
            event_name=event.event_name,
        )
        try:
            await self._client.create(paths.events(event.namespace), body)
        except (ApiError, Unreachable) as error:
            if isinstance(error, Conflict) and event.event_name is not None:
                log.debug("event %s in %s recorded already (by another replica)", event.event_name, event.namespace)
                return
            # A namespace being deleted refuses new Events; that is expected, not worth a warning.
            terminating = isinstance(error, ApiError) and "being terminated" in error.message
            log.log(
                logging.DEBUG if terminating else logging.WARNING,
                "could not record event %s in %s: %s", event.reason, event.namespace, error,
            )
