"""What an administrator sees, against the real control plane: Stale only for holders that missed
their renewal schedule, an Event for every transition (releases too) that lock admins can read after
the claims are gone, breaks that always name who and why, a namespace's deletion told apart from a
break, finished claims cleaned up, and the kubelock roles inside the default admin/edit/view roles."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    ApiException,
    CoreV1Api,
    CustomObjectsApi,
)

from kubelock.api.constants import BREAK_ACTOR_ANNOTATION, BREAK_REASON_ANNOTATION
from kubelock.api.fencing import lock_token
from kubelock.domain.resource import lock_name, normalise
from kubelock.testbed import wait_until
from tests.integration.conftest import UserApi
from tests.support.access import allowed, bind
from tests.support.claims import GROUP, VERSION, Locks, phase_of, status_of
from tests.support.namespaces import new_namespace, temporary_namespace
from tests.support.operator import REPO, OperatorProcess

PREFIX = "kla-"
# Long enough for the test to read a finished claim (through a subprocess, on a loaded machine)
# before the operator removes it; 4 s need not be on a loaded machine.
FINISHED_TTL = 15
DEADLINE = 30


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    args = ("--log-format", "json", "--ttl-seconds-after-finished", str(FINISHED_TTL))
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",), extra_args=args) as op:
        yield op


@pytest.fixture
def ns(admin_api: ApiClient, operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        yield name


def events(api: ApiClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.type, e.message) for e in items]


def wait_event(api: ApiClient, namespace: str, name: str, reason: str) -> tuple[str, str, str]:
    found: list[tuple[str, str, str]] = []

    def seen() -> bool:
        found[:] = [e for e in events(api, namespace, name) if e[0] == reason]
        return bool(found)

    wait_until(seen, what=f"a {reason} Event for {name}", timeout=DEADLINE)
    return found[0]


def stale(body: dict[str, Any]) -> bool:
    return any(c["type"] == "Stale" and c["status"] == "True" for c in status_of(body).get("conditions", []))


def moment(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def log_entries(op: OperatorProcess, **match: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in op.log_lines() if line.startswith("{")]
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def wait_log(op: OperatorProcess, **match: str) -> dict[str, Any]:
    wait_until(lambda: bool(log_entries(op, **match)), what=f"an operator log line with {match}", timeout=DEADLINE)
    return log_entries(op, **match)[0]


# ---- Stale ---------------------------------------------------------------------------------------


def test_a_lease_renewed_on_schedule_is_never_stale_and_one_that_misses_it_is(
    admin_api: ApiClient, ns: str, operator: OperatorProcess
) -> None:
    locks = Locks(admin_api, ns)
    # Stale after half of a lease: "steady", renewed every third of its 24 s, has 4 s to spare for an
    # operator that a loaded machine holds up (a lease of 15 s left 2.5 s).
    locks.claim("steady", "deploy://steady", "agent-a", ttl=24)
    locks.claim("late", "deploy://late", "agent-b", ttl=50)  # Stale after 25 s, renewed well before 50 s
    # The schedule runs from the grant the operator wrote (acquiredAt, this machine's clock), not from
    # when this test saw it: a loaded machine can show the claim Held seconds late, and renewals timed
    # from then came after the operator's 12 s.
    began = moment(status_of(locks.wait_phase("steady", "Held"))["acquiredAt"])
    locks.wait_phase("late", "Held")
    beat = 0
    while time.time() - began < 26:  # three renewals of "steady", each a third of its lease apart
        if time.time() - began >= 8 * (beat + 1):
            beat += 1
            locks.renew("steady", f"beat-{beat}")
        assert not stale(locks.get("steady")), "a lease renewed every third of its TTL was marked Stale"
        time.sleep(0.2)
    late = locks.wait_for("late", stale, timeout=DEADLINE, what="Stale")
    condition = next(c for c in status_of(late)["conditions"] if c["type"] == "Stale")
    assert condition["message"].startswith("not renewed on schedule: last renewed at ")
    _, kind, message = wait_event(admin_api, ns, "late", "Stale")
    assert kind == "Warning"
    assert "has not been renewed for 25 seconds, 50% of its 50 seconds lease (holders renew every third of it)" \
        in message
    assert wait_log(operator, claim="late", reason="Stale")["level"] == "warning"
    assert not [e for e in events(admin_api, ns, "steady") if e[0] == "Stale"]
    assert not log_entries(operator, claim="steady", reason="Stale")

    locks.renew("late")
    locks.wait_for("late", lambda b: not stale(b), timeout=DEADLINE, what="not Stale")
    wait_event(admin_api, ns, "late", "Renewed")


# ---- Events and breaks ---------------------------------------------------------------------------


def test_lock_admins_read_every_transition_including_the_release_after_the_claim_is_gone(
    admin_api: ApiClient, user_api: UserApi, ns: str, operator: OperatorProcess
) -> None:
    bind(admin_api, ns, "kubelock-admin", "lockadmin")
    wait_until(lambda: allowed(admin_api, "lockadmin", ns, "list", "events", group=""), what="RBAC", timeout=DEADLINE)
    locks = Locks(admin_api, ns)
    locks.claim("a", "github://acme/app/issues/7", "agent-a")
    token = status_of(locks.wait_phase("a", "Held"))["fencingToken"]
    locks.delete("a")
    as_admin = user_api("lockadmin")
    _, kind, message = wait_event(as_admin, ns, "a", "Released")
    assert kind == "Normal"
    assert message.startswith(f"agent-a released github://acme/app/issues/7 (fencing token {token}) after holding")
    assert [r for r, _, _ in events(as_admin, ns, "a")].count("Granted") == 1
    entry = wait_log(operator, claim="a", reason="Released")
    assert entry["outcome"] == "Released" and entry["holder"] == "agent-a"


def test_a_lock_without_its_claim_is_removed_and_the_log_says_why(admin_api: ApiClient, ns: str,
                                                                  operator: OperatorProcess) -> None:
    """A ResourceLock whose claim does not exist (written by hand, or its claim deleted while no
    operator watched) is removed, and the log names the grant and the missing claim: someone may be
    looking for where it went."""
    locks = Locks(admin_api, ns)
    locks.claim("model", "deploy://model", "agent-m")
    locks.wait_phase("model", "Held")
    model = locks.lock(lock_name(normalise("deploy://model")))
    resource = "deploy://by-hand"
    spec = {**model["spec"], "resource": resource, "holder": "agent-h",
            "claimRef": {"name": "nobody", "uid": "00000000-0000-0000-0000-000000000042"}, "fencingToken": 0}
    name = lock_name(normalise(resource))
    CustomObjectsApi(admin_api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "resourcelocks",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceLock", "metadata": {"name": name}, "spec": spec})
    wait_until(lambda: name not in {b["metadata"]["name"] for b in locks.locks()}, what="the lock removed",
               timeout=DEADLINE)
    entry = wait_log(operator, reason="NoClaim", resource=resource)
    assert entry["outcome"] == "Removed" and entry["holder"] == "agent-h"
    assert "its claim nobody (uid 00000000-0000-0000-0000-000000000042) does not exist" in entry["message"]
    assert not log_entries(operator, reason="NoClaim", resource="deploy://model")


def test_a_lock_admin_must_record_who_breaks_a_lock_and_the_record_outlives_the_claim(
    admin_api: ApiClient, user_api: UserApi, ns: str, operator: OperatorProcess
) -> None:
    bind(admin_api, ns, "kubelock-admin", "lockadmin")
    wait_until(lambda: allowed(admin_api, "lockadmin", ns, "delete", "resourcelocks"), what="RBAC", timeout=DEADLINE)
    locks = Locks(admin_api, ns)
    locks.claim("held", "deploy://api-prod", "agent-b")
    lock = status_of(locks.wait_phase("held", "Held"))["lockName"]
    as_admin = CustomObjectsApi(user_api("lockadmin"))

    # A plain `kubectl delete resourcelock` is refused, and the refusal says how to record the break.
    with pytest.raises(ApiException) as refused:
        as_admin.delete_namespaced_custom_object(GROUP, VERSION, ns, "resourcelocks", lock)
    assert refused.value.status == 403
    detail = json.loads(refused.value.body or "{}")["message"]
    assert "kubectl lock unlock deploy://api-prod --reason" in detail
    # ... with the lock's token, which the record carries (kubelock-lock-token).
    token = lock_token(locks.lock(lock))
    assert '"kubelock.dev/broken-by":"lockadmin"' in detail and f'"spec":{{"fencingToken":{token}}}' in detail
    assert phase_of(locks.get("held")) == "Held"

    # Naming oneself (kubelock-break-actor refuses anyone else) lets the delete through.
    record = {BREAK_ACTOR_ANNOTATION: "lockadmin", BREAK_REASON_ANNOTATION: "deploy stuck since Friday"}
    patch = {"metadata": {"annotations": record}, "spec": {"fencingToken": token}}
    as_admin.patch_namespaced_custom_object(GROUP, VERSION, ns, "resourcelocks", lock, patch)
    as_admin.delete_namespaced_custom_object(GROUP, VERSION, ns, "resourcelocks", lock)
    revoked = status_of(locks.wait_phase("held", "Revoked"))
    assert revoked["reason"] == "LockBroken"
    assert revoked["message"] == "the lock on deploy://api-prod was broken by lockadmin: deploy stuck since Friday"

    entry = wait_log(operator, claim="held", reason="LockBroken")
    assert entry["actor"] == "lockadmin" and entry["breakReason"] == "deploy stuck since Friday"
    assert entry["level"] == "warning"

    locks.delete("held")  # the holder cleans up; the audit trail stays readable
    _, kind, message = wait_event(user_api("lockadmin"), ns, "held", "LockBroken")
    assert kind == "Warning" and "broken by lockadmin: deploy stuck since Friday" in message


@contextlib.contextmanager
def claims_outlive_locks(admin_api: ApiClient, namespace: str) -> Iterator[None]:
    """While the namespace is deleted, keep its claims (refuse their deletion) so that the deletion of
    the locks is seen first, as it may be in any cluster: the namespace controller's order is not
    fixed. Test-only admission policy, removed afterwards."""
    name = f"test-keep-claims-{namespace}"
    admission = AdmissionregistrationV1Api(admin_api)
    admission.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [GROUP], "apiVersions": ["*"],
                                                    "resources": ["lockclaims"], "operations": ["DELETE"]}]},
            "validations": [{"expression": "false", "message": "kept by the test", "reason": "Forbidden"}],
        },
    })
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    })
    try:
        yield
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


def test_a_namespace_being_deleted_revokes_held_claims_with_its_own_reason(
    admin_api: ApiClient, operator: OperatorProcess
) -> None:
    ns = new_namespace(admin_api, PREFIX)
    locks = Locks(admin_api, ns)
    names = [f"c{i}" for i in range(3)]
    for name in names:
        locks.claim(name, f"deploy://svc-{name}", f"agent-{name}")
    locks.wait_phases(names, "Held")
    objects = CustomObjectsApi(admin_api)

    def claims_kept() -> bool:
        try:
            objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", names[0], dry_run="All")
        except ApiException as error:
            return error.status == 403
        return False

    with claims_outlive_locks(admin_api, ns):
        wait_until(claims_kept, what="the test policy to keep claims", timeout=DEADLINE)
        CoreV1Api(admin_api).delete_namespace(ns)
        for name in names:
            status = status_of(locks.wait_phase(name, "Revoked", timeout=60))
            assert status["reason"] == "NamespaceDeleted"
            assert status["message"] == f"the lock on deploy://svc-{name} ended because its namespace is being deleted"
            entry = wait_log(operator, namespace=ns, claim=name, reason="NamespaceDeleted")
            assert entry["outcome"] == "Revoked" and "actor" not in entry
    assert not log_entries(operator, namespace=ns, reason="LockBroken"), "a namespace deletion read as a break"


# ---- finished claims -----------------------------------------------------------------------------


def test_finished_claims_are_removed_after_ttl_seconds_after_finished_and_clients_read_them_first(
    control_plane, admin_api: ApiClient, ns: str, operator: OperatorProcess  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, ns)
    locks.claim("a", "deploy://busy", "agent-a")
    locks.wait_phase("a", "Held")
    # The drop-in command reads the outcome of its own try-lock before the record is removed.
    env = {"PYTHONPATH": str(REPO / "operator"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from kubelock.cli.compat import rlock; sys.exit(rlock())",
         "deploy://busy", "--kubeconfig", str(control_plane.kubeconfig), "-n", ns, "--holder", "agent-b"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["holder"] == "agent-a"
    rejected = [c for c in locks.claims() if c["spec"]["holder"] == "agent-b"]
    assert rejected and phase_of(rejected[0]) == "Rejected"
    finished = status_of(rejected[0])["finishedAt"]
    assert finished

    name = rejected[0]["metadata"]["name"]
    wait_until(lambda: all(c["metadata"]["name"] != name for c in locks.claims()),
               what="the Rejected claim to be removed", timeout=FINISHED_TTL + DEADLINE)
    entry = wait_log(operator, claim=name, outcome="Removed")
    assert entry["reason"] == "HeldByAnotherHolder"
    assert phase_of(locks.get("a")) == "Held"  # a live claim is never removed


# ---- roles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default_role", "user", "verb", "resource"),
    [
        pytest.param("view", "viewer", "list", "lockclaims", id="view-reads-claims"),
        pytest.param("edit", "carol", "create", "lockclaims", id="edit-takes-locks"),
        pytest.param("admin", "bob", "delete", "resourcelocks", id="admin-breaks-locks"),
    ],
)
def test_kubelock_roles_aggregate_into_the_default_roles(
    admin_api: ApiClient, ns: str, default_role: str, user: str, verb: str, resource: str
) -> None:
    assert not allowed(admin_api, user, ns, verb, resource)
    bind(admin_api, ns, default_role, user)
    wait_until(lambda: allowed(admin_api, user, ns, verb, resource),
               what=f"{user} with {default_role} to be allowed to {verb} {resource}", timeout=DEADLINE)

