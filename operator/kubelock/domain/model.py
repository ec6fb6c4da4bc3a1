"""Frozen views of claims and locks as the domain sees them (no Kubernetes types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kubelock.domain.grants import EXCLUSIVE, Mode, Need
from kubelock.domain.reasons import Phase, Reason

MAX_GRANTS = 128
"""The most grants a resource holds at once: one ResourceLock records them all, and the API server
bounds an object's size. A request that would exceed it waits, as if the resource were full."""


class PodLiveness(StrEnum):
    NOT_BOUND = "NotBound"  # the claim has no podRef
    ALIVE = "Alive"
    TERMINATED = "Terminated"  # Succeeded/Failed, or a new pod under the same name
    # Being deleted: its containers got SIGTERM and may still be finishing what they do under the lock
    # (a `kubelock run` command cleaning up). It keeps what it holds until it has stopped (the kubelet
    # reports the end, or the pod is removed) or its lease runs out, and gets nothing new. The grace's
    # end is not its end: a node that cannot report (lost, unreachable) leaves its containers as they
    # were. See `effective`.
    STOPPING = "Stopping"
    MISSING = "Missing"  # no such pod
    UNWATCHED = "Unwatched"  # the pod exists but lacks the label that lets the operator watch it
    UNKNOWN = "Unknown"  # not yet known; no decision is taken on it

    def effective(self, *, holding: bool) -> PodLiveness:
        """The liveness a claim is judged by: a stopping pod is alive for the grants it holds (the
        next holder must not start while this one may still be writing) and terminated for
        everything else (a claim it waits on is ended, not granted to a pod on its way out)."""
        if self is PodLiveness.STOPPING:
            return PodLiveness.ALIVE if holding else PodLiveness.TERMINATED
        return self


class OnBusy(StrEnum):
    """What a queued claim does when its wait times out (`waitTimeoutSeconds`)."""

    FAIL = "Fail"  # end TimedOut (and a deadlock victim ends Deadlocked): the default
    REQUEUE = "Requeue"  # go to the end of the queue with a fresh wait (a deadlock victim still ends)


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    """An administrator's request that a holder give its lock back (annotations on its claim)."""

    requested_by: str
    grace_seconds: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revocation request the operator has recorded on a held claim: the holder is asked to
    release by `deadline`; after it the operator breaks the lock."""

    requested_at: float
    requested_by: str
    grace_seconds: int
    deadline: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HeldGrant:
    """One grant of a Held claim of several resources, as its status lists it."""

    resource: str
    lock_name: str
    fencing_token: int


@dataclass(frozen=True, slots=True)
class ClaimStatus:
    """What the operator writes to `status` (timestamps as epoch seconds)."""

    phase: Phase
    reason: Reason
    message: str
    sequence: int
    holder: str | None = None
    lock_name: str | None = None
    fencing_token: int | None = None
    acquired_at: float | None = None
    renewed_at: float | None = None
    expires_at: float | None = None
    queue_position: int | None = None
    cycle: tuple[str, ...] | None = None
    cycle_length: int | None = None  # waits in the whole cycle (`cycle` shows at most CYCLE_SHOWN of them)
    stale: bool = False
    observed_renew: str | None = None
    finished_at: float | None = None  # when the claim entered a terminal phase
    waiting_since: float | None = None  # while Pending: when the operator first saw the claim wait
    # Lock-delay: on a claim whose grant ended abnormally, when its resource may be granted again (the
    # record the delay rests on); on a waiter, when it may be granted at the earliest.
    available_at: float | None = None
    revocation: Revocation | None = None  # while Held: the holder is asked to give the lock back
    requeues: int = 0  # times the claim went back to the end of the queue (onBusy: Requeue)
    # While Held, a claim of several resources: one grant per resource, sorted by resource (a claim of
    # one resource has `lock_name` / `fencing_token` instead).
    grants: tuple[HeldGrant, ...] = ()


@dataclass(frozen=True, slots=True)
class Claim:
    name: str
    uid: str
    resource: str  # normalised
    holder: str
    sequence: int  # queue order: the revision at which the claim was first seen
    created_at: float
    wait: bool = False
    ttl_seconds: int | None = None  # None: the operator's default
    wait_timeout_seconds: int | None = None
    pod_name: str | None = None
    pod: PodLiveness = PodLiveness.NOT_BOUND
    renew_request: str | None = None  # the holder's opaque renewal marker
    status: ClaimStatus | None = None
    mode: Mode = Mode.EXCLUSIVE
    permits: int = 1  # taken from the resource's capacity (Exclusive mode)
    resources: tuple[str, ...] = ()  # normalised: every resource of a claim of several (else empty)
    priority: int = 0  # queue order: higher first (aged while waiting, see `grants.effective_priority`)
    on_busy: OnBusy = OnBusy.FAIL
    revoke_request: RevokeRequest | None = None

    @property
    def need(self) -> Need:
        return _need(self.mode, self.permits)

    @property
    def multi(self) -> bool:
        """A claim of several resources, granted on all of them at once or on none."""
        return bool(self.resources)

    @property
    def every_resource(self) -> tuple[str, ...]:
        """The resources the claim asks for, sorted (the order its grants are written in)."""
        return tuple(sorted(set(self.resources))) if self.resources else (self.resource,)

    @property
    def phase(self) -> Phase | None:
        return self.status.phase if self.status else None

    @property
    def active(self) -> bool:
        """Undecided, queued or holding: still takes part in arbitration."""
        return self.status is None or not self.status.phase.terminal

    @property
    def waiting(self) -> bool:
        """A real waiter: wants to queue and is not (yet) holding or finished."""
        return self.wait and (self.status is None or self.status.phase is Phase.PENDING)


@dataclass(frozen=True, slots=True)
class Lock:
    """One grant on a resource: its claim, mode, permits, fencing token and lease. A resource's state
    is the set of its grants, all recorded in one ResourceLock (`name`, `uid`); a grant is made by the
    write that records it, and its token is that write's revision (`kubelock.api.fencing`)."""

    name: str
    uid: str
    resource: str
    holder: str
    claim_name: str
    claim_uid: str
    fencing_token: int
    acquired_at: float
    renewed_at: float
    lease_seconds: int
    mode: Mode = Mode.EXCLUSIVE
    permits: int = 1
    pod_name: str | None = None  # the holder's pod, as the grant records it
    pod_uid: str | None = None

    @property
    def expires_at(self) -> float:
        return self.renewed_at + self.lease_seconds

    @property
    def need(self) -> Need:
        return _need(self.mode, self.permits)


def _need(mode: Mode, permits: int) -> Need:
    """The common need is one shared value: the wait-for graph keeps one per grant and per wait."""
    return EXCLUSIVE if mode is Mode.EXCLUSIVE and permits == 1 else Need(mode, permits)


@dataclass(frozen=True, slots=True)
class LockBreak:
    """Who broke a lock and why, as recorded on the ResourceLock before it was deleted; or that
    its namespace is being deleted (the namespace controller deletes every lock in it)."""

    actor: str | None = None
    reason: str | None = None
    namespace_deleted: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    """The operator settings the decisions depend on."""

    default_ttl_seconds: int = 1800
    max_ttl_seconds: int = 86400
    # A held lock is Stale once this share of its lease has gone by without a renewal. Holders renew
    # every third of the lease (the SDK does; docs/SKILL.md tells agents to), so above 33 a holder on
    # schedule is never Stale; 100 turns the check off (the lease expires at that moment instead).
    stale_after_percent: int = 50
    # Terminal claims are deleted this long after they finished (0: kept until someone deletes them).
    ttl_seconds_after_finished: int = 3600
    # A waiter's effective priority grows by one point per this many seconds of waiting, so no
    # waiter starves behind a stream of higher-priority ones.
    priority_aging_seconds: int = 10
    # Preemption: a waiter whose priority exceeds a blocking holder's by at least this much asks the
    # holder (a revocation request) to give the lock back within `preemption_grace_seconds`. None: off.
    preemption_priority_delta: int | None = None
    preemption_grace_seconds: int = 30

    def stale_after(self, lease_seconds: float) -> float:
        return lease_seconds * self.stale_after_percent / 100


@dataclass(frozen=True, slots=True)
class Notice:
    """An Event to record about a claim."""

    reason: Reason
    message: str
    warning: bool = False
    # Structured facts for the operator's log line (e.g. who broke a lock and why).
    details: tuple[tuple[str, str], ...] = ()


# ---- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetStatus:
    claim: Claim
    status: ClaimStatus
    notice: Notice | None = None


@dataclass(frozen=True, slots=True)
class CreateLock:
    """Make a grant for `claim`. It carries no fencing token: the grant store assigns it when it
    writes the grant (the lock's creation revision), keeping the rule of `grants.tokens_increase`.
    The lock is the grant from its creation on, with that token (`kubelock.api.fencing`), and the
    claim is told it on the next step."""

    claim: Claim
    acquired_at: float
    lease_seconds: int
    resource: str = ""  # the resource granted: one of a claim of several ("": the claim's one resource)

    @property
    def target(self) -> str:
        return self.resource or self.claim.resource


@dataclass(frozen=True, slots=True)
class RenewLock:
    lock: Lock
    renewed_at: float
    lease_seconds: int


@dataclass(frozen=True, slots=True)
class DeleteLock:
    lock: Lock
    reason: Reason


@dataclass(frozen=True, slots=True)
class FinishedClaim:
    """What the operator keeps of a terminal claim: enough to remove it when its record has been kept
    for `ttl_seconds_after_finished` (the whole claim stays in the API, not in memory)."""

    name: str
    uid: str
    holder: str
    resource: str
    phase: Phase
    reason: Reason | None
    finished_at: float
    available_at: float | None = None  # its grant ended abnormally: the resource rests until then


@dataclass(frozen=True, slots=True)
class DeleteClaim:
    """Remove a terminal claim whose record has been kept for `ttl_seconds_after_finished`."""

    claim: FinishedClaim


Action = SetStatus | CreateLock | RenewLock | DeleteLock | DeleteClaim


@dataclass(frozen=True, slots=True)
class Decision:
    """One step of arbitration for one resource. Apply the actions in order, then decide again
    until `actions` is empty; `next_deadline` is when the resource needs another look."""

    actions: tuple[Action, ...] = ()
    next_deadline: float | None = None
    also_reconcile: frozenset[str] = field(default_factory=frozenset)
