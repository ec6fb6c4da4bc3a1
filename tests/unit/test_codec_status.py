"""Status read and written by the operator: when a claim finished, and what the Stale condition says."""

from __future__ import annotations

from typing import Any

from kubelock.domain.model import ClaimStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.timefmt import from_rfc3339
from kubelock.kube.codec import claim_record, claim_status, status_body, status_update
from kubelock.sdk.model import ClaimInfo

T = "2026-01-02T03:04:05.000000Z"
LATER = "2026-01-02T04:04:05.000000Z"


def body(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "7", "generation": 1,
                     "creationTimestamp": "2026-01-02T03:00:00Z"},
        "spec": {"resource": "deploy://x", "holder": "a"},
        "status": status,
    }


def test_finished_at_round_trips() -> None:
    status = ClaimStatus(phase=Phase.EXPIRED, reason=Reason.LEASE_EXPIRED, message="m", sequence=7,
                         finished_at=from_rfc3339(LATER))
    written = status_body(status, claim_record(body({})), now=from_rfc3339(LATER))
    assert written["finishedAt"] == LATER
    read = claim_status(written, 7)
    assert read is not None and read.finished_at == from_rfc3339(LATER)


def test_a_terminal_status_written_before_finished_at_existed_uses_the_held_conditions_flip() -> None:
    raw = {"phase": "Revoked", "reason": "LockBroken", "message": "m",
           "conditions": [{"type": "Held", "status": "False", "lastTransitionTime": LATER}]}
    read = claim_status(raw, 7)
    assert read is not None and read.finished_at == from_rfc3339(LATER)
    held = claim_status({"phase": "Held", "reason": "Granted", "message": "m"}, 7)
    assert held is not None and held.finished_at is None


def test_the_stale_condition_says_the_schedule_was_missed_and_when_the_lease_ends() -> None:
    status = ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="m", sequence=7,
                         renewed_at=from_rfc3339(T), expires_at=from_rfc3339(LATER), stale=True)
    conditions = status_body(status, claim_record(body({})), now=from_rfc3339(LATER))["conditions"]
    stale = next(c for c in conditions if c["type"] == "Stale")
    assert stale["status"] == "True" and stale["reason"] == "Stale"
    assert stale["message"] == (
        f"not renewed on schedule: last renewed at {T}, and holders renew every third of the lease; "
        f"the lease expires at {LATER} unless renewed"
    )
    fresh = status_body(ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="m", sequence=7),
                        claim_record(body({})), now=0)["conditions"]
    assert next(c for c in fresh if c["type"] == "Stale")["message"].startswith("renewed on schedule")


def test_available_at_round_trips_and_the_sdk_reads_it() -> None:
    status = ClaimStatus(phase=Phase.EXPIRED, reason=Reason.LEASE_EXPIRED, message="m", sequence=7,
                         finished_at=from_rfc3339(T), available_at=from_rfc3339(LATER))
    written = status_body(status, claim_record(body({})), now=from_rfc3339(T))
    assert written["availableAt"] == LATER
    read = claim_status(written, 7)
    assert read is not None and read.available_at == from_rfc3339(LATER)
    info = ClaimInfo.from_body(body(written))
    assert info.available_at is not None and info.available_at.timestamp() == from_rfc3339(LATER)
    held = status_body(ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="m", sequence=7),
                       claim_record(body({})), now=from_rfc3339(T))
    assert held["availableAt"] is None  # a merge patch of the whole status clears it


def test_a_condition_keeps_its_transition_time_until_it_flips_and_the_record_shares_its_strings() -> None:
    raw = {"phase": "Held", "reason": "Granted", "message": "m", "holder": "a", "lockName": "l", "fencingToken": 3,
           "conditions": [{"type": "Held", "status": "True", "lastTransitionTime": T, "reason": "Granted"},
                          {"type": "Stale", "status": "False", "lastTransitionTime": T, "message": "long text"}]}
    record = claim_record(body(raw))
    assert record.conditions == (("Held", "True", T), ("Stale", "False", T))
    assert record.conditions[0][2] is record.conditions[1][2]  # one string for the time both flipped at
    assert record.claim.status is not None and record.claim.status.holder is record.claim.holder
    assert record.namespace is claim_record(body({})).namespace
    stale = ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="m", sequence=7, stale=True)
    written = {c["type"]: c for c in status_body(stale, record, now=from_rfc3339(LATER))["conditions"]}
    assert written["Held"]["lastTransitionTime"] == T  # still True: not flipped
    assert written["Stale"]["lastTransitionTime"] == LATER  # False -> True: flipped now
    # A condition without a transition time (written by hand) flips at the write that reads it.
    bare = claim_record(body({**raw, "conditions": [{"type": "Held", "status": "True"}]}))
    assert status_body(stale, bare, now=from_rfc3339(LATER))["conditions"][0]["lastTransitionTime"] == LATER


def test_cycle_length_round_trips_and_the_sdk_reads_it() -> None:
    shown = ("a", "r://1", "b", "r://2", "a")
    status = ClaimStatus(phase=Phase.DEADLOCKED, reason=Reason.DEADLOCK, message="m", sequence=7,
                         cycle=shown, cycle_length=40, finished_at=from_rfc3339(T))
    written = status_body(status, claim_record(body({})), now=from_rfc3339(T))
    assert written["cycle"] == list(shown) and written["cycleLength"] == 40
    read = claim_status(written, 7)
    assert read is not None and read.cycle == shown and read.cycle_length == 40  # kept by a later rewrite
    info = ClaimInfo.from_body(body(written))
    assert info.cycle == shown and info.cycle_length == 40
    held = status_body(ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="m", sequence=7),
                       claim_record(body({})), now=from_rfc3339(T))
    assert held["cycleLength"] is None  # left out of the PUT of the whole status: cleared


def test_a_status_write_is_the_whole_status_conditional_on_the_version_and_uid_seen() -> None:
    """A PUT of the status subresource: fields without a value are left out (the PUT removes them),
    and the object's identity and version make it conditional."""
    record = claim_record(body({"phase": "Pending", "queuePosition": 3}))
    held = ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="m", sequence=7, holder="a",
                       lock_name="l", fencing_token=9)
    written = status_update(held, record, now=from_rfc3339(T))
    assert written["apiVersion"] == "kubelock.dev/v1alpha1" and written["kind"] == "LockClaim"
    assert written["metadata"] == {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "7"}
    assert "spec" not in written
    assert None not in written["status"].values()
    assert "queuePosition" not in written["status"] and written["status"]["fencingToken"] == 9
