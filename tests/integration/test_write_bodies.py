"""What the operator's writes carry, as the API server stores them. A claim's status is a PUT of the
status subresource carrying the whole status, conditional on the version it decided on: the API
server keeps the stored spec and metadata, fields the new status leaves out are gone, and no merge
patch is applied to the stored object. A lock carries nothing it does not need (no labels)."""

from __future__ import annotations

import re
from pathlib import Path

from kubernetes.client import ApiClient, CustomObjectsApi

from tests.support.claims import GROUP, VERSION, Locks, status_of, wait_until
from tests.support.operator import OperatorProcess


def _status_writes(admin_api: ApiClient) -> dict[str, int]:
    """The API server's count of writes to lockclaims/status, by verb (every namespace)."""
    response = admin_api.call_api("GET", f"{admin_api.configuration.host}/metrics")
    counts: dict[str, int] = {}
    for line in response.read().decode().splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="lockclaims"' in line \
                and 'subresource="status"' in line:
            verb = re.search(r'verb="([A-Z]+)"', line)
            if verb is not None:
                counts[verb.group(1)] = counts.get(verb.group(1), 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_status_is_written_whole_by_a_put_that_keeps_spec_and_metadata(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    before = _status_writes(admin_api)
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)):
        locks.claim("holder", "deploy://status-put", "agent-a")
        locks.wait_phase("holder", "Held")
        locks.claim("waiter", "deploy://status-put", "agent-b", wait=True)
        pending = status_of(locks.wait_phase("waiter", "Pending"))
        assert pending["queuePosition"] == 1 and "waitingSince" in pending
        # Metadata a status write must not touch (the status subresource ignores it in the body).
        CustomObjectsApi(admin_api).patch_namespaced_custom_object(
            GROUP, VERSION, iso_ns, "lockclaims", "waiter", {"metadata": {"labels": {"team": "blue"}}}
        )
        locks.delete("holder")
        held = locks.wait_phase("waiter", "Held")
    status = status_of(held)
    # Left out of the new status, so gone: no merge patch with nulls needed.
    assert "queuePosition" not in status and "waitingSince" not in status, status
    assert status["holder"] == "agent-b" and status["fencingToken"] > 0
    assert [c["type"] for c in status["conditions"]] == ["Held", "Stale"]
    assert held["metadata"]["labels"] == {"team": "blue"}
    assert held["spec"]["resource"] == "deploy://status-put" and held["spec"]["wait"] is True
    writes = {verb: n - before.get(verb, 0) for verb, n in _status_writes(admin_api).items()}
    # holder: Held; waiter: Pending, then Held. Other namespaces' operators may write too, never PATCH.
    assert writes.get("PUT", 0) >= 3, writes
    assert writes.get("PATCH", 0) == 0, writes


def test_a_lock_carries_no_labels_and_only_its_spec_is_managed(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)):
        locks.claim("a", "deploy://lean-lock", "agent-a")
        locks.wait_phase("a", "Held")
        (lock,) = locks.locks()
    assert "labels" not in lock["metadata"], lock["metadata"]
    managed = CustomObjectsApi(admin_api).get_namespaced_custom_object(
        GROUP, VERSION, iso_ns, "resourcelocks", lock["metadata"]["name"]
    )["metadata"]["managedFields"]
    assert [set(entry["fieldsV1"]) for entry in managed] == [{"f:spec"}], managed


def test_a_claims_spec_and_status_are_each_one_managed_field(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The claim's spec (its creator's) and status (the operator's) are atomic in the CRD: each is one
    field in managedFields, not one per leaf and per condition, which the API server would otherwise
    build, compare and store on every write."""
    locks = Locks(admin_api, iso_ns)
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)):
        locks.claim("a", "deploy://atomic-parts", "agent-a")
        locks.wait_phase("a", "Held")
    claim = CustomObjectsApi(admin_api).get_namespaced_custom_object(GROUP, VERSION, iso_ns, "lockclaims", "a")
    managed = claim["metadata"]["managedFields"]
    (status_entry,) = [entry for entry in managed if entry.get("subresource") == "status"]
    assert status_entry["fieldsV1"] == {"f:status": {}}, managed
    (spec_entry,) = [entry for entry in managed if "f:spec" in entry["fieldsV1"]]
    assert spec_entry["fieldsV1"]["f:spec"] == {}, managed
    # Readers see the same status as before: both conditions, in order.
    assert [c["type"] for c in status_of(claim)["conditions"]] == ["Held", "Stale"]


def test_a_locks_spec_is_one_managed_field_through_renewal_and_handoff(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The ResourceLock's spec is atomic in the CRD: its create and every merge patch after it (the
    renewal that records the token, the handoff to the next waiter) leave one field, `f:spec`, in
    managedFields instead of one per leaf. The merge patches still merge: what a patch leaves out is
    kept."""
    locks = Locks(admin_api, iso_ns)

    def spec_entries(name: str) -> list[object]:
        lock = locks.lock(name)
        return [entry["fieldsV1"] for entry in lock["metadata"]["managedFields"]]

    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)):
        locks.claim("a", "deploy://atomic-lock", "agent-a", ttl=600)
        name = status_of(locks.wait_phase("a", "Held"))["lockName"]
        assert spec_entries(name) == [{"f:spec": {}}]  # the create
        locks.renew("a")
        wait_until(lambda: locks.lock(name)["spec"]["fencingToken"] != 0, "the renewal's patch")
        renewed = locks.lock(name)
        assert spec_entries(name) == [{"f:spec": {}}]
        assert renewed["spec"]["resource"] == "deploy://atomic-lock"  # left out of the patch, kept
        assert renewed["spec"]["claimRef"]["name"] == "a"
        locks.claim("b", "deploy://atomic-lock", "agent-b", wait=True, ttl=600)
        locks.wait_phase("b", "Pending")
        locks.delete("a")
        held = status_of(locks.wait_phase("b", "Held"))
    assert held["lockName"] == name  # handed over: the same object, updated by a merge patch
    handed = locks.lock(name)
    assert (handed["spec"]["holder"], handed["spec"]["claimRef"]["name"]) == ("agent-b", "b")
    assert handed["spec"]["resource"] == "deploy://atomic-lock"
    assert spec_entries(name) == [{"f:spec": {}}]
