"""What the SDK returns: frozen views of claims and locks, read tolerantly from API objects through
the shared read model (`kubelock.api.objects`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubelock.api import objects
from kubelock.api.fencing import grant_tokens, lock_token, recorded
from kubelock.domain.reasons import Phase, Reason
from kubelock.sdk.process import PROCESS_ANNOTATION
from kubelock.sdk.targets import label

Body = dict[str, Any]


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp in UTC; None when absent or not a timestamp."""
    return objects.time_of(value)


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, as the operator writes it (`2026-01-02T03:04:05.123456Z`)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """One resource a Held claim holds (status.grants)."""

    resource: str
    lock_name: str
    fencing_token: int
    mode: str = "Exclusive"
    permits: int = 1

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> GrantInfo:
        return cls(
            resource=str(raw.get("resource") or ""),
            lock_name=str(raw.get("lockName") or ""),
            fencing_token=objects.integer(raw.get("fencingToken")) or 0,
            mode=str(raw.get("mode") or "Exclusive"),
            permits=objects.integer(raw.get("permits")) or 1,
        )


@dataclass(frozen=True, slots=True)
class RevocationInfo:
    """A request that the holder give its lock back (status.revocation): release by `deadline`,
    after which the operator breaks the lock."""

    requested_at: datetime
    requested_by: str  # a lock admin's user name, or kubelock-operator (preemption)
    grace_seconds: int
    deadline: datetime
    reason: str

    @classmethod
    def of(cls, view: objects.Revocation | None) -> RevocationInfo | None:
        if view is None:
            return None
        return cls(view.requested_at, view.requested_by, view.grace_seconds, view.deadline, view.reason)


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    """A LockClaim as the SDK sees it."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    resource: str  # normalised
    holder: str  # the claim's own holder
    wait: bool
    ttl_seconds: int | None
    created_at: datetime | None
    phase: Phase | None  # None: the operator has not decided yet
    reason: str | None
    message: str
    current_holder: str | None  # status.holder: who holds the resource now
    lock_name: str | None
    fencing_token: int | None
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    queue_position: int | None
    cycle: tuple[str, ...] | None
    stale: bool
    observed_renew: str | None
    renew_request: str | None
    mode: str = "Exclusive"
    permits: int = 1
    resources: tuple[str, ...] = ()  # normalised: every resource of the claim (the first is `resource`)
    grants: tuple[GrantInfo, ...] = ()  # while Held: one per resource
    # Lock-delay: while Pending (reason LockDelay), when the resource may be granted at the earliest;
    # after a lost grant (Expired, Revoked), when the next holder may start.
    available_at: datetime | None = None
    priority: int = 0
    revocation: RevocationInfo | None = None  # while Held: asked to give the lock back
    requeues: int = 0
    cycle_length: int | None = None  # while Deadlocked: holders in the whole cycle (`cycle` may show fewer)
    process: str | None = None  # which OS process created the claim (see sdk.process), as recorded
    # Its deletion was asked for (deletionTimestamp): released then, though a finalizer may keep the
    # object, and its status as it was, for longer.
    deleting: bool = False

    @property
    def held_grants(self) -> tuple[GrantInfo, ...]:
        """While Held: one grant per resource (for a claim of one resource, also from an operator that
        writes no `status.grants`)."""
        if self.grants or self.several or self.fencing_token is None:
            return self.grants
        return (GrantInfo(self.resource, self.lock_name or "", self.fencing_token, self.mode, self.permits),)

    @property
    def tokens(self) -> dict[str, int]:
        """While Held: the fencing token of each resource."""
        return {g.resource: g.fencing_token for g in self.held_grants}

    @property
    def refused(self) -> str | None:
        """While Pending with reason LockRefused: why the operator could not grant it (the API server
        refused to store its lock, e.g. a used-up ResourceQuota on ResourceLocks); None otherwise."""
        if self.phase is Phase.PENDING and self.reason == Reason.LOCK_REFUSED.value:
            return self.message
        return None

    @property
    def several(self) -> bool:
        """A claim of several resources (`spec.resources`), granted and lost as a whole."""
        return len(self.resources) > 1

    @property
    def label(self) -> str:
        """The claim's resources for a message: `a` or `a, b and c`."""
        return label(sorted(self.resources or (self.resource,)))

    @property
    def held(self) -> bool:
        """Held, and its lease has not run out. A claim whose expiry has passed is never held, whatever
        its phase says: the operator may be down and not have written Expired yet. A claim of several
        resources is held only with a grant on every one of them: never a part of its set. A claim
        whose deletion was asked for is released, whatever its status still says."""
        return self.held_at(None)

    def held_at(self, now: float | None) -> bool:
        """`held`, the expiry compared with `now` (seconds since the epoch; None: this machine's
        clock). The SDK passes the API server's clock (`kube.serverclock`), which the operator's
        stamps follow whatever this machine's clock says."""
        if self.phase is not Phase.HELD or self.deleting or self.lease_over(now):
            return False
        return not self.several or {g.resource for g in self.grants} >= set(self.resources)

    def lease_over(self, now: float | None = None) -> bool:
        """Phase Held, but the lease's expiry has passed (or is unknown)."""
        if self.phase is not Phase.HELD:
            return False
        return self.expires_at is None or self.expires_at.timestamp() <= (time.time() if now is None else now)

    @property
    def terminal(self) -> bool:
        return self.phase is not None and self.phase.terminal

    @classmethod
    def from_body(cls, body: Body) -> ClaimInfo:
        parsed = objects.ClaimObject.parse(body)
        meta, spec, status = parsed.metadata, parsed.spec, parsed.status
        return cls(
            name=meta.name,
            namespace=meta.namespace,
            uid=meta.uid,
            resource_version=meta.resource_version,
            resource=spec.resource,
            holder=spec.holder,
            wait=spec.wait,
            ttl_seconds=spec.ttl_seconds,
            created_at=meta.created_at,
            phase=status.phase,
            reason=status.reason,
            message=status.message,
            current_holder=status.holder or None,
            lock_name=status.lock_name or None,
            fencing_token=status.fencing_token,
            acquired_at=status.acquired_at,
            renewed_at=status.renewed_at,
            expires_at=status.expires_at,
            queue_position=status.queue_position,
            cycle=status.cycle,
            stale=status.stale,
            observed_renew=status.observed_renew,
            renew_request=parsed.renew_request,
            process=_text(meta.annotations.get(PROCESS_ANNOTATION)),
            deleting=meta.deleting,
            mode=spec.mode,
            permits=spec.permits,
            resources=spec.resources,
            grants=tuple(GrantInfo.parse(g) for g in status.grants),
            available_at=status.available_at,
            priority=spec.priority,
            revocation=RevocationInfo.of(status.revocation),
            requeues=status.requeues,
            cycle_length=status.cycle_length,
        )


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A ResourceLock: who holds a resource right now."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    resource: str
    holder: str
    claim_name: str
    fencing_token: int
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    lease_seconds: int
    annotations: dict[str, str]
    claim_uid: str = ""
    mode: str = "Exclusive"  # the first grant's
    holders: tuple[str, ...] = ()  # the holder of every grant, the first grant's first
    tokens: tuple[tuple[str, int], ...] = ()  # (claim uid, fencing token) of every grant
    token_record: dict[str, Any] | None = None  # what a write of the lock records (`fencing.recorded`)

    @classmethod
    def from_body(cls, body: Body) -> LockInfo:
        parsed = objects.LockObject.parse(body)
        meta, spec = parsed.metadata, parsed.spec
        return cls(
            name=meta.name,
            namespace=meta.namespace,
            uid=meta.uid,
            resource_version=meta.resource_version,
            resource=spec.resource,
            holder=spec.holder,
            claim_name=spec.claim_name,
            claim_uid=spec.claim_uid,
            fencing_token=lock_token(body),
            acquired_at=spec.acquired_at,
            renewed_at=spec.renewed_at,
            expires_at=spec.expires_at,
            lease_seconds=spec.lease_seconds or 0,
            annotations={str(k): str(v) for k, v in meta.annotations.items()},
            mode=spec.mode,
            holders=tuple(g.holder for g in spec.every_grant),
            tokens=tuple(grant_tokens(body).items()),
            token_record=recorded(body),
        )


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """The outcome of an acquire. `ok` is False only for a try-lock that found the resource held
    (then `holder` names the other holder and `held_since` says since when)."""

    ok: bool
    resource: str  # normalised
    holder: str | None  # yourself when ok; the other holder when not
    namespace: str
    claim_name: str
    lock_name: str | None = None
    fencing_token: int | None = None
    acquired_at: datetime | None = None
    expires_at: datetime | None = None
    held_since: datetime | None = None
    queue_position: int | None = None
    message: str = ""
    resources: tuple[str, ...] = ()  # normalised: every resource asked for (one for a single claim)
    grants: tuple[GrantInfo, ...] = ()  # when ok: one per resource

    @property
    def fencing_tokens(self) -> dict[str, int]:
        """When ok: the fencing token of each resource."""
        return {g.resource: g.fencing_token for g in self.grants}


@dataclass(frozen=True, slots=True)
class RenewResult:
    resource: str
    claim_name: str
    fencing_token: int | None
    expires_at: datetime | None
    confirmed: bool  # the operator acknowledged the renewal (expires_at is the new expiry)
    resources: tuple[str, ...] = ()
    fencing_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    resource: str
    claim_name: str
    previous_phase: Phase | None  # Held: a lock was released; Pending: a wait was abandoned
    resources: tuple[str, ...] = ()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
