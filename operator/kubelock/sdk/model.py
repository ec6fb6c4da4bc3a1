"""What the SDK returns: frozen views of claims and locks, read tolerantly from API objects."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubelock.api.constants import RENEW_ANNOTATION
from kubelock.api.fencing import lock_token
from kubelock.domain.reasons import CONDITION_STALE, Phase
from kubelock.domain.resource import normalise

Body = dict[str, Any]


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, as the operator writes it (`2026-01-02T03:04:05.123456Z`)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _phase(value: object) -> Phase | None:
    try:
        return Phase(str(value)) if value else None
    except ValueError:
        return None


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

    @property
    def held(self) -> bool:
        """Held, and its lease has not run out. A claim whose expiry has passed is never held, whatever
        its phase says: the operator may be down and not have written Expired yet."""
        return self.phase is Phase.HELD and not self.lease_over()

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
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        cycle = status.get("cycle")
        conditions = status.get("conditions") or []
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            resource=normalise(str(spec.get("resource", ""))),
            holder=str(spec.get("holder", "")),
            wait=bool(spec.get("wait", False)),
            ttl_seconds=_int(spec.get("ttlSeconds")),
            created_at=parse_time(meta.get("creationTimestamp")),
            phase=_phase(status.get("phase")),
            reason=status.get("reason") or None,
            message=str(status.get("message") or ""),
            current_holder=status.get("holder") or None,
            lock_name=status.get("lockName") or None,
            fencing_token=_int(status.get("fencingToken")),
            acquired_at=parse_time(status.get("acquiredAt")),
            renewed_at=parse_time(status.get("renewedAt")),
            expires_at=parse_time(status.get("expiresAt")),
            queue_position=_int(status.get("queuePosition")),
            cycle=tuple(str(c) for c in cycle) if isinstance(cycle, list) else None,
            stale=any(c.get("type") == CONDITION_STALE and c.get("status") == "True" for c in conditions),
            observed_renew=status.get("observedRenew"),
            renew_request=(meta.get("annotations") or {}).get(RENEW_ANNOTATION),
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

    @classmethod
    def from_body(cls, body: Body) -> LockInfo:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
        lease = _int(spec.get("leaseDurationSeconds")) or 0
        expires = parse_time(spec.get("expireTime"))
        if expires is None and renewed is not None:
            expires = datetime.fromtimestamp(renewed.timestamp() + lease, UTC)
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            resource=str(spec.get("resource", "")),
            holder=str(spec.get("holder", "")),
            claim_name=str((spec.get("claimRef") or {}).get("name", "")),
            claim_uid=str((spec.get("claimRef") or {}).get("uid", "")),
            fencing_token=lock_token(body),
            acquired_at=parse_time(spec.get("acquireTime")),
            renewed_at=renewed,
            expires_at=expires,
            lease_seconds=lease,
            annotations=dict(meta.get("annotations") or {}),
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


@dataclass(frozen=True, slots=True)
class RenewResult:
    resource: str
    claim_name: str
    fencing_token: int | None
    expires_at: datetime | None
    confirmed: bool  # the operator acknowledged the renewal (expires_at is the new expiry)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    resource: str
    claim_name: str
    previous_phase: Phase | None  # Held: a lock was released; Pending: a wait was abandoned
