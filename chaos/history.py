"""The history checker: pure functions over what agents believed and what the API server showed.

A run records, all in wall-clock seconds of this one machine (every process shares the clock):

- `Hold`: an agent believed it held `resource` with `token` in `mode` (Exclusive or Shared) from
  `start` (it saw Held) until `end` (it released, or saw the claim leave Held, or its own clock
  passed the lease expiry, whichever first); `expiry` is the last lease expiry it knew of. Its lease
  was valid only until `expiry`, and a holder whose pod died is gone from that moment, so a hold
  counts on [start, min(end, expiry, pod death)].
- `Attempt`: one acquire (try once, or wait in the queue) and how it ended.
- `Write`: a write to the fenced store, in the store's order, accepted or refused.
- `LockLife`: one grant of a ResourceLock as the monitor saw it (a lock records every grant of its
  resource: one, or several Shared ones): when it appeared, its token, its last known expiry, when its
  claim stopped holding, and when it disappeared from the lock. Its token is the revision of the write
  that made it (`kubelock.api.fencing.grant_tokens`), the same at every version the monitor saw
  (`other_tokens` lists any that read otherwise). Locks of earlier operators could exist with token 0
  (a reservation, never a grant): such a lock is counted, not ordered.
- `ClaimLife`: a LockClaim as the monitor saw it: created, first decided (left Pending), deleted.
- `PodDeath`: the moment the harness deleted (or is about to delete) a holder's pod.
- `Outage`: a window in which a component was down or paused, or the monitor could not see.

`check` returns every violation of: claims of several resources never Held with part of their set,
mutual exclusion (Shared holds may overlap each other, nothing
else may overlap on a resource of capacity 1), capacity (on a resource a LockPolicy gives more permits,
`check_capacity`: the Exclusive holds at once take at most its capacity, Shared never beside
Exclusive), quotas (given a `Quota`, `check_quota`: no holder identity, its instances together, ever
holds more claims under the policy's prefix than its `maxHeldPerHolder`, by the locks' grants in
revision order, whether or not the claims were told Held), fencing-token monotonicity, fenced writes,
no lost waiter, lock liveness (TTL, pod, release) and queue liveness (a free resource does not keep a waiter).
Liveness bounds are stated in `Bounds`; time inside an outage window does not count against them (no
operator can act while it is down), everything else does.
"""

from __future__ import annotations

import bisect
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from kubelock.domain.holder import identity_in

# Outcomes that end a `wait: true` claim properly: the contract's "no lost waiter". Under a LockPolicy
# with quotas any claim, queued or not, may be refused for its holder's quota (`chaos.agents` spells a
# refusal for a reason other than a busy resource `Rejected:<reason>`).
QUOTA_REFUSAL = "Rejected:QuotaExceeded"
WAIT_ENDINGS = frozenset({"Held", "TimedOut", "Deadlocked", "Revoked", QUOTA_REFUSAL})
TRY_ENDINGS = frozenset({"Held", "Rejected", QUOTA_REFUSAL})
# Phases in which a claim with a grant counts as held toward quotas (a Rejected one: refused by one
# replica while another wrote its grant, which holds the resource until its lock goes).
QUOTA_COUNTED_PHASES = frozenset({None, "Pending", "Held", "Rejected"})


@dataclass(frozen=True, slots=True)
class Bounds:
    """How late the system may be, outside outage windows."""

    # A lock may outlive its lease expiry, its holder pod's death or its claim's release by this much.
    liveness_seconds: float = 5.0
    # A resource with no lock may keep a queued waiter undecided for this long.
    queue_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Hold:
    kind: ClassVar[str] = "hold"
    agent: str
    resource: str
    claim: str  # the claim's uid: two holds of one claim are the same grant
    token: int
    start: float
    end: float
    expiry: float | None
    pod: str | None = None
    mode: str = "Exclusive"
    permits: int = 1  # of an Exclusive hold: taken from the resource's capacity
    capacity: int = 1  # the resource's capacity (its LockPolicy's) when the hold began

    @property
    def shared(self) -> bool:
        return self.mode == "Shared"


@dataclass(frozen=True, slots=True)
class Attempt:
    kind: ClassVar[str] = "attempt"
    agent: str
    resource: str
    wait: bool
    start: float
    end: float
    outcome: str  # Held, Rejected, TimedOut, Deadlocked, Revoked, Expired, Unreachable, NotFound, ...
    detail: str = ""
    pod: str | None = None


@dataclass(frozen=True, slots=True)
class Write:
    kind: ClassVar[str] = "write"
    seq: int  # the store's order
    agent: str
    resource: str
    token: int
    time: float
    accepted: bool
    phase: str = ""  # begin / commit


@dataclass(frozen=True, slots=True)
class LockLife:
    kind: ClassVar[str] = "lock"
    uid: str
    resource: str
    holder: str
    claim: str  # claim uid
    token: int
    version: int  # a resourceVersion seen: locks of one resource share a name, so this orders grants
    created: float
    deleted: float | None
    expiry: float | None
    released: float | None = None  # when its claim was deleted or left Held
    pod: str | None = None
    created_version: int | None = None  # the resourceVersion of its creation, when a watch showed it
    other_tokens: tuple[int, ...] = ()  # tokens other than `token` that later versions of it showed
    acquired: float | None = None  # spec.acquireTime: the operator's clock just before the grant was written
    deleted_version: int | None = None  # the resourceVersion of the write that removed it, when a watch showed it
    released_version: int | None = None  # the resourceVersion of its claim's release, when a watch showed it


@dataclass(frozen=True, slots=True)
class ClaimLife:
    kind: ClassVar[str] = "claim"
    uid: str
    resource: str
    holder: str
    wait: bool
    created: float
    decided: float | None  # first seen in a phase other than Pending
    deleted: float | None
    phase: str | None = None  # the last phase seen
    answered: float | None = None  # first seen with any phase (Pending included)
    reason: str | None = None  # the last reason seen
    deleted_version: int | None = None  # the resourceVersion of its deletion
    created_version: int | None = None  # the resourceVersion of its creation, when a watch showed it
    decided_version: int | None = None  # the resourceVersion of the write that decided it, when seen
    resources: tuple[str, ...] = ()  # a claim of several resources: all of them (`resource` is the first)
    held_version: int | None = None  # the resourceVersion of the write that first told it Held, when seen
    # The resourceVersion of the first write that showed it ending otherwise than Rejected (a final
    # phase, a deletion begun or done), when a watch showed that write; None when not seen so.
    ended_version: int | None = None
    sequence: int | None = None  # status.sequence, the operator's order of arrival in its queues (the last seen)
    name: str = ""  # the claim's name, as the operator's log spells it
    answered_version: int | None = None  # the resourceVersion of the write that gave it its first phase, when seen

    @property
    def every_resource(self) -> tuple[str, ...]:
        return self.resources or (self.resource,)


@dataclass(frozen=True, slots=True)
class PodDeath:
    kind: ClassVar[str] = "pod_death"
    pod: str
    time: float
    version: int | None = None  # the resourceVersion of the pod's deletion, when the API server answered it
    answered: float | None = None  # when the deletion's answer arrived (its commit came before)


@dataclass(frozen=True, slots=True)
class Tick:
    """One write of the revision clock (`chaos.clock`): its revision was committed between `sent` and
    `received`."""

    kind: ClassVar[str] = "tick"
    version: int
    sent: float
    received: float


@dataclass(frozen=True, slots=True)
class Outage:
    kind: ClassVar[str] = "outage"
    what: str
    start: float
    end: float
    # Empty: the whole system was affected. Otherwise only agents whose name starts with it (a frozen
    # agent process cannot hear verdicts, but the operator and everyone else can).
    scope: str = ""


Record = Hold | Attempt | Write | LockLife | ClaimLife | PodDeath | Outage | Tick
RECORD_TYPES: dict[str, type[Record]] = {
    t.kind: t for t in (Hold, Attempt, Write, LockLife, ClaimLife, PodDeath, Outage, Tick)
}


@dataclass(frozen=True, slots=True)
class Quota:
    """A LockPolicy's per-holder limit on held claims, over the resources under its prefix."""

    prefix: str
    max_held_per_holder: int


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    message: str
    resource: str = ""
    time: float | None = None

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


@dataclass
class History:
    holds: list[Hold] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    locks: list[LockLife] = field(default_factory=list)
    claims: list[ClaimLife] = field(default_factory=list)
    pod_deaths: list[PodDeath] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    end: float = 0.0  # when observation stopped: whatever has not ended by then is judged at this time
    locks_broken: int = 0  # how many locks the run broke on purpose (as an administrator would)

    def add(self, record: Record) -> None:
        if isinstance(record, Hold):
            self.holds.append(record)
        elif isinstance(record, Attempt):
            self.attempts.append(record)
        elif isinstance(record, Write):
            self.writes.append(record)
        elif isinstance(record, LockLife):
            self.locks.append(record)
        elif isinstance(record, ClaimLife):
            self.claims.append(record)
        elif isinstance(record, PodDeath):
            self.pod_deaths.append(record)
        elif isinstance(record, Tick):
            self.ticks.append(record)
        else:
            self.outages.append(record)

    def extend(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record)

    def records(self) -> Iterator[Record]:
        yield from self.holds
        yield from self.attempts
        yield from self.writes
        yield from self.locks
        yield from self.claims
        yield from self.pod_deaths
        yield from self.outages
        yield from self.ticks

    @property
    def operations(self) -> int:
        """Lock operations: every acquire attempt, every release of a hold, every protected write."""
        return len(self.attempts) + len(self.holds) + len(self.writes)


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, by: float = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + by


# ---- (de)serialisation ---------------------------------------------------------------------------


def to_json(record: Record) -> str:
    return json.dumps({"type": record.kind, **asdict(record)}, ensure_ascii=False, separators=(",", ":"))


def from_dict(data: Mapping[str, Any]) -> Record:
    cls = RECORD_TYPES[str(data["type"])]
    names = {f.name for f in fields(cls)}
    # JSON has no tuples: every list field of a record is a tuple.
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**values)


def read_jsonl(path: Path) -> Iterator[Record]:
    """Records of a JSONL file; a torn last line (a process killed mid-write) is skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            yield from_dict(data)


# ---- time arithmetic -----------------------------------------------------------------------------


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covered(start: float, end: float, windows: Sequence[tuple[float, float]]) -> float:
    """Seconds of [start, end] inside the (merged, sorted) windows."""
    total = 0.0
    for w_start, w_end in windows:
        if w_end <= start:
            continue
        if w_start >= end:
            break
        total += min(end, w_end) - max(start, w_start)
    return total


def _overlaps(start: float, end: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(w_start <= end and start <= w_end for w_start, w_end in windows)


def _deaths(history: History) -> dict[str, float]:
    deaths: dict[str, float] = {}
    for death in history.pod_deaths:
        deaths[death.pod] = min(death.time, deaths.get(death.pod, death.time))
    return deaths


def valid_until(hold: Hold, deaths: Mapping[str, float]) -> float:
    """The end of what the hold may claim: belief, bounded by the lease and by the holder's life."""
    end = hold.end
    if hold.expiry is not None:
        end = min(end, hold.expiry)
    if hold.pod is not None and hold.pod in deaths:
        end = min(end, deaths[hold.pod])
    return end


# ---- the checks ----------------------------------------------------------------------------------


def check(history: History, bounds: Bounds | None = None, quota: Quota | None = None) -> Report:
    bounds = bounds or Bounds()
    report = Report()
    report.stats["operations"] = history.operations
    outages = _merge((o.start, o.end) for o in history.outages if not o.scope)
    scoped = [o for o in history.outages if o.scope]
    deaths = _deaths(history)
    check_mutual_exclusion([h for h in history.holds if h.capacity == 1], deaths, report)
    check_capacity([h for h in history.holds if h.capacity > 1], deaths, report)
    check_whole_sets(history.claims, history.locks, report)
    check_fencing(history.holds, history.locks, deaths, report)
    check_fifo(history.locks, history.claims, report, deaths)
    check_writes(history.writes, history.holds, deaths, report)
    check_waiters(history.attempts, outages, scoped, deaths, report)
    timed = retimed(history, report)
    check_time_bounds(timed, outages, _deaths(timed), bounds, report)
    if history.ticks:
        # What the same bounds read off the monitor's arrival stamps, for comparison: the difference
        # is the harness's own lateness (the watch's delivery and its starved event loop).
        arrival = Report()
        check_time_bounds(history, outages, deaths, bounds, arrival)
        report.count("time_bound_violations_by_arrival", len(arrival.violations))
    check_reasons(history.claims, history.locks_broken, report)
    if quota is not None:
        check_quota(history.locks, history.claims, quota, report)
    return report


def check_time_bounds(
    history: History, outages: Sequence[tuple[float, float]], deaths: Mapping[str, float], bounds: Bounds,
    report: Report,
) -> None:
    """The checks with a time bound: phantom grants, lock liveness, queue liveness, verdicts."""
    check_phantoms(history.locks, history.claims, outages, history.end, bounds, report)
    check_lock_liveness(history.locks, deaths, outages, history.end, bounds, report)
    check_queue_liveness(history.claims, history.locks, outages, history.end, bounds, report)
    check_verdicts(history.claims, outages, history.end, bounds, report)


# ---- commit times from the revision clock ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevisionClock:
    """The revision clock's ticks, in revision order (`chaos.clock`)."""

    versions: tuple[int, ...]
    sent: tuple[float, ...]
    received: tuple[float, ...]

    @classmethod
    def of(cls, ticks: Iterable[Tick]) -> RevisionClock:
        ordered = sorted(ticks, key=lambda t: t.version)
        return cls(tuple(t.version for t in ordered), tuple(t.sent for t in ordered),
                   tuple(t.received for t in ordered))

    def window(self, version: int) -> tuple[float | None, float | None]:
        """When revision `version` can have been committed: after the last tick below it was sent,
        before the first tick at or above it was answered (None where no tick bounds it). etcd commits
        revisions in order, so these hold however late either side's process was."""
        index = bisect.bisect_left(self.versions, version)
        earliest = self.sent[index - 1] if index > 0 else None
        latest = self.received[index] if index < len(self.versions) else None
        return earliest, latest


def retimed(history: History, report: Report | None = None) -> History:
    """The history with every moment the monitor stamped on arrival (and every pod death the harness
    stamped before sending the deletion) moved to the latest moment the API server can have committed
    that write: the end of its window on the revision clock, never later than the stamp itself (an
    event cannot arrive before its write was committed). A moment whose write's version is unknown,
    or that no later tick bounds, keeps its stamp.

    The latest moment, for a start as for an end: an end is never taken as earlier than it was, so no
    lateness of the system is hidden there; a start may be taken as late as its window is wide, which
    `report` gets as `commit_window_p50`/`_p90` (seconds) and `retimed_stamps`."""
    if not history.ticks:
        return history
    clock = RevisionClock.of(history.ticks)
    widths: list[float] = []

    def at(stamp: float, version: int | None) -> float:
        if version is None:
            return stamp
        earliest, latest = clock.window(version)
        if latest is None or latest >= stamp:
            return stamp
        if earliest is not None:
            widths.append(latest - earliest)
        return latest

    def maybe(stamp: float | None, version: int | None) -> float | None:
        return None if stamp is None else at(stamp, version)

    timed = replace(history)
    timed.locks = [
        replace(lock, created=at(lock.created, lock.created_version), deleted=maybe(lock.deleted, lock.deleted_version),
                released=maybe(lock.released, lock.released_version))
        for lock in history.locks
    ]
    timed.claims = [
        replace(claim, created=at(claim.created, claim.created_version),
                decided=maybe(claim.decided, claim.decided_version),
                deleted=maybe(claim.deleted, claim.deleted_version),
                answered=maybe(claim.answered, claim.answered_version))
        for claim in history.claims
    ]
    timed.pod_deaths = [replace(death, time=at_death(death, clock)) for death in history.pod_deaths]
    if report is not None and widths:
        widths.sort()
        report.count("retimed_stamps", len(widths))
        report.stats["commit_window_p50"] = round(widths[len(widths) // 2], 3)
        report.stats["commit_window_p90"] = round(widths[int(len(widths) * 0.9)], 3)
    return timed


def at_death(death: PodDeath, clock: RevisionClock) -> float:
    """A pod's death: when its deletion was committed at the latest (the harness stamps the moment before
    it sends the deletion; a deletion queued behind others on a busy machine commits later): the end
    of its window or the arrival of its answer, whichever came first, never before that stamp."""
    if death.version is None:
        return death.time
    _, latest = clock.window(death.version)
    bounds = [t for t in (latest, death.answered) if t is not None]
    return max(death.time, min(bounds)) if bounds else death.time


def _valid_holds(holds: Iterable[Hold], deaths: Mapping[str, float]) -> dict[str, list[tuple[float, float, Hold]]]:
    by_resource: dict[str, list[tuple[float, float, Hold]]] = defaultdict(list)
    for hold in holds:
        end = valid_until(hold, deaths)
        if end > hold.start:
            by_resource[hold.resource].append((hold.start, end, hold))
    for items in by_resource.values():
        items.sort(key=lambda item: (item[0], item[1]))
    return by_resource


def check_mutual_exclusion(holds: Sequence[Hold], deaths: Mapping[str, float], report: Report) -> None:
    """No two claims were believed held on one resource at overlapping times while their leases
    lasted, unless both held it Shared."""
    report.count("holds", len(holds))
    report.count("shared_holds", sum(1 for h in holds if h.shared))
    for resource, items in _valid_holds(holds, deaths).items():
        report.count("valid_holds", len(items))
        active: list[tuple[float, float, Hold]] = []  # the holds that may still overlap the next one
        for item in items:
            start, end, hold = item
            active = [a for a in active if a[1] > start]
            clash = next((a for a in active if a[2].claim != hold.claim and not (a[2].shared and hold.shared)), None)
            if clash is not None:
                other = clash[2]
                report.violations.append(
                    Violation(
                        "mutual-exclusion",
                        f"{resource}: {other.agent} ({other.mode}, token {other.token}, held {other.start:.3f}-"
                        f"{clash[1]:.3f}) and {hold.agent} ({hold.mode}, token {hold.token}, held {start:.3f}-"
                        f"{end:.3f}) overlap by {min(clash[1], end) - start:.3f}s",
                        resource,
                        start,
                    )
                )
            active.append(item)


def check_whole_sets(claims: Sequence[ClaimLife], locks: Sequence[LockLife], report: Report) -> None:
    """A claim of several resources is never Held with part of its set: at the write that told it
    Held, each of its resources had a grant of it (made at or before that write, removed after it).
    Judged by resourceVersions (etcd's one order of writes); a grant whose making or removal the
    monitor did not see the version of is counted, not judged."""
    grants: dict[tuple[str, str], list[LockLife]] = defaultdict(list)
    for lock in locks:
        grants[(lock.claim, lock.resource)].append(lock)
    for claim in claims:
        if len(claim.resources) < 2:
            continue
        report.count("multi_claims")
        told = claim.held_version
        if told is None:
            continue
        report.count("multi_held_judged")
        for resource in claim.resources:
            verdict = _grant_at(grants.get((claim.uid, resource), []), told)
            if verdict is None:
                report.count("multi_grants_unjudged")
            elif not verdict:
                report.violations.append(
                    Violation(
                        "partial-hold",
                        f"the claim of {claim.holder} for {', '.join(claim.resources)} was told Held (version "
                        f"{told}) without a grant on {resource}",
                        resource,
                        claim.decided,
                    )
                )


def _grant_at(grants: Sequence[LockLife], version: int) -> bool | None:
    """Whether one of `grants` (of one claim on one resource) existed at `version` (None: unknown)."""
    unknown = False
    for lock in grants:
        made = lock.created_version if lock.created_version is not None else lock.version
        if made > version:
            unknown = unknown or lock.created_version is None
            continue
        if lock.deleted is None or (lock.deleted_version is not None and lock.deleted_version > version):
            return True
        unknown = unknown or lock.deleted_version is None
    return None if unknown else False
def check_capacity(holds: Sequence[Hold], deaths: Mapping[str, float], report: Report) -> None:
    """On a resource of capacity above 1 (a LockPolicy's semaphore), the holds believed at once while
    their leases lasted fit together: the permits of the Exclusive ones sum to at most the capacity,
    and a Shared hold never overlaps an Exclusive one. (Tokens increasing per resource is judged by
    `check_fencing` on the locks' order, for every capacity.)"""
    report.count("capacity_holds", len(holds))
    for resource, items in _valid_holds(holds, deaths).items():
        active: list[tuple[float, float, Hold]] = []
        for item in items:
            start, _, hold = item
            active = [a for a in active if a[1] > start and a[2].claim != hold.claim]
            active.append(item)
            together = [a[2] for a in active]
            exclusive = [h for h in together if not h.shared]
            permits = sum(h.permits for h in exclusive)
            capacity = min(h.capacity for h in together)
            report.stats["capacity_peak_permits"] = max(report.stats.get("capacity_peak_permits", 0), permits)
            if permits > capacity:
                report.violations.append(Violation(
                    "capacity",
                    f"{resource}: {permits} permits held at once, capacity {capacity}: "
                    + ", ".join(f"{h.agent} ({h.permits}, token {h.token})" for h in exclusive),
                    resource,
                    start,
                ))
            elif exclusive and len(exclusive) < len(together):
                shared = next(h for h in together if h.shared)
                report.violations.append(Violation(
                    "capacity-mode",
                    f"{resource}: {shared.agent} held it Shared (token {shared.token}) while "
                    f"{exclusive[0].agent} held it Exclusive (token {exclusive[0].token})",
                    resource,
                    start,
                ))


def _counted_span(lock: LockLife, claim: ClaimLife | None) -> tuple[int, float] | None:
    """The revisions [from, to) over which a grant counts toward its holder's quota, as the operator
    counts it: from the lock's creation (its first version seen, when the creation's was not) until the
    lock goes, or its claim ends otherwise than Rejected, whichever first. None when an end is known to
    have happened at a revision the monitor did not see: such a grant is not judged."""
    if claim is None:
        return None
    start = lock.created_version if lock.created_version is not None else lock.version
    ends: list[float] = []
    if lock.deleted is not None:
        if lock.deleted_version is None:
            return None
        ends.append(lock.deleted_version)
    if claim.ended_version is not None:
        ends.append(claim.ended_version)
    elif claim.deleted is not None or claim.phase not in QUOTA_COUNTED_PHASES:
        return None
    end = min(ends, default=float("inf"))
    return (start, end) if end > start else None


def check_quota(locks: Sequence[LockLife], claims: Sequence[ClaimLife], quota: Quota, report: Report) -> None:
    """No holder identity (every instance of it together, as the operator counts) ever holds more than
    `max_held_per_holder` claims under the policy: replayed in etcd
    revision order (one counter orders every write of the namespace), a claim holds while at least one
    of its grants does (a claim of several resources counts once), whether or not it was told Held."""
    by_uid = {c.uid: c for c in claims}
    # (revision, +1 start / -1 end, holder, claim): ends sort before starts at one revision.
    steps: list[tuple[float, int, str, str, float]] = []
    for lock in locks:
        if not lock.resource.startswith(quota.prefix):
            continue
        span = _counted_span(lock, by_uid.get(lock.claim))
        if span is None:
            report.count("quota_grants_unjudged")
            continue
        report.count("quota_grants_judged")
        steps.append((span[0], 1, identity_in(lock.holder), lock.claim, lock.created))
        steps.append((span[1], -1, identity_in(lock.holder), lock.claim, lock.created))
    grants: dict[str, int] = defaultdict(int)  # claim -> its grants counting now
    held: dict[str, set[str]] = defaultdict(set)  # holder -> claims holding now
    over: set[str] = set()  # holders over the limit, reported once per excess
    peak = 0
    for version, step, holder, claim_uid, created in sorted(steps, key=lambda s: (s[0], s[1])):
        grants[claim_uid] += step
        if grants[claim_uid] > 0:
            held[holder].add(claim_uid)
        else:
            held[holder].discard(claim_uid)
        count = len(held[holder])
        peak = max(peak, count)
        if count <= quota.max_held_per_holder:
            over.discard(holder)
        elif holder not in over:
            over.add(holder)
            told = [f"{uid} ({_claim_state(by_uid.get(uid))})" for uid in sorted(held[holder])]
            report.violations.append(Violation(
                "quota",
                f"{holder} held {count} claims under {quota.prefix!r} at revision {version:.0f}, "
                f"maxHeldPerHolder {quota.max_held_per_holder}: " + ", ".join(told),
                quota.prefix,
                created,
            ))
    report.stats["quota_peak_held"] = max(report.stats.get("quota_peak_held", 0), peak)


def _claim_state(claim: ClaimLife | None) -> str:
    if claim is None:
        return "claim not seen"
    told = "told Held" if claim.held_version is not None or claim.phase == "Held" else "never told Held"
    return f"{claim.phase or 'no phase'}, {told}, {'+'.join(claim.every_resource)}"


def check_fencing(
    holds: Sequence[Hold], locks: Sequence[LockLife], deaths: Mapping[str, float], report: Report
) -> None:
    """Tokens grow strictly with every grant of a resource, and agents saw the token of their grant."""
    # Grant order as the API server committed it: locks of one resource share one name, so they
    # exist one after another and any resourceVersion seen of each orders them.
    # Every lock is a grant with its token; one with token 0 (an earlier operator's reservation) is
    # not: nobody was told of it or held it.
    granted = [lock for lock in locks if lock.token]
    for lock in granted:
        for other in lock.other_tokens:
            report.violations.append(
                Violation(
                    "fencing-stable",
                    f"{lock.resource}: the lock of {lock.holder} showed token {lock.token}, later {other}",
                    lock.resource,
                    lock.created,
                )
            )
    by_resource: dict[str, list[LockLife]] = defaultdict(list)
    for lock in granted:
        by_resource[lock.resource].append(lock)
    report.count("grants", len(granted))
    report.count("reservations", len(locks) - len(granted))
    for resource, grants in by_resource.items():
        grants.sort(key=lambda lock: (lock.version, lock.token))
        for before, after in itertools.pairwise(grants):
            if after.claim == before.claim:
                continue  # one claim granted twice: a phantom grant, judged by check_phantoms
            if after.token <= before.token:
                report.violations.append(
                    Violation(
                        "fencing-order",
                        f"{resource}: grant to {after.holder} got token {after.token}, not above the earlier grant "
                        f"to {before.holder} (token {before.token})",
                        resource,
                        after.created,
                    )
                )
    # The same order as the agents lived it: one held after another means a larger token. (Not with a
    # capacity above 1: grants made together are told in any order; the locks' order above holds.)
    for resource, items in _valid_holds([h for h in holds if h.capacity == 1], deaths).items():
        for (_, _, first), (_, _, then) in itertools.pairwise(items):
            if first.shared and then.shared:
                # Shared grants made one after another may be told in the other order (and one holder
                # may be done before the other hears of its grant): their order is the locks' (above).
                continue
            if first.claim != then.claim and then.token <= first.token:
                report.violations.append(
                    Violation(
                        "fencing-order",
                        f"{resource}: {then.agent} held it with token {then.token} after {first.agent} "
                        f"held it with token {first.token}",
                        resource,
                        then.start,
                    )
                )
    token_owner: dict[tuple[str, int], str] = {}
    for hold in holds:
        owner = token_owner.setdefault((hold.resource, hold.token), hold.claim)
        if owner != hold.claim:
            report.violations.append(
                Violation(
                    "fencing-unique",
                    f"{hold.resource}: token {hold.token} was held by two claims ({owner}, {hold.claim})",
                    hold.resource,
                    hold.start,
                )
            )
    # A claim has one lock as a rule; a second one is a phantom (an operator whose view of claims
    # lagged created it after the claim was gone), judged by check_phantoms. The hold must carry the
    # token of a lock of its claim: the one it was told of.
    lock_tokens: dict[str, list[int]] = defaultdict(list)
    for lock in sorted(granted, key=lambda lock: lock.version):
        lock_tokens[lock.claim].append(lock.token)
    for hold in holds:
        seen = lock_tokens.get(hold.claim)
        if seen is None:
            report.count("holds_without_observed_lock")
        elif hold.token not in seen:
            report.violations.append(
                Violation(
                    "fencing-mismatch",
                    f"{hold.resource}: {hold.agent} saw token {hold.token} but its lock carries "
                    + " or ".join(map(str, seen)),
                    hold.resource,
                    hold.start,
                )
            )


def check_phantoms(
    locks: Sequence[LockLife],
    claims: Sequence[ClaimLife],
    outages: Sequence[tuple[float, float]],
    end_of_run: float,
    bounds: Bounds,
    report: Report,
) -> None:
    """A lock created for a claim that no longer exists, or a second lock for one claim, is a grant to
    nobody; it must be gone within the liveness bound.

    The API server cannot make a lock's creation conditional on another object (the claim) still
    existing, so an operator whose view lags (e.g. while its watch relists after an API server
    restart) can create such a lock; nobody believes they hold it, but it keeps waiters out until
    the operator notices. Ordered by resourceVersion (etcd's commit order), never by arrival time."""
    deleted = {c.uid: c.deleted_version for c in claims if c.deleted_version is not None}
    # A claim of several resources has a grant on each: one lock per claim and resource is the rule.
    by_claim: dict[tuple[str, str], list[LockLife]] = defaultdict(list)
    for lock in locks:
        by_claim[(lock.claim, lock.resource)].append(lock)
    for (claim, _), granted in by_claim.items():
        granted.sort(key=lambda lock: lock.version)
        gone = deleted.get(claim)
        for index, lock in enumerate(granted):
            late = gone is not None and lock.created_version is not None and lock.created_version > gone
            if index == 0 and not late:
                continue
            until = lock.deleted if lock.deleted is not None else end_of_run
            lived = until - lock.created - covered(lock.created, until, outages)
            if lived <= bounds.liveness_seconds:
                continue
            report.violations.append(
                Violation(
                    "phantom-grant",
                    f"{lock.resource}: a lock (token {lock.token}) created for the claim of {lock.holder} "
                    + ("after that claim had been deleted" if late else "which had been granted a lock before")
                    + f" lived {lived:.1f}s (bound {bounds.liveness_seconds:g}s, outages excluded)",
                    lock.resource,
                    lock.created,
                )
            )


def check_fifo(
    locks: Sequence[LockLife], claims: Sequence[ClaimLife], report: Report, deaths: Mapping[str, float] | None = None
) -> None:
    """First come, first served: no lock goes to a claim while an older `wait: true` claim on the
    same resource is still waiting. Reservations (locks that never got their token) are judged too:
    reserving the resource for the wrong claim is the wrong decision even when it is taken back.
    An older claim whose pod was deleted before the lock was seen made is passed over rightly: a
    claim of a pod on its way out is ended, never granted, and its ending write may come after the
    next claim's grant (seen in loaded runs of `pods-deleted`: the Rejected `HolderPodTerminated`
    40 versions after the grant that passed it over).

    Judged by resourceVersions alone (creation, verdict, deletion and the lock's creation are all
    writes, and etcd orders them); arrival times on different watches would not do. Claims whose
    versions the monitor did not see (listed after a reconnect) are left out."""
    by_uid = {claim.uid: claim for claim in claims}
    # When each claim was first granted (a grant is a write too). Shared grants made together are told
    # to their claims one after another, so an older claim's verdict may come after a newer claim's
    # grant although its own grant came first.
    # A grant's version is the write that made it: the version a watch showed it created at, else its
    # token, which is that write's revision (the fencing checks hold every token to it). A grant the
    # monitor first saw later (its watch was away, or it saw only a later version of the lock) still
    # has its token, so an older claim granted before a younger one is not taken for one overtaken.
    granted_at: dict[str, int] = {}
    for lock in locks:
        made = _grant_version(lock)
        if made is not None:
            granted_at[lock.claim] = min(granted_at.get(lock.claim, made), made)
    waiters: dict[str, list[ClaimLife]] = defaultdict(list)
    for claim in claims:
        if claim.wait and claim.created_version is not None:
            for resource in claim.every_resource:
                waiters[resource].append(claim)
    for lock in locks:
        granted = by_uid.get(lock.claim)
        at = lock.created_version
        if granted is None or granted.created_version is None or at is None:
            continue
        if granted.deleted_version is not None and granted.deleted_version < at:
            continue  # a lock for a claim already gone: judged by check_phantoms
        for older in waiters[lock.resource]:
            if older.uid == granted.uid or older.created_version is None:
                continue
            if older.created_version >= granted.created_version:
                continue
            if (older.decided is not None and older.decided_version is None) or (
                older.deleted is not None and older.deleted_version is None
            ):
                continue  # decided or deleted while the monitor's watch was away: when is unknown
            if older.decided_version is not None and older.decided_version < at:
                continue
            if granted_at.get(older.uid, at) < at:
                continue  # granted before, told later
            if older.deleted_version is not None and older.deleted_version < at:
                continue
            pod = _holder_pod(older.holder)
            if deaths and pod is not None and pod in deaths and deaths[pod] <= lock.created:
                continue  # its pod was being deleted: passed over, as it must be
            report.violations.append(
                Violation(
                    "fifo",
                    f"{lock.resource}: {granted.holder} was granted the lock (token {lock.token}) while "
                    f"{older.holder}, queued before it, was still waiting",
                    lock.resource,
                    lock.created,
                )
            )


def _holder_pod(holder: str) -> str | None:
    """The pod of a pod-bound holder (`pod:<namespace>/<pod>/<uid prefix>`), else None."""
    if not holder.startswith("pod:"):
        return None
    parts = holder.removeprefix("pod:").split("/")
    return parts[1] if len(parts) == 3 else None


def _grant_version(lock: LockLife) -> int | None:
    """The revision of the write that made the grant, when known (a reservation has no token yet)."""
    return lock.created_version if lock.created_version is not None else (lock.token or None)


def check_writes(writes: Sequence[Write], holds: Sequence[Hold], deaths: Mapping[str, float], report: Report) -> None:
    """The protected store never accepted a token below one it had accepted before (per resource).

    A stale write (sent after the writer's lease or life ended) must be refused once a newer holder has
    written; one that reaches the store before any newer token did is accepted by design of fencing,
    and is counted, not judged.
    """
    highest: dict[str, tuple[int, str]] = {}
    hold_end = {(h.agent, h.resource, h.token): valid_until(h, deaths) for h in holds}
    for write in sorted(writes, key=lambda w: w.seq):
        report.count("writes")
        report.count("writes_accepted" if write.accepted else "writes_refused")
        end = hold_end.get((write.agent, write.resource, write.token))
        if end is not None and write.time > end:
            report.count("stale_writes_accepted" if write.accepted else "stale_writes_refused")
        if not write.accepted:
            continue
        top = highest.get(write.resource)
        if top is not None and write.token < top[0]:
            report.violations.append(
                Violation(
                    "fenced-write",
                    f"{write.resource}: the store accepted token {write.token} from {write.agent} after token "
                    f"{top[0]} from {top[1]}",
                    write.resource,
                    write.time,
                )
            )
        elif top is not None and write.token == top[0] and write.agent != top[1]:
            report.violations.append(
                Violation(
                    "fenced-write",
                    f"{write.resource}: token {write.token} was used by two writers ({top[1]}, {write.agent})",
                    write.resource,
                    write.time,
                )
            )
        if top is None or write.token > top[0]:
            highest[write.resource] = (write.token, write.agent)


def check_waiters(
    attempts: Sequence[Attempt],
    outages: Sequence[tuple[float, float]],
    scoped: Sequence[Outage],
    deaths: Mapping[str, float],
    report: Report,
) -> None:
    """Every queued claim ends Held, TimedOut, Deadlocked or Revoked; a try-lock ends Held or Rejected.

    Cancelled (the agent withdrew its claim on purpose, deleting it) is an ending too. Any other
    ending is excused only while something was down (its client could not hear a verdict) or when its
    holder's pod died during it (nobody was left to wait)."""
    for attempt in attempts:
        report.count(f"outcome_{'wait' if attempt.wait else 'try'}_{attempt.outcome}")
        allowed = (WAIT_ENDINGS if attempt.wait else TRY_ENDINGS) | {"Cancelled"}
        if attempt.outcome in allowed:
            continue
        died = attempt.pod is not None and attempt.pod in deaths and deaths[attempt.pod] <= attempt.end
        frozen = any(
            attempt.agent.startswith(o.scope) and o.start <= attempt.end and attempt.start <= o.end for o in scoped
        )
        if died or frozen or _overlaps(attempt.start, attempt.end, outages):
            report.count("attempts_excused")
            continue
        what = "waiter" if attempt.wait else "try-lock"
        report.violations.append(
            Violation(
                "lost-waiter" if attempt.wait else "try-lock-outcome",
                f"{attempt.resource}: {what} {attempt.agent} ended {attempt.outcome} "
                f"after {attempt.end - attempt.start:.1f}s with nothing down: {attempt.detail}",
                attempt.resource,
                attempt.start,
            )
        )


def check_lock_liveness(
    locks: Sequence[LockLife],
    deaths: Mapping[str, float],
    outages: Sequence[tuple[float, float]],
    end_of_run: float,
    bounds: Bounds,
    report: Report,
) -> None:
    """No lock outlives its lease, its holder's pod or its claim's release by more than the bound."""
    for lock in locks:
        gone = lock.deleted if lock.deleted is not None else end_of_run
        limits: list[tuple[str, float]] = []
        if lock.expiry is not None:
            limits.append(("its lease expiry", lock.expiry))
        if lock.pod is not None and lock.pod in deaths:
            limits.append((f"the death of pod {lock.pod}", deaths[lock.pod]))
        if lock.released is not None:
            limits.append(("the release of its claim", lock.released))
        for what, since in limits:
            late = gone - since - covered(since, gone, outages)
            if late > bounds.liveness_seconds:
                state = "was deleted" if lock.deleted is not None else "still existed at the end of the run"
                report.violations.append(
                    Violation(
                        "liveness",
                        f"{lock.resource}: the lock of {lock.holder} (token {lock.token}) {state} "
                        f"{late:.1f}s after {what} (bound {bounds.liveness_seconds:g}s, outages excluded)",
                        lock.resource,
                        since,
                    )
                )
                break


def check_queue_liveness(
    claims: Sequence[ClaimLife],
    locks: Sequence[LockLife],
    outages: Sequence[tuple[float, float]],
    end_of_run: float,
    bounds: Bounds,
    report: Report,
) -> None:
    """A resource nobody holds does not keep a queued claim waiting for longer than the bound.

    A claim of several resources waits while any of them is held. A resource is also kept, for the
    claims queued after it, by a claim of several resources that waits for another of its resources
    (it holds nothing, but is first in line: every chaos claim is exclusive, so nothing fits beside it)."""
    held: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for lock in locks:
        held[lock.resource].append((lock.created, lock.deleted if lock.deleted is not None else end_of_run))

    def waited_until(claim: ClaimLife) -> float:
        return min(t for t in (claim.decided, claim.deleted, end_of_run) if t is not None)

    reserved: dict[str, list[tuple[float, float, ClaimLife]]] = defaultdict(list)  # resource -> (since, until, by)
    for claim in claims:
        if claim.wait and len(claim.resources) > 1:
            for resource in claim.resources:
                reserved[resource].append((claim.created, waited_until(claim), claim))
    for claim in claims:
        if not claim.wait:
            continue
        spans = [span for r in claim.every_resource for span in held.get(r, [])]
        spans += [(a, b) for r in claim.every_resource for a, b, by in reserved.get(r, []) if _queued_ahead(by, claim)]
        for free_start, free_end in _gaps(_merge(spans), claim.created, waited_until(claim)):
            idle = free_end - free_start - covered(free_start, free_end, outages)
            if idle > bounds.queue_seconds:
                report.violations.append(
                    Violation(
                        "queue-liveness",
                        f"{claim.resource}: {claim.holder} waited {idle:.1f}s while nobody held the resource "
                        f"(bound {bounds.queue_seconds:g}s, outages excluded)",
                        claim.resource,
                        free_start,
                    )
                )
                break


def _queued_ahead(first: ClaimLife, then: ClaimLife) -> bool:
    """`first` stands ahead of `then` in the operator's queues: by the sequence the operator gave each
    (its order of arrival, `status.sequence`; every chaos claim has the same priority), else, when one
    was never seen with it, by when the monitor first saw each (which a relist of both cannot order)."""
    if first.uid == then.uid:
        return False
    if first.sequence is not None and then.sequence is not None:
        return (first.sequence, first.uid) < (then.sequence, then.uid)
    return first.created < then.created


def check_verdicts(
    claims: Sequence[ClaimLife],
    outages: Sequence[tuple[float, float]],
    end_of_run: float,
    bounds: Bounds,
    report: Report,
) -> None:
    """The operator answers every claim (with any phase, Pending included) within the bound.

    A client that gives up waiting deletes its claim, which would hide a claim the operator never
    saw; the API server's view does not hide it."""
    for claim in claims:
        if claim.wait and claim.deleted is not None and claim.phase in (None, "Pending"):
            report.count("waiters_withdrawn")  # deleted by their holder while queued (gave up, cancelled)
        answered = min(t for t in (claim.answered, claim.deleted, end_of_run) if t is not None)
        silent = answered - claim.created - covered(claim.created, answered, outages)
        if silent > bounds.queue_seconds:
            report.violations.append(
                Violation(
                    "no-verdict",
                    f"{claim.resource}: the claim of {claim.holder} went {silent:.1f}s without any phase "
                    f"(bound {bounds.queue_seconds:g}s, outages excluded; claim {claim.name or claim.uid}, "
                    f"created at version {claim.created_version}, seen {_clock(claim.created)})",
                    claim.resource,
                    claim.created,
                )
            )


def check_reasons(claims: Sequence[ClaimLife], locks_broken: int, report: Report) -> None:
    """A claim is revoked as LockBroken only when somebody deleted its lock: never on a run that broke none.

    The reason reaches the holder (the SDK's Revoked), an Event and the metrics; a wrong one sends an
    operator looking for an administrator who did nothing."""
    broken = [c for c in claims if c.reason == "LockBroken"]
    report.count("revoked_lock_broken", len(broken))
    if locks_broken:
        return
    for claim in broken:
        report.violations.append(
            Violation(
                "reason",
                f"{claim.resource}: the claim of {claim.holder} was revoked as LockBroken, but no lock was broken",
                claim.resource,
                claim.decided,
            )
        )


def _gaps(spans: Sequence[tuple[float, float]], start: float, end: float) -> Iterator[tuple[float, float]]:
    """The parts of [start, end] outside the merged spans."""
    cursor = start
    for s_start, s_end in spans:
        if s_end <= cursor:
            continue
        if s_start >= end:
            break
        if s_start > cursor:
            yield cursor, s_start
        cursor = max(cursor, s_end)
    if cursor < end:
        yield cursor, end


def summarise(report: Report, limit: int = 20) -> list[str]:
    """Lines for a human: the first violations of each check."""
    lines: list[str] = []
    shown: dict[str, int] = defaultdict(int)
    for violation in report.violations:
        shown[violation.check] += 1
        if shown[violation.check] <= limit:
            lines.append(str(violation))
    for name, count in shown.items():
        if count > limit:
            lines.append(f"[{name}] ... and {count - limit} more")
    return lines


def _clock(t: float) -> str:
    """A time as the operators' logs print it (UTC, to the millisecond), to find the claim there."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
