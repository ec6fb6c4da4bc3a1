"""Mapping between API objects (JSON dicts) and the domain's frozen values.

Read tolerantly (through the shared read model, `kubelock.api.objects`; missing fields take the
domain's defaults here), write strictly (every status
write is the complete status, so a stale field can never survive a phase change).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from sys import intern
from types import MappingProxyType
from typing import Any

from kubelock.api import objects
from kubelock.api.constants import (
    API_VERSION,
    BREAK_ACTOR_ANNOTATION,
    BREAK_CLAIMS_ANNOTATION,
    BREAK_REASON_ANNOTATION,
    CLAIM_KIND,
    LOCK_KIND,
)
from kubelock.api.fencing import grant_tokens
from kubelock.domain.grants import EXCLUSIVE, Mode
from kubelock.domain.leasestart import lock_shows, shown_expiry
from kubelock.domain.model import (
    Claim,
    ClaimStatus,
    CreateLock,
    HeldGrant,
    Lock,
    OnBusy,
    PodLiveness,
    RenewLock,
    Revocation,
    RevokeRequest,
)
from kubelock.domain.reasons import CONDITION_HELD, CONDITION_STALE, Phase, Reason
from kubelock.domain.timefmt import to_rfc3339

Body = dict[str, Any]
BREAK_ANNOTATIONS = (BREAK_ACTOR_ANNOTATION, BREAK_REASON_ANNOTATION, BREAK_CLAIMS_ANNOTATION)
NOTHING_SHARED: Mapping[str, str] = MappingProxyType({})


def revision(body: Body) -> int:
    """The object's resourceVersion as a number (etcd revisions are monotonic integers)."""
    return objects.revision(body)


def _ts(value: datetime | None) -> float | None:
    return objects.seconds(value)


def claim_status(raw: Body | None, sequence: int) -> ClaimStatus | None:
    return _claim_status(objects.ClaimStatus.parse(raw), sequence)


def _claim_status(
    view: objects.ClaimStatus, sequence: int, holder: str | None = None, shared: Mapping[str, str] = NOTHING_SHARED
) -> ClaimStatus | None:
    """`holder`: the claim's, whose string the status shares when it names the same holder; `shared`:
    see `claim_record`."""
    if view.phase is None:
        return None
    try:
        reason = Reason(str(view.reason))
    except ValueError:
        reason = Reason.QUEUED
    finished_at = view.finished_at
    if finished_at is None and view.phase.terminal:
        # Written before finishedAt existed: the Held condition's last flip is the best record left.
        finished_at = view.held_changed_at
    return ClaimStatus(
        phase=view.phase,
        reason=reason,
        message=view.message,
        sequence=view.sequence or sequence,
        holder=holder if holder is not None and view.holder == holder else view.holder,
        lock_name=_same(view.lock_name, shared),
        fencing_token=view.fencing_token,
        acquired_at=_ts(view.acquired_at),
        renewed_at=_ts(view.renewed_at),
        expires_at=_ts(view.expires_at),
        queue_position=view.queue_position,
        cycle=view.cycle,
        cycle_length=view.cycle_length,
        stale=view.stale,
        observed_renew=view.observed_renew,
        finished_at=_ts(finished_at),
        waiting_since=_ts(view.waiting_since),
        available_at=_ts(view.available_at),
        revocation=_revocation(view.revocation),
        requeues=view.requeues,
        grants=_held_grants(view) if view.phase is Phase.HELD and view.lock_name is None else (),
    )


def _held_grants(view: objects.ClaimStatus) -> tuple[HeldGrant, ...]:
    """status.grants of a Held claim of several resources (a claim of one has lockName instead)."""
    held = []
    for grant in view.grants:
        resource, name, token = grant.get("resource"), grant.get("lockName"), objects.integer(grant.get("fencingToken"))
        if isinstance(resource, str) and isinstance(name, str) and token is not None:
            held.append(HeldGrant(resource, name, token))
    return tuple(held)


def _revocation(view: objects.Revocation | None) -> Revocation | None:
    if view is None:
        return None
    return Revocation(
        requested_at=view.requested_at.timestamp(),
        requested_by=view.requested_by,
        grace_seconds=view.grace_seconds,
        deadline=view.deadline.timestamp(),
        reason=view.reason,
    )


def _on_busy(value: str | None) -> OnBusy:
    try:
        return OnBusy(value) if value else OnBusy.FAIL
    except ValueError:
        return OnBusy.FAIL  # read tolerantly: a value no version writes keeps today's behaviour


def _revoke_request(parsed: objects.ClaimObject) -> RevokeRequest | None:
    request = parsed.revoke_request
    if request is None:
        return None
    return RevokeRequest(request.requested_by, request.grace_seconds, request.reason)


Condition = tuple[str, str, str]
"""What a status write carries over from a condition: (type, status, lastTransitionTime)."""


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """What the operator remembers of a claim: the domain view plus what writes need.

    One is kept for every claim the operator knows (10 000 held locks are 10 000 records), so it
    holds no more of the body than the decisions and the next write read, and shares the strings
    that recur (namespace, holder, resource, the conditions' names) instead of keeping a copy each."""

    namespace: str
    claim: Claim
    resource_version: str
    generation: int
    conditions: tuple[Condition, ...]
    pod_uid: str | None
    deleting: bool


def claim_record(body: Body, shared: Mapping[str, str] = NOTHING_SHARED) -> ClaimRecord:
    """`shared`: strings the caller keeps already (its lock's names, the claim's previous record's),
    each by its own value; the record keeps those objects instead of equal copies of its own."""
    parsed = objects.ClaimObject.parse(body)
    meta, spec, status = parsed.metadata, parsed.spec, parsed.status
    sequence = status.sequence or meta.revision
    holder = intern(spec.holder)
    claim = Claim(
        name=shared.get(meta.name, meta.name),
        uid=shared.get(meta.uid, meta.uid),
        resource=intern(spec.resource),
        holder=holder,
        sequence=sequence,
        created_at=_ts(meta.created_at) or 0.0,
        wait=spec.wait,
        ttl_seconds=spec.ttl_seconds,
        wait_timeout_seconds=spec.wait_timeout_seconds,
        pod_name=spec.pod_name,
        pod=PodLiveness.UNKNOWN if spec.bound else PodLiveness.NOT_BOUND,
        renew_request=parsed.renew_request,
        status=_claim_status(status, sequence, holder, shared),
        mode=_mode(spec.mode),
        permits=spec.permits,
        resources=spec.resources if len(spec.resources) > 1 else (),
        priority=spec.priority,
        on_busy=_on_busy(spec.on_busy),
        revoke_request=_revoke_request(parsed),
    )
    return ClaimRecord(
        namespace=intern(meta.namespace),
        claim=claim,
        resource_version=meta.resource_version,
        generation=meta.generation,
        conditions=_conditions(status.conditions),
        pod_uid=spec.pod_uid,
        deleting=meta.deleting,
    )


def _same(value: str | None, shared: Mapping[str, str]) -> str | None:
    """The caller's string equal to `value`, or `value` itself (see `claim_record`)."""
    return value if value is None else shared.get(value, value)


def _conditions(conditions: Sequence[Mapping[str, Any]]) -> tuple[Condition, ...]:
    """Only what the next status write carries over (a condition's transition time), as tuples of
    shared strings; the conditions' times are usually one and the same (they flip together)."""
    out: list[Condition] = []
    since = ""
    for condition in conditions:
        type_, value, time_ = condition.get("type"), condition.get("status"), condition.get("lastTransitionTime")
        if not isinstance(type_, str) or not isinstance(value, str):
            continue
        if isinstance(time_, str):
            since = since if time_ == since else time_
        out.append((intern(type_), intern(value), since if isinstance(time_, str) else ""))
    return tuple(out)


def _mode(value: str) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        return Mode.EXCLUSIVE  # read tolerantly: admission allows only the two


def lock_views(body: Body, shared: Mapping[str, str] = NOTHING_SHARED) -> tuple[Lock, ...]:
    """Every grant a ResourceLock records, the first grant first; `shared` as for `claim_record`
    (the names and uids of the grants' claims, the lock's name)."""
    parsed = objects.LockObject.parse(body)
    tokens = grant_tokens(body)
    return tuple(_grant(parsed, grant, tokens, shared) for grant in parsed.spec.every_grant)


def lock_view(body: Body) -> Lock:
    """The first grant a ResourceLock records."""
    parsed = objects.LockObject.parse(body)
    return _grant(parsed, parsed.spec, grant_tokens(body))


def _grant(
    parsed: objects.LockObject,
    spec: objects.LockSpec,
    tokens: dict[str, int],
    shared: Mapping[str, str] = NOTHING_SHARED,
) -> Lock:
    acquired = _ts(spec.acquired_at) or 0.0
    return Lock(
        name=shared.get(parsed.metadata.name, parsed.metadata.name),
        uid=parsed.metadata.uid,
        resource=intern(spec.resource),
        holder=intern(spec.holder),
        claim_name=shared.get(spec.claim_name, spec.claim_name),
        claim_uid=shared.get(spec.claim_uid, spec.claim_uid),
        fencing_token=tokens.get(spec.claim_uid) or parsed.metadata.revision,
        acquired_at=acquired,
        renewed_at=_ts(spec.renew_time) or acquired,
        lease_seconds=spec.lease_seconds or 1,
        mode=_mode(spec.mode),
        permits=spec.permits,
        pod_name=spec.pod_name,
        pod_uid=spec.pod_uid,
    )


def _condition(
    previous: tuple[Condition, ...], type_: str, status: bool, reason: str, message: str, generation: int, now: float
) -> Body:
    value = "True" if status else "False"
    before = next((c for c in previous if c[0] == type_), None)
    # lastTransitionTime moves only when the condition flips.
    since = before[2] if before is not None and before[1] == value and before[2] else to_rfc3339(now)
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def status_body(status: ClaimStatus, record: ClaimRecord, now: float) -> Body:
    held = status.phase is Phase.HELD
    conditions = [
        _condition(record.conditions, CONDITION_HELD, held, status.reason, status.message, record.generation, now)
    ]
    if held:
        stale_reason = Reason.STALE if status.stale else Reason.RENEWED
        stale_message = _stale_condition_message(status)
        conditions.append(
            _condition(
                record.conditions, CONDITION_STALE, status.stale, stale_reason, stale_message, record.generation, now
            )
        )

    def ts(value: float | None) -> str | None:
        return to_rfc3339(value) if value is not None else None

    return {
        "phase": status.phase.value,
        "reason": status.reason.value,
        "message": status.message,
        "holder": status.holder,
        "lockName": status.lock_name,
        "fencingToken": status.fencing_token,
        "grants": _claim_grants(status, record.claim),
        "acquiredAt": ts(status.acquired_at),
        "renewedAt": ts(status.renewed_at),
        "expiresAt": ts(status.expires_at),
        "queuePosition": status.queue_position,
        "cycle": list(status.cycle) if status.cycle else None,
        "cycleLength": status.cycle_length,
        "sequence": status.sequence,
        "observedRenew": status.observed_renew,
        "finishedAt": ts(status.finished_at),
        "waitingSince": ts(status.waiting_since),
        "availableAt": ts(status.available_at),
        "revocation": _revocation_body(status.revocation),
        "requeues": status.requeues or None,
        "conditions": conditions,
        "observedGeneration": record.generation,
    }


def _claim_grants(status: ClaimStatus, claim: Claim) -> list[Body] | None:
    """status.grants: one entry per resource while Held."""
    if status.phase is Phase.HELD and status.grants:
        return [
            {"resource": g.resource, "lockName": g.lock_name, "fencingToken": g.fencing_token,
             "mode": claim.mode.value, "permits": claim.permits}
            for g in status.grants
        ]
    if status.phase is not Phase.HELD or status.lock_name is None or status.fencing_token is None:
        return None
    return [
        {
            "resource": claim.resource,
            "lockName": status.lock_name,
            "fencingToken": status.fencing_token,
            "mode": claim.mode.value,
            "permits": claim.permits,
        }
    ]
def _revocation_body(revocation: Revocation | None) -> Body | None:
    if revocation is None:
        return None
    return {
        "requestedAt": to_rfc3339(revocation.requested_at),
        "requestedBy": revocation.requested_by,
        "graceSeconds": revocation.grace_seconds,
        "deadline": to_rfc3339(revocation.deadline),
        "reason": revocation.reason or None,
    }


def _stale_condition_message(status: ClaimStatus) -> str:
    """Stale is about the renewal schedule (holders renew every third of the lease), not about how
    long the lock has been held."""
    if not status.stale:
        return "renewed on schedule (holders renew every third of the lease)"
    renewed = to_rfc3339(status.renewed_at) if status.renewed_at is not None else "its grant"
    expires = f"; the lease expires at {to_rfc3339(status.expires_at)} unless renewed" if status.expires_at else ""
    return f"not renewed on schedule: last renewed at {renewed}, and holders renew every third of the lease{expires}"


def status_update(status: ClaimStatus, record: ClaimRecord, now: float) -> Body:
    """The claim's whole status as a PUT of its status subresource, conditional on the version (and
    the uid) last seen: the API server keeps the stored spec and metadata and replaces the status.
    Fields without a value are left out, which removes them, as a merge patch's nulls did."""
    claim = record.claim
    return {
        "apiVersion": API_VERSION,
        "kind": CLAIM_KIND,
        "metadata": {
            "name": claim.name, "namespace": record.namespace, "uid": claim.uid,
            "resourceVersion": record.resource_version,
        },
        "status": {k: v for k, v in status_body(status, record, now).items() if v is not None},
    }


def lock_body(action: CreateLock, record: ClaimRecord, name: str) -> Body:
    claim = action.claim
    spec: Body = {
        "resource": action.target,
        "holder": claim.holder,
        "claimRef": {"name": claim.name, "uid": claim.uid},
        "leaseDurationSeconds": action.lease_seconds,
        "acquireTime": to_rfc3339(action.acquired_at),
        "renewTime": to_rfc3339(action.acquired_at),
        # Not earlier than the end its holder's `Held` will tell (`domain.leasestart`).
        "expireTime": to_rfc3339(shown_expiry(action.acquired_at, action.acquired_at, action.lease_seconds)),
        # The token is the lock's own creation revision, known only once it exists: until the lock's
        # first write records it, readers take the resourceVersion (`kubelock.api.fencing`).
        "fencingToken": 0,
    }
    if claim.pod_name:
        spec["podRef"] = {"name": claim.pod_name, **({"uid": record.pod_uid} if record.pod_uid else {})}
    if claim.need != EXCLUSIVE:
        # Only a lock that is not a plain mutex says so: an exclusive lock is the same object as ever.
        spec["mode"] = claim.mode.value
        spec["permits"] = claim.permits
    return {
        "apiVersion": API_VERSION,
        "kind": LOCK_KIND,
        "metadata": {
            "name": name,
            "namespace": record.namespace,
            # No labels: every ResourceLock is the operator's, and a label cost the API server 2-7 % more
            # CPU per lock create+delete (label validation, a metadata branch in managedFields).
            # No ownerReference to the claim: the operator is the lock's one deleter. With one, the
            # garbage collector read every released lock again and raced the operator to delete it
            # (a GET and up to one more DELETE per release). A lock whose claim went while no operator
            # ran is deleted when one starts: nobody can be granted the resource before then anyway.
            # No finalizers anywhere: nothing can block namespace deletion.
        },
        "spec": spec,
    }


def renew_patch(action: RenewLock, resource_version: str) -> Body:
    """A renewal, conditional on the version the decision saw. It records the token too: the first
    write of a lock must (admission refuses it otherwise), and a later one writes the same number."""
    return {
        "metadata": {"resourceVersion": resource_version},
        "spec": {
            "fencingToken": action.lock.fencing_token,
            "renewTime": to_rfc3339(action.renewed_at),
            "leaseDurationSeconds": action.lease_seconds,
            "expireTime": to_rfc3339(shown_expiry(action.lock.acquired_at, action.renewed_at, action.lease_seconds)),
        },
    }


def new_grant(action: CreateLock, record: ClaimRecord) -> Lock:
    """The grant `action` adds to an existing lock, as the domain sees it (its token 0: it is the
    revision of the write that stores it, known only once written)."""
    claim = action.claim
    return Lock(
        name="",
        uid="",
        resource=action.target,
        holder=claim.holder,
        claim_name=claim.name,
        claim_uid=claim.uid,
        fencing_token=0,
        acquired_at=action.acquired_at,
        renewed_at=action.acquired_at,
        lease_seconds=action.lease_seconds,
        mode=claim.mode,
        permits=claim.permits,
        pod_name=claim.pod_name,
        pod_uid=record.pod_uid if claim.pod_name else None,
    )


def _grant_fields(grant: Lock) -> Body:
    """The fields of one grant, as the top level or an entry of spec.grants records it."""
    fields: Body = {
        "holder": grant.holder,
        "claimRef": {"name": grant.claim_name, "uid": grant.claim_uid},
        "podRef": {"name": grant.pod_name, **({"uid": grant.pod_uid} if grant.pod_uid else {})}
        if grant.pod_name else None,
        "leaseDurationSeconds": grant.lease_seconds,
        "acquireTime": to_rfc3339(grant.acquired_at),
        "renewTime": to_rfc3339(grant.renewed_at),
        "expireTime": to_rfc3339(lock_shows(grant)),
        "fencingToken": grant.fencing_token,
        "mode": grant.mode.value,
        "permits": grant.permits,
    }
    return fields


def grants_patch(grants: Sequence[Lock], resource_version: str) -> Body:
    """A merge patch that makes `grants` the lock's grants (the first at the top level), conditional
    on the version they were read at. Each grant carries its token: those read at that version are
    resolved already (a 0 recorded there reads as the version, so the write fills it in, as
    admission requires), and a grant this write adds has 0 (`kubelock.api.fencing`)."""
    first, rest = grants[0], grants[1:]
    top = _grant_fields(first)
    return {
        "metadata": {"resourceVersion": resource_version},
        "spec": {
            **top,
            "grants": [{k: v for k, v in _grant_fields(g).items() if v is not None} for g in rest] or None,
            "holders": len(grants),
        },
    }


def without(grants: Sequence[Lock], claim_uids: Collection[str]) -> list[Lock]:
    """The grants left when those of `claim_uids` go: the first stays first, or the one with the
    lowest token (the oldest grant) moves up."""
    left = [g for g in grants if g.claim_uid not in claim_uids]
    if left and grants and grants[0].claim_uid in claim_uids:
        left.sort(key=lambda g: g.fencing_token)
    return left


def event_body(
    *,
    namespace: str,
    kind: str,
    name: str,
    uid: str,
    reason: str,
    message: str,
    warning: bool,
    now: float,
    component: str,
    instance: str,
    event_name: str | None = None,
) -> Body:
    """`event_name`: the Event's own name, for an Event every replica reports and the API server keeps
    once (the second create fails); without it, a name is generated."""
    stamp = to_rfc3339(now)
    meta = {"name": event_name} if event_name else {"generateName": f"{name[:200]}."}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {**meta, "namespace": namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": kind, "name": name, "namespace": namespace, "uid": uid},
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": stamp.split(".")[0] + "Z",
        "lastTimestamp": stamp.split(".")[0] + "Z",
        "eventTime": None,
        "count": 1,
        "action": reason,
    }
