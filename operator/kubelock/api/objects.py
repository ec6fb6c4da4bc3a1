"""The read model of kubelock's API objects: a LockClaim or ResourceLock body parsed once, tolerantly,
into typed views of its metadata, spec and status.

The operator (`kubelock.kube.codec`), the SDK (`kubelock.sdk.model`) and the chaos monitor all read
objects through these views, so a field is parsed one way everywhere. Reading is tolerant: unknown
fields are ignored, a missing or malformed field reads as absent (None, "", 0 or False), and parsing
never raises — a watch delivers whatever the API server holds, including objects written by older
versions. Each reader applies its own defaults to what is absent; what is absent is stated here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubelock.api.constants import (
    DEFAULT_REVOKE_GRACE_SECONDS,
    RENEW_ANNOTATION,
    REVOKE_BY_ANNOTATION,
    REVOKE_GRACE_ANNOTATION,
    REVOKE_REASON_ANNOTATION,
)
from kubelock.domain.reasons import CONDITION_HELD, CONDITION_STALE, Phase
from kubelock.domain.resource import normalise
from kubelock.domain.timefmt import parse_rfc3339

Body = dict[str, Any]


# ---- fields -------------------------------------------------------------------------------------


def time_of(value: object) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime; None when absent or not a timestamp."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def seconds(value: datetime | None) -> float | None:
    """Epoch seconds, the domain's time, of a parsed timestamp."""
    return None if value is None else value.timestamp()


def integer(value: object) -> int | None:
    """A JSON integer (never a bool, never a string of digits)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def revision_of(value: object) -> int:
    """A resourceVersion as a number (etcd revisions are monotonic integers); 0 when absent or not a
    number (the API server does not promise numbers, only opaque strings)."""
    try:
        return int(str(value or 0))
    except ValueError:
        return 0


def resource_version(body: Mapping[str, Any]) -> str:
    return str(_mapping(_mapping(body).get("metadata")).get("resourceVersion") or "")


def revision(body: Mapping[str, Any]) -> int:
    return revision_of(resource_version(body))


def _mapping(value: object) -> Mapping[str, Any]:
    # JSON objects are dicts; checking for dict, not the Mapping ABC, keeps parsing cheap (the
    # operator parses every watch event and every item of a resync LIST).
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# ---- metadata -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metadata:
    name: str
    namespace: str
    uid: str
    resource_version: str
    generation: int
    created_at: datetime | None
    deleting: bool  # deletionTimestamp is set
    annotations: Mapping[str, Any]

    @property
    def revision(self) -> int:
        return revision_of(self.resource_version)

    @classmethod
    def parse(cls, metadata: object) -> Metadata:
        meta = _mapping(metadata)
        return cls(
            name=str(meta.get("name") or ""),
            namespace=str(meta.get("namespace") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            generation=integer(meta.get("generation")) or 0,
            created_at=time_of(meta.get("creationTimestamp")),
            deleting=bool(meta.get("deletionTimestamp")),
            annotations=_mapping(meta.get("annotations")),  # the body's own: read, never written
        )


# ---- LockClaim ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    resource: str  # normalised; the first of `resources` for a claim of several
    holder: str
    wait: bool
    ttl_seconds: int | None
    wait_timeout_seconds: int | None
    bound: bool  # spec.podRef is set: the claim lives as long as that pod
    pod_name: str | None
    pod_uid: str | None
    mode: str = "Exclusive"
    permits: int = 1
    resources: tuple[str, ...] = ()  # normalised, as listed: every resource the claim asks for
    priority: int = 0
    on_busy: str | None = None  # spec.onBusy as written (None: absent)

    @classmethod
    def parse(cls, raw: object) -> ClaimSpec:
        spec = _mapping(raw)
        pod_ref = _mapping(spec.get("podRef"))
        listed = spec.get("resources")
        if isinstance(listed, list) and listed:
            resources = tuple(normalise(str(r)) for r in listed)
        else:
            resources = (normalise(str(spec.get("resource") or "")),)
        return cls(
            resource=resources[0],
            resources=resources,
            mode=_text(spec.get("mode")) or "Exclusive",
            permits=integer(spec.get("permits")) or 1,
            holder=str(spec.get("holder") or ""),
            wait=bool(spec.get("wait", False)),
            ttl_seconds=integer(spec.get("ttlSeconds")),
            wait_timeout_seconds=integer(spec.get("waitTimeoutSeconds")),
            bound=bool(pod_ref),
            pod_name=_text(pod_ref.get("name")),
            pod_uid=_text(pod_ref.get("uid")),
            priority=integer(spec.get("priority")) or 0,
            on_busy=_text(spec.get("onBusy")),
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """status.revocation: the holder is asked to give the lock back by `deadline`."""

    requested_at: datetime
    requested_by: str
    grace_seconds: int
    deadline: datetime
    reason: str

    @classmethod
    def parse(cls, raw: object) -> Revocation | None:
        value = _mapping(raw)
        requested_at, deadline = time_of(value.get("requestedAt")), time_of(value.get("deadline"))
        if requested_at is None or deadline is None:
            return None
        return cls(
            requested_at=requested_at,
            requested_by=str(value.get("requestedBy") or ""),
            grace_seconds=integer(value.get("graceSeconds")) or 0,
            deadline=deadline,
            reason=str(value.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    """An administrator's revocation request, as annotated on the claim."""

    requested_by: str
    grace_seconds: int
    reason: str


@dataclass(frozen=True, slots=True)
class ClaimStatus:
    """status of a LockClaim, as the operator wrote it. `phase` is None until the operator has
    decided (or when it holds something no version of kubelock writes)."""

    phase: Phase | None
    reason: str | None
    message: str
    holder: str | None
    lock_name: str | None
    fencing_token: int | None
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    finished_at: datetime | None
    waiting_since: datetime | None
    available_at: datetime | None
    queue_position: int | None
    sequence: int | None
    cycle: tuple[str, ...] | None
    observed_renew: str | None
    conditions: tuple[Mapping[str, Any], ...]
    grants: tuple[dict[str, Any], ...] = ()  # status.grants, as written
    revocation: Revocation | None = None
    requeues: int = 0
    cycle_length: int | None = None  # waits in the whole cycle; None: written before it was recorded

    def condition(self, type_: str) -> Mapping[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == type_), None)

    @property
    def stale(self) -> bool:
        stale = self.condition(CONDITION_STALE)
        return stale is not None and stale.get("status") == "True"

    @property
    def held_changed_at(self) -> datetime | None:
        """When the Held condition last flipped."""
        held = self.condition(CONDITION_HELD)
        return time_of(held.get("lastTransitionTime")) if held is not None else None

    @classmethod
    def parse(cls, raw: object) -> ClaimStatus:
        status = _mapping(raw)
        cycle = status.get("cycle")
        conditions = status.get("conditions")
        grants = status.get("grants")
        return cls(
            phase=_phase(status.get("phase")),
            reason=_text(status.get("reason")) or None,
            message=str(status.get("message") or ""),
            holder=_text(status.get("holder")),
            lock_name=_text(status.get("lockName")),
            fencing_token=integer(status.get("fencingToken")),
            acquired_at=time_of(status.get("acquiredAt")),
            renewed_at=time_of(status.get("renewedAt")),
            expires_at=time_of(status.get("expiresAt")),
            finished_at=time_of(status.get("finishedAt")),
            waiting_since=time_of(status.get("waitingSince")),
            available_at=time_of(status.get("availableAt")),
            queue_position=integer(status.get("queuePosition")),
            sequence=integer(status.get("sequence")),
            cycle=tuple(str(c) for c in cycle) if isinstance(cycle, list) else None,
            observed_renew=_text(status.get("observedRenew")),
            conditions=tuple(c for c in conditions if isinstance(c, dict)) if isinstance(conditions, list) else (),
            grants=tuple(g for g in grants if isinstance(g, dict)) if isinstance(grants, list) else (),
            revocation=Revocation.parse(status.get("revocation")),
            requeues=integer(status.get("requeues")) or 0,
            cycle_length=integer(status.get("cycleLength")),
        )


def _phase(value: object) -> Phase | None:
    try:
        return Phase(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ClaimObject:
    """A LockClaim body, parsed."""

    metadata: Metadata
    spec: ClaimSpec
    status: ClaimStatus

    @property
    def renew_request(self) -> str | None:
        """The holder's latest renewal request (an annotation: holders may not write status)."""
        return _text(self.metadata.annotations.get(RENEW_ANNOTATION))

    @property
    def revoke_request(self) -> RevokeRequest | None:
        """An administrator's request that the holder give the lock back (annotations: only lock
        admins may set them, see config/admission/revocation-request.yaml)."""
        annotations = self.metadata.annotations
        by = _text(annotations.get(REVOKE_BY_ANNOTATION))
        if not by:
            return None
        try:
            grace = int(str(annotations.get(REVOKE_GRACE_ANNOTATION, DEFAULT_REVOKE_GRACE_SECONDS)))
        except ValueError:
            grace = DEFAULT_REVOKE_GRACE_SECONDS
        return RevokeRequest(by, max(0, grace), _text(annotations.get(REVOKE_REASON_ANNOTATION)) or "")

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> ClaimObject:
        raw = _mapping(body)
        return cls(
            Metadata.parse(raw.get("metadata")), ClaimSpec.parse(raw.get("spec")), ClaimStatus.parse(raw.get("status"))
        )


# ---- ResourceLock -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockSpec:
    """One grant of a ResourceLock: its top-level fields (the first grant) or an entry of
    spec.grants (`grants` then is empty)."""

    resource: str  # as written by the operator (already normalised)
    holder: str
    claim_name: str
    claim_uid: str
    fencing_token: int | None  # None or 0: not written yet
    acquired_at: datetime | None
    renew_time: datetime | None
    expire_time: datetime | None
    lease_seconds: int | None
    pod_name: str | None
    pod_uid: str | None
    mode: str = "Exclusive"
    permits: int = 1
    grants: tuple[LockSpec, ...] = ()  # the further grants (top level only)

    @property
    def every_grant(self) -> tuple[LockSpec, ...]:
        """The first grant and every further one."""
        return (self, *self.grants)

    @property
    def renewed_at(self) -> datetime | None:
        """The last renewal; the grant itself when never renewed."""
        return self.renew_time or self.acquired_at

    @property
    def expires_at(self) -> datetime | None:
        """spec.expireTime, or (written before it existed) the last renewal plus the lease."""
        if self.expire_time is not None:
            return self.expire_time
        renewed = self.renewed_at
        if renewed is None:
            return None
        return datetime.fromtimestamp(renewed.timestamp() + (self.lease_seconds or 0), renewed.tzinfo)

    @classmethod
    def parse(cls, raw: object, resource: str | None = None) -> LockSpec:
        spec = _mapping(raw)
        claim_ref = _mapping(spec.get("claimRef"))
        pod_ref = _mapping(spec.get("podRef"))
        grants = spec.get("grants") if resource is None else None
        resource = str(spec.get("resource") or "") if resource is None else resource
        return cls(
            resource=resource,
            holder=str(spec.get("holder") or ""),
            claim_name=str(claim_ref.get("name") or ""),
            claim_uid=str(claim_ref.get("uid") or ""),
            fencing_token=integer(spec.get("fencingToken")),
            acquired_at=time_of(spec.get("acquireTime")),
            renew_time=time_of(spec.get("renewTime")),
            expire_time=time_of(spec.get("expireTime")),
            lease_seconds=integer(spec.get("leaseDurationSeconds")),
            pod_name=_text(pod_ref.get("name")),
            pod_uid=_text(pod_ref.get("uid")),
            mode=_text(spec.get("mode")) or "Exclusive",
            permits=integer(spec.get("permits")) or 1,
            grants=tuple(cls.parse(g, resource) for g in grants if isinstance(g, dict))
            if isinstance(grants, list) else (),
        )


@dataclass(frozen=True, slots=True)
class LockObject:
    """A ResourceLock body, parsed."""

    metadata: Metadata
    spec: LockSpec

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> LockObject:
        raw = _mapping(body)
        return cls(Metadata.parse(raw.get("metadata")), LockSpec.parse(raw.get("spec")))


# ---- LockPolicy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """spec of a LockPolicy. Admission keeps the numbers in bounds; absent ones read as the defaults
    the schema would have given (capacity 1, no lock-delay, no quota)."""

    resource_prefix: str
    capacity: int
    lock_delay_seconds: int
    max_held_per_holder: int | None
    max_waiting_per_holder: int | None
    max_held_per_namespace: int | None
    max_waiting_per_namespace: int | None

    @classmethod
    def parse(cls, raw: object) -> PolicySpec:
        spec = _mapping(raw)
        return cls(
            resource_prefix=str(spec.get("resourcePrefix") or ""),
            capacity=max(1, integer(spec.get("capacity")) or 1),
            lock_delay_seconds=max(0, integer(spec.get("lockDelaySeconds")) or 0),
            max_held_per_holder=integer(spec.get("maxHeldPerHolder")),
            max_waiting_per_holder=integer(spec.get("maxWaitingPerHolder")),
            max_held_per_namespace=integer(spec.get("maxHeldPerNamespace")),
            max_waiting_per_namespace=integer(spec.get("maxWaitingPerNamespace")),
        )


@dataclass(frozen=True, slots=True)
class PolicyObject:
    """A LockPolicy body, parsed."""

    metadata: Metadata
    spec: PolicySpec

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> PolicyObject:
        raw = _mapping(body)
        return cls(Metadata.parse(raw.get("metadata")), PolicySpec.parse(raw.get("spec")))
