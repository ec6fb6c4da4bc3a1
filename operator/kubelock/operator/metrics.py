"""Prometheus metrics of the operator (prometheus-client; names follow Prometheus conventions).

Labels are bounded: namespace, reason, verb and HTTP code — never a resource URI or a holder.
Gauges of what is held and pending are computed from the cache at scrape time, so they cannot drift.
The counters labelled by namespace lose a namespace's series once it is gone (`drop_namespaces`, fed
by `namespacewatch`): an operator serving short-lived namespaces (one per CI run) would otherwise
answer a `/metrics` that grows, with its memory, for every namespace it ever served.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kubelock.domain.clock import ServerBoundClock
from kubelock.domain.model import Action, CreateLock, DeleteLock, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.operator.cache import Cache
from kubelock.operator.quotaledger import QuotaLedgers
from kubelock.operator.watchstats import WatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
# One series of a counter labelled by namespace: the counter and its label values, the namespace first.
_Series = tuple[Counter, tuple[str, ...]]


class _CacheCollector(Collector):
    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = GaugeMetricFamily("kubelock_locks_held", "Locks held now", labels=["namespace"])
        pending = GaugeMetricFamily("kubelock_claims_pending", "Claims waiting in a queue now", labels=["namespace"])
        stale = GaugeMetricFamily(
            "kubelock_stale_locks", "Held locks whose holder missed its renewal schedule (Stale)", labels=["namespace"]
        )
        grants = GaugeMetricFamily(
            "kubelock_grants_held", "Grants held now (a Shared or semaphore lock has several)",
            labels=["namespace", "mode"],
        )
        held_by_ns: Tally[str] = Tally()
        pending_by_ns: Tally[str] = Tally()
        stale_by_ns: Tally[str] = Tally()
        grants_by_mode: Tally[tuple[str, str]] = Tally()
        # Copies, not `list(d.items())`: the scrape runs on the metrics server's thread while the event
        # loop changes the cache, and building a list of item tuples allocates, so a garbage collection
        # can run Python code (finalizers) mid-iteration and let the loop's thread in: "dictionary
        # changed size during iteration", the scrape answered 500 (seen with 10 000 locks). A dict's
        # copy takes no such allocation per item.
        for (namespace, _), lock in self._cache.locks.copy().items():
            held_by_ns[namespace] += 1
            for grant in lock.grants:
                grants_by_mode[(namespace, grant.mode.value)] += 1
        for record in self._cache.claims.copy().values():
            status = record.claim.status
            if status is None:
                continue
            if status.phase is Phase.PENDING:
                pending_by_ns[record.namespace] += 1
            elif status.phase is Phase.HELD and status.stale:
                stale_by_ns[record.namespace] += 1
        for family, tally in ((held, held_by_ns), (pending, pending_by_ns), (stale, stale_by_ns)):
            for namespace, count in sorted(tally.items()):
                family.add_metric([namespace], count)
            yield family
        for (namespace, mode), count in sorted(grants_by_mode.items()):
            grants.add_metric([namespace, mode], count)
        yield grants


class _LedgerCollector(Collector):
    def __init__(self, ledgers: QuotaLedgers) -> None:
        self._ledgers = ledgers

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "kubelock_quota_ledger_conflicts",
            "Quota ledger writes that met another writer's (another replica's, mostly): each decision ran again",
            value=self._ledgers.conflicts,
        )


class _WatchCollector(Collector):
    """Each watch stream's events and the age of its last (`watchstats`): a stream that went quiet while
    its kind changes shows a growing age with a flat count."""

    def __init__(self, stats: WatchStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        events = CounterMetricFamily(
            "kubelock_watch_events", "Events (bookmarks included) the operator's own watch of a kind and scope "
            "delivered (scope: a namespace, or * for every namespace)", labels=["kind", "scope"],
        )
        age = GaugeMetricFamily(
            "kubelock_watch_last_event_age_seconds", "Seconds since the watch of a kind and scope last delivered "
            "an event or bookmark (an idle scope's grows past a minute now and then: bookmarks do not come in every "
            "watch request)",
            labels=["kind", "scope"],
        )
        now = self._stats.clock()
        for stream in self._stats:
            labels = [stream.kind, stream.scope or "*"]
            events.add_metric(labels, stream.events)
            seconds = stream.age(now)
            if seconds is not None:
                age.add_metric(labels, seconds)
        yield events
        yield age


class _ClockCollector(Collector):
    def __init__(self, clock: ServerBoundClock) -> None:
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "kubelock_clock_offset_seconds",
            "How far the operator's own wall clock reads outside the bounds the API server's Date headers give "
            "its clock (positive: ahead; 0: within them). Leases are stamped by the earliest bound while it is "
            "more than 0.25 s",
            value=self._clock.offset(),
        )


class Metrics:
    """The operator's metrics; also the reconciler's Observer and the client's request hook."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.grants = Counter("kubelock_grants", "Locks granted", ["namespace"], registry=r)
        self.rejections = Counter("kubelock_rejections", "Try-lock claims rejected", ["namespace"], registry=r)
        self.expirations = Counter("kubelock_expirations", "Leases that expired", ["namespace"], registry=r)
        self.revocations = Counter("kubelock_revocations", "Claims revoked", ["namespace", "reason"], registry=r)
        self.deadlocks = Counter("kubelock_deadlocks", "Claims ended as deadlock victims", ["namespace"], registry=r)
        self.timeouts = Counter("kubelock_timeouts", "Waiters that timed out", ["namespace"], registry=r)
        self.lock_delays = Counter(
            "kubelock_lock_delays",
            "Grants that ended abnormally and left their resource resting for its LockPolicy's lockDelaySeconds",
            ["namespace", "reason"], registry=r,
        )
        self.quota_rejections = Counter(
            "kubelock_quota_rejections", "Claims rejected for going over a LockPolicy quota", ["namespace"], registry=r
        )
        self.acquire_latency = Histogram(
            "kubelock_acquire_latency_seconds", "From a claim first seen by the operator to Held",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.wait_time = Histogram(
            "kubelock_wait_seconds", "Time waiters spent queued before being granted",
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.hold_time = Histogram(
            "kubelock_hold_seconds", "How long locks were held", buckets=DURATION_BUCKETS, registry=r
        )
        # The operator's own share of an expiry's lateness, apart from the API server's answer and the
        # watch that tells the holder: the work queue's wait for the deadline's run and its decision.
        # Beside the API server's request durations it tells where a late `Expired` spent its time.
        self.expiry_lateness = Histogram(
            "kubelock_expiry_lateness_seconds",
            "From a lease's end (the expiresAt its holder was told) to its Expired status write being begun",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.reconcile_duration = Histogram(
            "kubelock_reconcile_duration_seconds", "Duration of one reconcile of a resource",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.api_requests = Counter(
            "kubelock_api_requests", "Requests to the Kubernetes API by verb and HTTP code (0: unreachable)",
            ["verb", "code"], registry=r,
        )
        self.events_unsent = Counter(
            "kubelock_events_unsent",
            "Events not sent one by one: counted in a summary Event instead (summarised), routine ones with a "
            "routine Event rate of 0 (limited), any when the queue was full (queue full)",
            ["why"], registry=r,
        )
        self._seen: dict[str, float] = {}
        # The series of each namespace, as (counter, label values) with the namespace first: what a
        # deleted namespace drops, found without walking every series (a walk through the counters'
        # `collect` took 0.3 s of the event loop a deletion at 10 000 namespaces).
        self._series: dict[str, list[_Series]] = {}
        # Each series' child by (counter, label values): an increment finds it without the counter's
        # label lookup, and the index above is filled once, when a label set is first seen.
        self._children: dict[_Series, Counter] = {}

    def count(self, counter: Counter, namespace: str, *labels: str) -> None:
        """Count one in `counter`'s series of `namespace` (and `labels`, its other label values)."""
        series = (counter, (namespace, *labels))
        child = self._children.get(series)
        if child is None:
            child = self._children[series] = counter.labels(*series[1])
            self._series.setdefault(namespace, []).append(series)
        child.inc()

    def namespaces(self) -> set[str]:
        """The namespaces some counter has a series of."""
        return set(self._series)

    def drop_namespaces(self, gone: Iterable[str]) -> int:
        """Remove every series of the namespaces `gone` (deleted: their counts will not move again);
        the number of series removed. A namespace created again under the same name starts from 0,
        which Prometheus's `rate()` and `increase()` take for a counter reset."""
        removed = 0
        for namespace in set(gone):
            for series in self._series.pop(namespace, ()):
                del self._children[series]
                counter, values = series
                counter.remove(*values)
                removed += 1
        return removed

    def watch_cache(self, cache: Cache) -> None:
        self.registry.register(_CacheCollector(cache))

    def watch_streams(self, stats: WatchStats) -> None:
        self.registry.register(_WatchCollector(stats))

    def watch_ledgers(self, ledgers: QuotaLedgers) -> None:
        self.registry.register(_LedgerCollector(ledgers))

    def watch_clock(self, clock: ServerBoundClock) -> None:
        self.registry.register(_ClockCollector(clock))

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)

    # ---- hooks ------------------------------------------------------------------------------

    def request(self, verb: str, code: int, seconds: float) -> None:
        self.api_requests.labels(verb, str(code)).inc()

    def event_unsent(self, why: str) -> None:
        self.events_unsent.labels(why).inc()

    def reconciled(self, seconds: float) -> None:
        self.reconcile_duration.observe(seconds)

    def seen(self, uid: str, when: float) -> None:
        self._seen.setdefault(uid, when)

    def forget(self, uid: str) -> None:
        """A claim deleted before it was answered or held: nothing to time any more."""
        self._seen.pop(uid, None)

    def applied(self, namespace: str, action: Action, now: float) -> None:
        if isinstance(action, DeleteLock):
            # A release: the holder deleted its claim. (Ends by expiry, break or pod are counted when
            # the claim's status leaves Held.)
            if action.reason is Reason.RELEASED:
                self.hold_time.observe(max(0.0, now - action.lock.acquired_at))
            return
        if isinstance(action, CreateLock) or not isinstance(action, SetStatus):
            return
        status, claim = action.status, action.claim
        previous = claim.status.phase if claim.status else None
        if status.phase is previous:
            return
        if status.phase.terminal and status.available_at is not None:
            self.count(self.lock_delays, namespace, status.reason.value)
        if previous is Phase.HELD and claim.status and claim.status.acquired_at is not None:
            self.hold_time.observe(max(0.0, now - claim.status.acquired_at))
        first_seen = self._seen.pop(claim.uid, None) if status.phase.terminal or status.phase is Phase.HELD else None
        if status.phase is Phase.HELD:
            self.count(self.grants, namespace)
            if first_seen is not None:
                self.acquire_latency.observe(max(0.0, now - first_seen))
            if previous is Phase.PENDING:
                self.wait_time.observe(max(0.0, now - (first_seen or claim.created_at)))
        elif status.phase is Phase.REJECTED:
            self.count(self.rejections, namespace)
            if status.reason is Reason.QUOTA_EXCEEDED:
                self.count(self.quota_rejections, namespace)
        elif status.phase is Phase.EXPIRED:
            self.count(self.expirations, namespace)
            told = claim.status.expires_at if claim.status else None
            if told is not None:
                self.expiry_lateness.observe(max(0.0, now - told))
        elif status.phase is Phase.REVOKED:
            self.count(self.revocations, namespace, status.reason.value)
        elif status.phase is Phase.DEADLOCKED:
            self.count(self.deadlocks, namespace)
        elif status.phase is Phase.TIMED_OUT:
            self.count(self.timeouts, namespace)

