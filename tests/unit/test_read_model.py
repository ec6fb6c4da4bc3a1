"""The read model of API objects (`kubelock.api.objects`): bodies shaped as the API server returns them
(a claim the operator decided, a lock it granted), partial ones (not yet decided, written by an older
version) and malformed ones. Parsing never raises; the operator, the SDK and the chaos monitor read
the same body the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chaos.history import LockLife
from chaos.monitor import Monitor

from kubelock.api import objects
from kubelock.api.objects import ClaimObject, LockObject
from kubelock.domain.model import OnBusy, RevokeRequest
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.timefmt import from_rfc3339, to_rfc3339
from kubelock.kube import codec
from kubelock.sdk.model import ClaimInfo, LockInfo

R = "GitHub://acme/app/issues/42/"  # normalised: github://acme/app/issues/42
NORMAL = "github://acme/app/issues/42"
GRANTED = "2026-01-02T03:04:05.123456Z"
RENEWED = "2026-01-02T03:05:05.000000Z"
EXPIRES = "2026-01-02T03:10:05.000000Z"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def held_claim() -> dict[str, Any]:
    """A LockClaim as `kubectl get -o json` shows it once the operator granted it."""
    return {
        "apiVersion": "kubelock.dev/v1alpha1",
        "kind": "LockClaim",
        "metadata": {
            "name": "issue-42-x7k2p",
            "generateName": "issue-42-",
            "namespace": "team-a",
            "uid": "6f1c1b7e-0c1d-4e0e-9d1a-1f0c7b9a2d11",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "annotations": {"kubelock.dev/renew": "2026-01-02T03:05:04.9Z"},
            "managedFields": [{"manager": "kubelock", "operation": "Update"}],
        },
        "spec": {
            "resource": R,
            "holder": "agent-7",
            "wait": True,
            "ttlSeconds": 300,
            "waitTimeoutSeconds": 60,
            "podRef": {"name": "worker-0", "uid": "pod-uid-1"},
        },
        "status": {
            "phase": "Held",
            "reason": "Granted",
            "message": "agent-7 holds github://acme/app/issues/42 (fencing token 48190)",
            "holder": "agent-7",
            "lockName": "github-acme-app-issues-42-3f2a9c1d0e4b",
            "fencingToken": 48190,
            "acquiredAt": GRANTED,
            "renewedAt": RENEWED,
            "expiresAt": EXPIRES,
            "queuePosition": None,
            "cycle": None,
            "sequence": 48101,
            "observedRenew": "2026-01-02T03:05:04.9Z",
            "finishedAt": None,
            "waitingSince": "2026-01-02T03:04:05.000000Z",
            "observedGeneration": 1,
            "conditions": [
                {"type": "Held", "status": "True", "reason": "Granted", "message": "m",
                 "lastTransitionTime": GRANTED, "observedGeneration": 1},
                {"type": "Stale", "status": "False", "reason": "Renewed", "message": "m",
                 "lastTransitionTime": GRANTED, "observedGeneration": 1},
            ],
            "someFieldOfALaterVersion": {"x": 1},
        },
    }


def granted_lock() -> dict[str, Any]:
    return {
        "apiVersion": "kubelock.dev/v1alpha1",
        "kind": "ResourceLock",
        "metadata": {
            "name": "github-acme-app-issues-42-3f2a9c1d0e4b",
            "namespace": "team-a",
            "uid": "lock-uid-1",
            "resourceVersion": "48214",
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {"app.kubernetes.io/managed-by": "kubelock"},
        },
        "spec": {
            "resource": NORMAL,
            "holder": "agent-7",
            "claimRef": {"name": "issue-42-x7k2p", "uid": "6f1c1b7e-0c1d-4e0e-9d1a-1f0c7b9a2d11"},
            "leaseDurationSeconds": 300,
            "acquireTime": GRANTED,
            "renewTime": RENEWED,
            "expireTime": EXPIRES,
            "fencingToken": 48190,
            "podRef": {"name": "worker-0", "uid": "pod-uid-1"},
        },
    }


# ---- fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05.123456Z", datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2026-01-02T05:04:05+02:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("", None),
        ("yesterday", None),
        ("2026-13-02T03:04:05Z", None),
        (None, None),
        (1767323045, None),
        (["2026-01-02T03:04:05Z"], None),
    ],
)
def test_a_timestamp_reads_as_utc_or_as_absent(text: object, expected: datetime | None) -> None:
    parsed = objects.time_of(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"), [("48213", 48213), ("", 0), (None, 0), ("not-a-number", 0), (17, 17)]
)
def test_a_resource_version_reads_as_a_revision_or_zero(value: object, expected: int) -> None:
    assert objects.revision_of(value) == expected
    assert objects.revision({"metadata": {"resourceVersion": value}}) == expected


def test_a_revision_of_a_body_without_metadata_is_zero() -> None:
    assert objects.revision({}) == 0 and objects.resource_version({"metadata": None}) == ""


@pytest.mark.parametrize(("value", "expected"), [(5, 5), (0, 0), (True, None), ("5", None), (5.0, None), (None, None)])
def test_an_integer_field_is_a_json_integer(value: object, expected: int | None) -> None:
    assert objects.integer(value) == expected


# ---- a claim --------------------------------------------------------------------------------------


def test_a_decided_claim_parses_into_its_metadata_spec_and_status() -> None:
    claim = ClaimObject.parse(held_claim())
    meta, spec, status = claim.metadata, claim.spec, claim.status
    assert (meta.name, meta.namespace, meta.uid) == ("issue-42-x7k2p", "team-a", "6f1c1b7e-0c1d-4e0e-9d1a-1f0c7b9a2d11")
    assert (meta.resource_version, meta.revision, meta.generation) == ("48213", 48213, 1)
    assert meta.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and not meta.deleting
    assert claim.renew_request == "2026-01-02T03:05:04.9Z"
    assert spec.resource == NORMAL and spec.holder == "agent-7" and spec.wait
    assert (spec.ttl_seconds, spec.wait_timeout_seconds) == (300, 60)
    assert spec.bound and (spec.pod_name, spec.pod_uid) == ("worker-0", "pod-uid-1")
    assert status.phase is Phase.HELD and status.reason == "Granted"
    assert (status.holder, status.fencing_token, status.sequence) == ("agent-7", 48190, 48101)
    assert (status.acquired_at, status.renewed_at, status.expires_at) == (at(GRANTED), at(RENEWED), at(EXPIRES))
    assert status.finished_at is None and status.queue_position is None and status.cycle is None
    assert not status.stale and status.held_changed_at == at(GRANTED)
    assert [c["type"] for c in status.conditions] == ["Held", "Stale"]


def test_a_claim_not_yet_decided_has_no_status() -> None:
    body = held_claim()
    del body["status"]
    claim = ClaimObject.parse(body)
    assert claim.status.phase is None and claim.status.reason is None and claim.status.message == ""
    assert claim.status.conditions == () and not claim.status.stale
    assert codec.claim_record(body).claim.status is None
    assert codec.claim_record(body).claim.sequence == 48213  # first seen at its own revision
    info = ClaimInfo.from_body(body)
    assert info.phase is None and not info.held and not info.terminal


def test_a_deadlocked_claim_carries_its_cycle_and_a_stale_holder_its_condition() -> None:
    body = held_claim()
    body["status"].update(phase="Deadlocked", reason="DeadlockDetected", cycle=["a", "b", "a"])
    body["status"]["conditions"][1]["status"] = "True"
    status = ClaimObject.parse(body).status
    assert status.phase is Phase.DEADLOCKED and status.cycle == ("a", "b", "a") and status.stale


def test_a_malformed_claim_reads_as_absent_fields_and_never_raises() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "c", "uid": "u", "resourceVersion": "abc", "generation": "2", "annotations": None,
                     "creationTimestamp": "not a time", "deletionTimestamp": "2026-01-02T03:04:05Z"},
        "spec": {"resource": None, "holder": None, "ttlSeconds": "300", "podRef": "worker-0"},
        "status": {"phase": "Bogus", "reason": 7, "fencingToken": "48190", "acquiredAt": 12,
                   "cycle": "a->b", "sequence": True,
                   "conditions": ["Held", None, {"type": "Stale", "status": "True"}]},
    }
    claim = ClaimObject.parse(body)
    assert claim.metadata.revision == 0 and claim.metadata.generation == 0 and claim.metadata.created_at is None
    assert claim.metadata.deleting and claim.metadata.annotations == {} and claim.renew_request is None
    assert (claim.spec.resource, claim.spec.holder, claim.spec.ttl_seconds) == ("://", "", None)
    assert not claim.spec.bound and claim.spec.pod_name is None
    status = claim.status
    assert status.phase is None and status.reason is None and status.fencing_token is None
    assert status.acquired_at is None and status.cycle is None and status.sequence is None
    assert status.stale and len(status.conditions) == 1
    # The operator and the SDK take the same view of it: undecided.
    assert codec.claim_record(body).claim.status is None
    assert ClaimInfo.from_body(body).phase is None


@pytest.mark.parametrize("body", [{}, {"metadata": None, "spec": None, "status": None}, {"metadata": [], "spec": "x"}])
def test_an_empty_or_wrongly_typed_body_parses(body: dict[str, Any]) -> None:
    claim = ClaimObject.parse(body)
    assert claim.metadata.name == "" and claim.status.phase is None
    lock = LockObject.parse(body)
    assert lock.spec.fencing_token is None and lock.spec.expires_at is None


def test_the_operator_and_the_sdk_read_a_claim_alike() -> None:
    body = held_claim()
    record = codec.claim_record(body)
    info = ClaimInfo.from_body(body)
    status = record.claim.status
    assert status is not None and status.reason is Reason.GRANTED
    assert record.claim.resource == info.resource == NORMAL
    assert status.phase is info.phase is Phase.HELD
    assert status.fencing_token == info.fencing_token == 48190
    assert info.expires_at is not None and status.expires_at == info.expires_at.timestamp() == from_rfc3339(EXPIRES)
    assert info.acquired_at is not None and status.acquired_at == info.acquired_at.timestamp()
    assert record.claim.renew_request == info.renew_request
    assert record.pod_uid == "pod-uid-1" and record.claim.pod_name == "worker-0"
    assert record.conditions[0] == ("Held", "True", GRANTED)


def test_a_status_the_operator_writes_reads_back_as_it_was() -> None:
    record = codec.claim_record(held_claim())
    assert record.claim.status is not None
    written = codec.status_body(record.claim.status, record, now=from_rfc3339(RENEWED))
    assert codec.claim_status(written, 0) == record.claim.status


# ---- a lock ---------------------------------------------------------------------------------------


def revoked_claim() -> dict[str, Any]:
    """A held claim an administrator asked to give its lock back, with a priority and onBusy."""
    body = held_claim()
    body["metadata"]["annotations"].update({
        "kubelock.dev/revoke-requested-by": "user:ops", "kubelock.dev/revoke-grace-seconds": "45",
        "kubelock.dev/revoke-reason": "maintenance",
    })
    body["spec"].update({"priority": 7, "onBusy": "Requeue"})
    body["status"].update({
        "requeues": 2,
        "revocation": {"requestedAt": RENEWED, "requestedBy": "user:ops", "graceSeconds": 45,
                       "deadline": EXPIRES, "reason": "maintenance"},
    })
    return body


def test_the_operator_and_the_sdk_read_holder_policy_alike() -> None:
    body = revoked_claim()
    record = codec.claim_record(body)
    info = ClaimInfo.from_body(body)
    claim, status = record.claim, record.claim.status
    assert claim.priority == info.priority == 7
    assert claim.on_busy is OnBusy.REQUEUE
    assert claim.revoke_request == RevokeRequest("user:ops", 45, "maintenance")
    assert status is not None and status.revocation is not None and info.revocation is not None
    assert status.revocation.deadline == info.revocation.deadline.timestamp() == from_rfc3339(EXPIRES)
    assert status.revocation.requested_by == info.revocation.requested_by == "user:ops"
    assert status.requeues == info.requeues == 2
    written = codec.status_body(status, record, now=from_rfc3339(RENEWED))
    assert codec.claim_status(written, 0) == status


@pytest.mark.parametrize(
    ("annotations", "spec", "expected_grace", "on_busy"),
    [
        pytest.param({"kubelock.dev/revoke-requested-by": "u"}, {}, 30, OnBusy.FAIL, id="grace-defaults"),
        pytest.param({"kubelock.dev/revoke-requested-by": "u", "kubelock.dev/revoke-grace-seconds": "soon"},
                     {"onBusy": "Later"}, 30, OnBusy.FAIL, id="malformed-read-tolerantly"),
        pytest.param({"kubelock.dev/revoke-grace-seconds": "5"}, {}, None, OnBusy.FAIL, id="no-requester-no-request"),
    ],
)
def test_holder_policy_reads_tolerantly(
    annotations: dict[str, str], spec: dict[str, Any], expected_grace: int | None, on_busy: OnBusy
) -> None:
    body = held_claim()
    body["metadata"]["annotations"] = annotations
    body["spec"].update(spec)
    claim = codec.claim_record(body).claim
    assert (claim.revoke_request.grace_seconds if claim.revoke_request else None) == expected_grace
    assert claim.on_busy is on_busy and claim.priority == 0


def test_a_granted_lock_parses_into_its_metadata_and_spec() -> None:
    lock = LockObject.parse(granted_lock())
    spec = lock.spec
    assert lock.metadata.revision == 48214 and lock.metadata.name.startswith("github-acme")
    assert (spec.resource, spec.holder, spec.claim_name) == (NORMAL, "agent-7", "issue-42-x7k2p")
    assert spec.claim_uid == "6f1c1b7e-0c1d-4e0e-9d1a-1f0c7b9a2d11" and spec.fencing_token == 48190
    assert (spec.acquired_at, spec.renewed_at, spec.expires_at) == (at(GRANTED), at(RENEWED), at(EXPIRES))
    assert spec.lease_seconds == 300 and spec.pod_name == "worker-0"


def test_a_lock_not_written_since_its_creation_reads_its_revision_as_its_token() -> None:
    body = granted_lock()
    body["spec"]["fencingToken"] = 0
    assert not LockObject.parse(body).spec.fencing_token
    created = int(body["metadata"]["resourceVersion"])
    assert codec.lock_view(body).fencing_token == created and LockInfo.from_body(body).fencing_token == created
    del body["spec"]["fencingToken"]
    assert LockObject.parse(body).spec.fencing_token is None and codec.lock_view(body).fencing_token == created


@pytest.mark.parametrize(
    ("drop", "expires"),
    [
        ((), EXPIRES),
        (("expireTime",), "2026-01-02T03:10:05.000000Z"),  # renewTime + lease
        (("expireTime", "renewTime"), "2026-01-02T03:09:05.123456Z"),  # acquireTime + lease
        (("expireTime", "renewTime", "acquireTime"), None),
    ],
)
def test_a_lock_written_before_expire_time_existed_expires_a_lease_after_its_last_renewal(
    drop: tuple[str, ...], expires: str | None
) -> None:
    body = granted_lock()
    for field in drop:
        del body["spec"][field]
    spec = LockObject.parse(body).spec
    assert spec.expires_at == (at(expires) if expires else None)
    assert LockInfo.from_body(body).expires_at == spec.expires_at


def test_the_operator_and_the_sdk_read_a_lock_alike() -> None:
    body = granted_lock()
    lock, info = codec.lock_view(body), LockInfo.from_body(body)
    assert (lock.name, lock.uid, lock.resource, lock.holder) == (info.name, info.uid, info.resource, info.holder)
    assert lock.claim_uid == info.claim_uid and lock.claim_name == info.claim_name
    assert lock.fencing_token == info.fencing_token and lock.lease_seconds == info.lease_seconds
    assert info.renewed_at is not None and lock.renewed_at == info.renewed_at.timestamp()


def test_a_lock_without_lease_or_times_takes_each_readers_defaults() -> None:
    body = granted_lock()
    for field in ("leaseDurationSeconds", "acquireTime", "renewTime", "expireTime"):
        del body["spec"][field]
    lock, info = codec.lock_view(body), LockInfo.from_body(body)
    assert (lock.lease_seconds, lock.acquired_at, lock.renewed_at) == (1, 0.0, 0.0)  # the domain's defaults
    assert (info.lease_seconds, info.acquired_at, info.expires_at) == (0, None, None)  # the SDK's


# ---- the chaos monitor ----------------------------------------------------------------------------


def test_the_chaos_monitor_records_what_the_read_model_reads() -> None:
    monitor = Monitor(kube=None, namespace="team-a")  # type: ignore[arg-type]  # fed by hand, never started
    claim, lock = held_claim(), granted_lock()
    pending = held_claim()
    pending["metadata"]["resourceVersion"] = "48102"
    pending["status"] = {"phase": "Pending", "reason": "Queued"}
    monitor._on_claim("ADDED", pending, 10.0)
    monitor._on_lock("ADDED", lock, 11.0)
    monitor._on_claim("MODIFIED", claim, 11.5)
    seen = monitor.claims[claim["metadata"]["uid"]]
    assert (seen.resource, seen.holder, seen.wait, seen.created_version) == (NORMAL, "agent-7", True, 48102)
    assert (seen.phase, seen.reason, seen.answered, seen.decided, seen.decided_version) == (
        "Held", "Granted", 10.0, 11.5, 48213)
    assert seen.held and seen.released is None
    held = monitor.locks[f"lock-uid-1/{claim['metadata']['uid']}"]  # its one grant
    assert (held.token, held.version, held.created_version, held.pod) == (48190, 48214, 48214, "worker-0")
    assert held.claim == claim["metadata"]["uid"] and held.expiry == from_rfc3339(EXPIRES)
    monitor._on_claim("DELETED", claim, 12.0)
    monitor._on_lock("DELETED", {"metadata": {"uid": "lock-uid-1"}}, 12.5)
    assert seen.released == 12.0 and seen.deleted == 12.0 and seen.deleted_version == 48213
    assert held.deleted == 12.5


def test_the_chaos_monitor_tolerates_partial_and_malformed_objects() -> None:
    monitor = Monitor(kube=None, namespace="team-a")  # type: ignore[arg-type]
    monitor._on_claim("ADDED", {"metadata": {"uid": "c1"}}, 1.0)  # no spec, no status
    bogus = {"metadata": {"uid": "c1", "resourceVersion": "x"}, "status": {"phase": "Bogus"}}
    monitor._on_claim("MODIFIED", bogus, 2.0)
    assert monitor.claims["c1"].phase is None and monitor.claims["c1"].decided is None
    monitor._on_lock("ADDED", {"metadata": {"uid": "l1"}, "spec": {"fencingToken": "7", "expireTime": "soon"}}, 3.0)
    assert monitor.locks["l1/"].token == 0 and monitor.locks["l1/"].expiry is None
    monitor._on_lock("MODIFIED", {"metadata": {"uid": "l1"}, "spec": {"fencingToken": 7}}, 4.0)
    assert monitor.locks["l1/"].token == 7
    monitor._on_claim("DELETED", {"metadata": {"uid": "unknown"}}, 5.0)  # never seen: nothing to record
    assert "unknown" not in monitor.claims
    assert len(monitor.records()) == 2


def test_the_chaos_monitor_follows_each_grant_of_a_shared_lock() -> None:
    monitor = Monitor(kube=None, namespace="team-a")  # type: ignore[arg-type]
    lock = granted_lock()
    lock["spec"]["mode"] = "Shared"
    monitor._on_lock("ADDED", lock, 1.0)
    second = {**lock["spec"], "holder": "agent-8", "claimRef": {"name": "b", "uid": "claim-b"}, "fencingToken": 0}
    del second["resource"]
    lock = {**lock, "metadata": {**lock["metadata"], "resourceVersion": "48300"},
            "spec": {**lock["spec"], "grants": [second], "holders": 2}}
    monitor._on_lock("MODIFIED", lock, 2.0)
    first_key = f"lock-uid-1/{lock['spec']['claimRef']['uid']}"
    added = monitor.locks["lock-uid-1/claim-b"]
    assert (added.token, added.created, added.created_version, added.holder) == (48300, 2.0, 48300, "agent-8")
    assert monitor.locks[first_key].token == 48190 and monitor.held_resources() == 1
    # The first grant goes: the second moves up with its token, recorded now.
    moved = {**second, "resource": NORMAL, "fencingToken": 48300}
    lock = {**lock, "metadata": {**lock["metadata"], "resourceVersion": "48400"}, "spec": {**moved, "holders": 1}}
    monitor._on_lock("MODIFIED", lock, 3.0)
    assert monitor.locks[first_key].deleted == 3.0
    assert added.deleted is None and added.token == 48300 and not added.other_tokens
    monitor._on_lock("DELETED", {"metadata": {"uid": "lock-uid-1"}}, 4.0)
    assert added.deleted == 4.0


def test_the_chaos_monitor_takes_a_grant_s_lease_as_the_later_of_its_lock_s_and_its_claim_s() -> None:
    """A grant's first lease counts from its `Held` write (kubelock.domain.leasestart): the claim's
    `expiresAt` may be later than the lock's `expireTime`, and a lock deleted at the claim's is on time."""
    monitor = Monitor(kube=None, namespace="team-a")  # type: ignore[arg-type]
    claim, lock = held_claim(), granted_lock()
    told = from_rfc3339(EXPIRES) + 1.5
    claim["status"]["expiresAt"] = to_rfc3339(told)
    monitor._on_lock("ADDED", lock, 11.0)
    monitor._on_claim("MODIFIED", claim, 11.5)
    (life,) = [r for r in monitor.records() if isinstance(r, LockLife)]
    assert life.expiry == told
    claim["status"]["expiresAt"] = to_rfc3339(told - 3)  # a claim's status older than the lock's renewal
    monitor._on_claim("MODIFIED", claim, 12.0)
    (life,) = [r for r in monitor.records() if isinstance(r, LockLife)]
    assert life.expiry == from_rfc3339(EXPIRES)
