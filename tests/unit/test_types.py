"""The pydantic API models: what a LockClaim spec accepts and how it says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubelock.api.types import LockClaim, LockClaimSpec, LockClaimStatus, LockPolicySpec, ResourceLockSpec

BASE: dict[str, Any] = {"resource": "github://acme/app/issues/42", "holder": "agent-a"}


def spec(**changes: Any) -> dict[str, Any]:
    body = {**BASE, **changes}
    return {k: v for k, v in body.items() if v is not ...}  # `...` drops a field


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(spec(), {"ttl_seconds": None, "wait": False, "wait_timeout_seconds": None, "pod_ref": None},
                     id="minimal"),
        pytest.param(spec(ttlSeconds=1), {"ttl_seconds": 1}, id="ttl-min"),
        pytest.param(spec(ttlSeconds=86400), {"ttl_seconds": 86400}, id="ttl-max"),
        pytest.param(spec(ttlSeconds="60"), {"ttl_seconds": 60}, id="ttl-numeric-string"),
        pytest.param(spec(wait=True, waitTimeoutSeconds=30), {"wait": True, "wait_timeout_seconds": 30},
                     id="wait-with-timeout"),
        pytest.param(spec(podRef={"name": "agent-a-7d9f", "uid": "1234-abcd"}), {}, id="pod-ref"),
        pytest.param(spec(podRef={"name": "agent-a"}), {}, id="pod-ref-without-uid"),
        pytest.param(spec(resource="GITHUB://acme/App/"), {"resource": "GITHUB://acme/App/"},
                     id="resource-kept-unnormalised"),
        pytest.param(spec(resource="a://" + "x" * 1020), {}, id="resource-1024-chars"),
        pytest.param(spec(holder="h" * 253), {}, id="holder-253-chars"),
        pytest.param(spec(holder="system:serviceaccount:ns:bot"), {}, id="holder-user-name"),
        pytest.param(spec(mode="Shared"), {"mode": "Shared", "permits": 1}, id="shared"),
        pytest.param(spec(permits=3), {"mode": "Exclusive", "permits": 3}, id="permits"),
        pytest.param(spec(resource=..., resources=["a://1", "b://2"]), {"resource": None, "resources": ["a://1", "b://2"]},
                     id="resources"),
        pytest.param({**BASE, "ttl_seconds": 5, "wait_timeout_seconds": 3, "wait": True},
                     {"ttl_seconds": 5, "wait_timeout_seconds": 3}, id="python-field-names"),
    ],
)
def test_valid_specs(body: dict[str, Any], expected: dict[str, Any]) -> None:
    parsed = LockClaimSpec.model_validate(body)
    for name, value in expected.items():
        assert getattr(parsed, name) == value


def test_spec_round_trips_with_camel_case_names() -> None:
    body = spec(ttlSeconds=60, wait=True, waitTimeoutSeconds=30, podRef={"name": "p", "uid": "u"})
    dumped = LockClaimSpec.model_validate(body).model_dump(by_alias=True, exclude_none=True)
    # the defaults, spelt out
    assert dumped == {**body, "mode": "Exclusive", "permits": 1, "priority": 0, "onBusy": "Fail"}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        pytest.param({"priority": 1001}, "priority must be between -1000 and 1000", id="priority-above"),
        pytest.param({"priority": -1001}, "priority must be between -1000 and 1000", id="priority-below"),
        pytest.param({"onBusy": "Skip"}, "'Fail' or 'Requeue'", id="on-busy-unknown"),
    ],
)
def test_holder_policy_fields_are_bounded(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        LockClaimSpec.model_validate(spec(**changes))


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        pytest.param(spec(ttlSeconds=0), "ttlSeconds", "between 1 and 86400", id="ttl-zero"),
        pytest.param(spec(ttlSeconds=-5), "ttlSeconds", "between 1 and 86400", id="ttl-negative"),
        pytest.param(spec(ttlSeconds="abc"), "ttlSeconds", "valid integer", id="ttl-not-a-number"),
        pytest.param(spec(ttlSeconds=1.5), "ttlSeconds", "integer", id="ttl-fraction"),
        pytest.param(spec(ttlSeconds=86401), "ttlSeconds", "between 1 and 86400", id="ttl-above-ceiling"),
        pytest.param(spec(waitTimeoutSeconds=0, wait=True), "waitTimeoutSeconds", "between 1 and 86400",
                     id="wait-timeout-zero"),
        pytest.param(spec(waitTimeoutSeconds=86401, wait=True), "waitTimeoutSeconds", "between 1 and 86400",
                     id="wait-timeout-above-ceiling"),
        pytest.param(spec(owner="me"), "owner", "Extra inputs are not permitted", id="unknown-field"),
        pytest.param(spec(ttl=60), "ttl", "Extra inputs are not permitted", id="misspelt-field"),
        pytest.param(spec(resource=...), "", "exactly one of resource", id="resource-missing"),
        pytest.param(spec(resources=["a://1"]), "", "exactly one of resource", id="resource-and-resources"),
        pytest.param(spec(resource=..., resources=[]), "resources", "at least 1 item", id="resources-empty"),
        pytest.param(spec(resource=..., resources=["a://1", "a://1"]), "", "twice", id="resources-repeat"),
        pytest.param(spec(resource=..., resources=["a://1", "nope"]), "resources.1", "://", id="resources-bad-uri"),
        pytest.param(spec(mode="Read"), "mode", "'Exclusive' or 'Shared'", id="mode-unknown"),
        pytest.param(spec(permits=0), "permits", "between 1 and 1000", id="permits-zero"),
        pytest.param(spec(permits=1001), "permits", "between 1 and 1000", id="permits-above-ceiling"),
        pytest.param(spec(mode="Shared", permits=2), "", "Shared claim takes no permits", id="shared-permits"),
        pytest.param(spec(holder=...), "holder", "Field required", id="holder-missing"),
        pytest.param(spec(resource=""), "resource", "must not be empty", id="resource-empty"),
        pytest.param(spec(resource="github/acme"), "resource", "://", id="resource-no-separator"),
        pytest.param(spec(resource="1abc://x"), "resource", "scheme '1abc' is invalid", id="resource-bad-scheme"),
        pytest.param(spec(resource="a_b://x"), "resource", "scheme 'a_b' is invalid", id="resource-underscore"),
        pytest.param(spec(resource="a://x y"), "resource", "whitespace or control", id="resource-space"),
        pytest.param(spec(resource="a://x\u200b"), "resource", "U+200B", id="resource-zero-width"),
        pytest.param(spec(resource="a://" + "x" * 1021), "resource", "1025", id="resource-1025-chars"),
        pytest.param(spec(resource=42), "resource", "string", id="resource-not-a-string"),
        pytest.param(spec(holder=""), "holder", "", id="holder-empty"),
        pytest.param(spec(holder="h" * 254), "holder", "", id="holder-254-chars"),
        pytest.param(spec(holder="agent a"), "holder", "whitespace or control", id="holder-space"),
        pytest.param(spec(holder="agent\n"), "holder", "U+000A", id="holder-newline"),
        pytest.param(spec(podRef={"name": "Bad_Name"}), "podRef.name", "pattern", id="pod-name-not-dns"),
        pytest.param(spec(podRef={"uid": "u"}), "podRef.name", "Field required", id="pod-name-missing"),
        pytest.param(spec(podRef={"name": "p", "node": "n"}), "podRef.node", "Extra inputs", id="pod-ref-extra"),
        pytest.param(spec(wait="maybe"), "wait", "boolean", id="wait-not-a-boolean"),
    ],
)
def test_invalid_specs_name_the_field(body: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        LockClaimSpec.model_validate(body)
    errors = info.value.errors()
    located = [e for e in errors if ".".join(str(p) for p in e["loc"]) == field]
    assert located, f"no error located at {field}: {errors}"
    assert any(fragment in e["msg"] for e in located), located
    assert field.split(".")[0] in str(info.value)  # the rendered message names the field too


def test_lock_claim_document() -> None:
    claim = LockClaim.model_validate(
        {
            "apiVersion": "kubelock.dev/v1alpha1",
            "kind": "LockClaim",
            "metadata": {"name": "c", "namespace": "ns", "labels": {"x": "y"}},
            "spec": spec(wait=True),
            "status": {"phase": "Pending", "queuePosition": 2, "holder": "agent-b"},
        }
    )
    assert claim.spec.wait is True
    assert claim.status is not None
    assert claim.status.queue_position == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"apiVersion": "kubelock.dev/v1", "kind": "LockClaim", "spec": spec()}, "apiVersion",
                     id="wrong-version"),
        pytest.param({"kind": "ResourceLock", "spec": spec()}, "kind", id="wrong-kind"),
        pytest.param({"spec": spec(ttlSeconds=0)}, "spec.ttlSeconds", id="nested-spec-error"),
    ],
)
def test_lock_claim_document_errors(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        LockClaim.model_validate(body)
    assert field in [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    "phase", ["Pending", "Held", "Rejected", "TimedOut", "Expired", "Deadlocked", "Revoked"]
)
def test_status_phases_of_the_contract(phase: str) -> None:
    assert LockClaimStatus.model_validate({"phase": phase}).phase == phase


def test_status_rejects_unknown_phase() -> None:
    with pytest.raises(ValidationError, match="phase"):
        LockClaimStatus.model_validate({"phase": "Granted"})


def test_resource_lock_spec_lease_must_be_positive() -> None:
    body = {
        "resource": "a://x", "holder": "h", "claimRef": {"name": "c", "uid": "u"}, "leaseDurationSeconds": 0,
        "acquireTime": "2026-01-01T00:00:00Z", "renewTime": "2026-01-01T00:00:00Z", "fencingToken": 3,
    }
    with pytest.raises(ValidationError, match="leaseDurationSeconds"):
        ResourceLockSpec.model_validate(body)
    assert ResourceLockSpec.model_validate({**body, "leaseDurationSeconds": 30}).fencing_token == 3


# ---- LockPolicy ---------------------------------------------------------------------------------


def test_a_lock_policy_defaults_to_todays_behaviour() -> None:
    spec = LockPolicySpec.model_validate({"resourcePrefix": "deploy://"})
    assert (spec.capacity, spec.lock_delay_seconds) == (1, 0)
    assert spec.max_held_per_holder is None and spec.max_waiting_per_namespace is None


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"resourcePrefix": "x://", "capacity": 0}, "capacity must be between 1 and 10000"),
        ({"resourcePrefix": "x://", "capacity": 10001}, "capacity must be between 1 and 10000"),
        ({"resourcePrefix": "x://", "lockDelaySeconds": 61}, "lockDelaySeconds must be between 0 and 60"),
        ({"resourcePrefix": "x://", "lockDelaySeconds": -1}, "lockDelaySeconds must be between 0 and 60"),
        ({"resourcePrefix": "x://", "maxHeldPerHolder": 0}, "maxHeldPerHolder must be at least 1, not 0; leave the "
         "field out for no limit"),
        ({"resourcePrefix": "x://", "maxWaitingPerNamespace": -3}, "maxWaitingPerNamespace must be at least 1"),
        ({"capacity": 2}, "resourcePrefix"),
    ],
)
def test_a_bad_lock_policy_is_refused_before_it_is_sent(spec: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        LockPolicySpec.model_validate(spec)
