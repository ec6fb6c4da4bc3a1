"""LockPolicy against the real control plane: admission of bad policies, printer columns, lock-delay
after a break and after an expiry (also of a claim of several resources; none after a release),
policy changes deciding resources again, quotas (also kept by two operator replicas together, and
a quota ledger's reservation left without its grant), and a restart in the middle of a lock-delay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient, ApiException, CoordinationV1Api, CoreV1Api, CustomObjectsApi

from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.clock import SystemClock
from kubelock.domain.lockpolicy import LockPolicy, Quotas
from kubelock.domain.model import Policy
from kubelock.domain.quotaledger import RESERVATION_SECONDS, Entry, ledger_of
from kubelock.domain.quotas import Count
from kubelock.domain.resource import lock_name
from kubelock.kube import config as kube_config
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import Unreachable
from kubelock.kube.quotaledger import entries_of, lease_name, ledger_body
from kubelock.operator.cache import Cache, multi_key
from kubelock.operator.events import EventRecorder
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.reconciler import Reconciler
from tests.integration.test_multi import claim_all
from tests.integration.test_observability import scrape, value
from tests.support.access import bind, wait_allowed
from tests.support.claims import MIN_WAIT_SECONDS, Locks, phase_of, status_of, wait_until
from tests.support.commands import environment, kubectl, run
from tests.support.gatedclient import GatedClient
from tests.support.monitor import HolderMonitor, LockMonitor
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klp-"
GROUP, VERSION, PLURAL = "kubelock.dev", "v1alpha1", "lockpolicies"
# Rests long enough that a waiter's `LockDelay` status, which a test polls for, lasts well beyond a
# loaded machine's GET (4 s could pass before the poll saw it, and the waiter was Held by then).
DELAY = 10
SHORT_DELAY = 5
# A holder's lease that ends by itself: long enough that the waiters queue before it does (a loaded
# machine takes seconds between two claims).
SHORT_TTL = 6
RESTART_REST = 45  # the rest an operator restart falls into


@pytest.fixture(scope="module")
def policy_operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    """One operator for this module, watching only its namespaces (klp-*)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",), metrics=True) as op:
        yield op


# The operator that decides the claims of a test's namespace, where one does: a policy written there
# is waited on until that operator has seen it (see `_seen_by_operator`).
DECIDED_BY: dict[str, OperatorProcess] = {}
POLICY_SEEN_SECONDS = 60.0  # a watch event on a loaded machine


@pytest.fixture
def ns(admin_api: ApiClient, policy_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        DECIDED_BY[name] = policy_operator
        try:
            yield name
        finally:
            DECIDED_BY.pop(name, None)


@pytest.fixture
def locks(admin_api: ApiClient, ns: str) -> Locks:
    return Locks(admin_api, ns)


def apply_policy(api: ApiClient, ns: str, name: str, *, governed: bool = True, **spec: Any) -> dict[str, Any]:
    """Create or replace the policy and, with `governed`, wait until the operator governs with it (its
    `status.observedGeneration`): a claim made before may be decided without it (docs/api.md, "When a
    policy starts to govern"), which a loaded machine shows. Without an operator watching `ns`, pass
    `governed=False`."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockPolicy", "metadata": {"name": name}, "spec": spec}
    objects = CustomObjectsApi(api)
    try:
        current = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as error:
        if error.status != 404:
            raise
        written = dict(objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body))
    else:
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        written = dict(objects.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body))
    generation = written["metadata"]["generation"]
    if not governed:
        return written

    def governs() -> bool:
        seen = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return bool((seen.get("status") or {}).get("observedGeneration", 0) >= generation)

    wait_until(governs, f"the operator governs with LockPolicy {ns}/{name} generation {generation}", timeout=60)
    return written


def delete_policy(api: ApiClient, ns: str, name: str) -> None:
    with _seen_by_operator(ns, name):
        CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


@contextlib.contextmanager
def _seen_by_operator(ns: str, name: str) -> Iterator[None]:
    """Return from a policy deletion only once the operator deciding `ns` has seen it (a deleted policy
    has no status to wait for; `apply_policy` waits for `observedGeneration`). Policies have a
    watch of their own (docs/architecture.md, quotas): a claim made right after the write can be
    decided before the policy's event arrives, which a loaded machine makes likely (a claim granted
    with no rest, no quota, no ledger). The operator logs each policy event it takes in."""
    operator = DECIDED_BY.get(ns)
    if operator is None:
        yield
        return
    line = f"LockPolicy {ns}/{name} "

    def seen() -> int:
        return operator.log_text().count(line)

    before = seen()
    yield
    wait_until(lambda: seen() > before, f"the operator to see the write of LockPolicy {name}",
               timeout=POLICY_SEEN_SECONDS)


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def event_reasons(api: ApiClient, ns: str, name: str) -> list[str]:
    items = CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [e.reason for e in items]


def wait_event(api: ApiClient, ns: str, name: str, reason: str) -> None:
    wait_until(lambda: reason in event_reasons(api, ns, name), f"a {reason} Event on {name}", timeout=60)


def holder_and_waiter(locks: Locks, resource: str, ttl: int | None = None) -> dict[str, Any]:
    locks.claim("a", resource, "agent-a", ttl=ttl)
    held = status_of(locks.wait_phase("a", "Held"))
    locks.claim("b", resource, "agent-b", wait=True)
    locks.wait_phase("b", "Pending")
    return held


def assert_rested(locks: Locks, ended: dict[str, Any]) -> dict[str, Any]:
    """The waiter b is told of the rest, and granted only once it is over."""
    available_at = ended["availableAt"]
    assert seconds(available_at) == pytest.approx(seconds(ended["finishedAt"]) + DELAY, abs=0.01)
    resting = status_of(locks.wait_for("b", lambda b: status_of(b).get("reason") == "LockDelay", timeout=60))
    assert resting["phase"] == "Pending" and resting["availableAt"] == available_at
    assert "rests until" in resting["message"] and "LockPolicy rest" in resting["message"]
    held = status_of(locks.wait_phase("b", "Held", timeout=DELAY + 60))
    assert seconds(held["acquiredAt"]) >= seconds(available_at) - 0.001, (held, available_at)
    assert not held.get("availableAt")
    return held


# ---- the resource -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("{resourcePrefix: 'deploy://', capacity: 0}", "capacity must be between 1 and 10000"),
        ("{resourcePrefix: 'deploy://', lockDelaySeconds: 61}", "lockDelaySeconds must be between 0 and 60"),
        ("{resourcePrefix: 'Deploy://'}", "the URI scheme must be lower-case"),
        ("{resourcePrefix: 'deploy:// x'}", "must not contain whitespace"),
        ("{resourcePrefix: 'deploy://', maxHeldPerHolder: 0}",
         "spec.maxHeldPerHolder: Invalid value: 0: maxHeldPerHolder must be at least 1; leave the field out for "
         "no limit"),
        ("{capacity: 2}", "spec.resourcePrefix: Required value"),
    ],
    ids=["capacity-0", "delay-61", "upper-case-scheme", "whitespace", "quota-0", "no-prefix"],
)
def test_kubectl_apply_of_a_bad_policy_says_what_is_wrong(  # type: ignore[no-untyped-def]
    control_plane, namespace: str, tmp_path: Path, spec: str, words: str
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(f"apiVersion: kubelock.dev/v1alpha1\nkind: LockPolicy\nmetadata: {{name: bad}}\nspec: {spec}\n")
    result = kubectl(control_plane, "-n", namespace, "apply", "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr


def test_kubectl_get_and_explain(control_plane, admin_api: ApiClient, namespace: str) -> None:  # type: ignore[no-untyped-def]
    apply_policy(admin_api, namespace, "deploys", governed=False, resourcePrefix="deploy://", capacity=3,
                 lockDelaySeconds=5)
    table = kubectl(control_plane, "-n", namespace, "get", "lp").stdout.splitlines()
    assert table[0].split() == ["NAME", "PREFIX", "CAPACITY", "LOCK-DELAY", "AGE"]
    assert table[1].split()[:4] == ["deploys", "deploy://", "3", "5"]
    listed = kubectl(control_plane, "-n", namespace, "get", "locks", "-o", "name").stdout
    assert "lockpolicy.kubelock.dev/deploys" in listed
    explained = kubectl(control_plane, "explain", "lockpolicy.spec").stdout
    for words in ("resourcePrefix", "longest prefix wins", "capacity", "lockDelaySeconds", "maxHeldPerHolder"):
        assert words in explained


def test_agents_read_policies_and_only_admins_write_them(admin_api: ApiClient, user_api, namespace: str) -> None:  # type: ignore[no-untyped-def]
    from kubernetes.client import RbacAuthorizationV1Api, V1ObjectMeta, V1RoleBinding, V1RoleRef

    rbac = RbacAuthorizationV1Api(admin_api)
    for user, role in (("alice", "kubelock-agent"), ("lockadmin", "kubelock-admin")):
        rbac.create_namespaced_role_binding(namespace, V1RoleBinding(
            metadata=V1ObjectMeta(name=f"{user}-{role}"),
            role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        ))
    admin = user_api("lockadmin")
    agent = user_api("alice")
    wait_until(lambda: _can_list(agent, namespace), "the agent's binding to take effect")
    apply_policy(admin, namespace, "deploys", governed=False, resourcePrefix="deploy://", lockDelaySeconds=5)
    assert [p["metadata"]["name"] for p in _list(agent, namespace)] == ["deploys"]
    with pytest.raises(ApiException) as refused:
        apply_policy(agent, namespace, "mine", resourcePrefix="", capacity=100)
    assert refused.value.status == 403


def test_agents_and_namespace_admins_cannot_write_quota_ledgers(  # type: ignore[no-untyped-def]
    admin_api: ApiClient, user_api, namespace: str
) -> None:
    """The quota ledgers are Leases, which the default namespace roles edit and admin (into which the
    kubelock roles aggregate) let anyone write: the admission policy kubelock-quota-ledger keeps
    every writer but the operator from creating or changing one, and only those."""
    from kubernetes.client import RbacAuthorizationV1Api, V1ObjectMeta, V1RoleBinding, V1RoleRef

    rbac = RbacAuthorizationV1Api(admin_api)
    for user, roles in (("carol", ("kubelock-agent", "edit")), ("bob", ("kubelock-admin", "admin"))):
        for role in roles:
            rbac.create_namespaced_role_binding(namespace, V1RoleBinding(
                metadata=V1ObjectMeta(name=f"{user}-{role}"),
                role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
                subjects=[{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
            ))
    leases = CoordinationV1Api(admin_api)
    key = ledger_of(LockPolicy("deploys", quotas=Quotas(max_held_per_holder=1)), namespace, "agent-x")
    forged = ledger_body(key, {"u": Entry("agent-x", Count.HELD, time.time())})
    leases.create_namespaced_lease(namespace, ledger_body(key, {}))  # a cluster admin may
    for user in ("carol", "bob"):
        api = CoordinationV1Api(user_api(user))
        other = {**forged, "metadata": {**forged["metadata"], "name": f"elections-{user}"}}
        wait_until(lambda api=api, other=other: _creates(api, namespace, other), f"{user}'s bindings to take effect")
        another_ledger = {**forged, "metadata": {**forged["metadata"], "name": lease_name(key) + user}}
        with pytest.raises(ApiException) as refused:
            api.create_namespaced_lease(namespace, another_ledger)
        assert refused.value.status == 403 and "quota ledgers of the kubelock operator" in str(refused.value.body)
        with pytest.raises(ApiException) as refused:
            api.patch_namespaced_lease(lease_name(key), namespace, {"metadata": forged["metadata"]})
        assert refused.value.status == 403, refused.value
        api.delete_namespaced_lease(f"elections-{user}", namespace)  # other Leases: RBAC decides
    ledger = leases.read_namespaced_lease(lease_name(key), namespace)
    assert entries_of(admin_api.sanitize_for_serialization(ledger)) == {}


def _creates(api: CoordinationV1Api, ns: str, body: dict[str, Any]) -> bool:
    try:
        api.create_namespaced_lease(ns, body)
    except ApiException:
        return False
    return True


def _list(api: ApiClient, ns: str) -> list[dict[str, Any]]:
    return list(CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"])


def _can_list(api: ApiClient, ns: str) -> bool:
    try:
        _list(api, ns)
    except ApiException:
        return False
    return True


# ---- lock-delay ---------------------------------------------------------------------------------


def test_the_next_waiter_waits_out_the_lock_delay_after_a_break(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=DELAY)
    held = holder_and_waiter(locks, "deploy://api-prod")
    locks.delete_lock(held["lockName"])
    revoked = status_of(locks.wait_phase("a", "Revoked", timeout=60))
    assert revoked["reason"] == "LockBroken" and "lock-delay" in revoked["message"]
    assert_rested(locks, revoked)
    wait_event(admin_api, ns, "b", "LockDelay")


def test_the_next_waiter_waits_out_the_lock_delay_after_an_expiry(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=DELAY)
    holder_and_waiter(locks, "deploy://expiring", ttl=SHORT_TTL)
    expired = status_of(locks.wait_phase("a", "Expired", timeout=SHORT_TTL + 60))
    assert expired["reason"] == "LeaseExpired"
    assert_rested(locks, expired)


def test_the_next_waiter_waits_out_the_lock_delay_after_the_holders_pod_failed(
    locks: Locks, admin_api: ApiClient, ns: str, fake_node: str
) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=DELAY)
    core = CoreV1Api(admin_api)
    pod = core.create_namespaced_pod(ns, {
        "metadata": {"name": "agent-0", "labels": {"kubelock.dev/lock-holder": "true"}},
        "spec": {"nodeName": fake_node, "containers": [{"name": "agent", "image": "agent:latest"}]},
    })
    locks.claim("a", "deploy://api-prod", "agent-a", pod=(pod.metadata.name, pod.metadata.uid))
    locks.wait_phase("a", "Held")
    locks.claim("b", "deploy://api-prod", "agent-b", wait=True)
    locks.wait_phase("b", "Pending")
    core.patch_namespaced_pod_status("agent-0", ns, {"status": {"phase": "Failed"}})
    revoked = status_of(locks.wait_phase("a", "Revoked", timeout=60))
    assert revoked["reason"] == "HolderPodTerminated"
    assert_rested(locks, revoked)


def test_every_resource_of_a_claim_of_several_rests_after_its_lease_expired(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """Each resource rests for its own policy's delay; the claim records the latest end. The waiter on
    the claim's second resource shows the rest is kept under every resource, not only the first."""
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=DELAY)
    apply_policy(admin_api, ns, "rest-db", resourcePrefix="deploy://db", lockDelaySeconds=SHORT_DELAY)
    first, second = "deploy://api-prod", "deploy://db"
    claim_all(locks, "a", [first, second], "agent-a", ttlSeconds=SHORT_TTL)
    locks.wait_phase("a", "Held")
    locks.claim("b", second, "agent-b", wait=True)
    locks.claim("c", first, "agent-c", wait=True)
    expired = status_of(locks.wait_phase("a", "Expired", timeout=SHORT_TTL + 60))
    finished_at, available_at = seconds(expired["finishedAt"]), expired["availableAt"]
    assert expired["reason"] == "LeaseExpired" and "lock-delay" in expired["message"], expired
    assert seconds(available_at) == pytest.approx(finished_at + DELAY, abs=0.01)
    for name, delay in (("b", SHORT_DELAY), ("c", DELAY)):
        resting = status_of(locks.wait_for(name, lambda w: status_of(w).get("reason") == "LockDelay", timeout=60))
        assert seconds(resting["availableAt"]) == pytest.approx(finished_at + delay, abs=0.01), (name, resting)
        assert "the lease of agent-a expired" in resting["message"], resting
    for name, delay in (("b", SHORT_DELAY), ("c", DELAY)):
        held = status_of(locks.wait_phase(name, "Held", timeout=DELAY + 60))
        assert seconds(held["acquiredAt"]) >= finished_at + delay - 0.001, (name, held, expired)
    wait_event(admin_api, ns, "b", "LockDelay")


def test_deleting_an_expired_claim_of_several_ends_the_rest_of_each_of_its_resources(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """The holder deleting its ended claim acknowledges the loss: every resource's rest ends then, not
    only that of the resource the claim is removed under (its first). A waiter on each is granted far
    sooner than the 60 s rest it was told."""
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    first, second = "deploy://api-prod", "deploy://db"
    claim_all(locks, "a", [first, second], "agent-a", ttlSeconds=SHORT_TTL)
    locks.wait_phase("a", "Held")
    locks.claim("b", second, "agent-b", wait=True)
    locks.claim("c", first, "agent-c", wait=True)
    locks.wait_phase("a", "Expired", timeout=SHORT_TTL + 60)
    told = {
        name: status_of(locks.wait_for(name, lambda w: status_of(w).get("reason") == "LockDelay", timeout=60))
        for name in ("b", "c")
    }
    locks.delete("a")
    for name in ("b", "c"):
        held = status_of(locks.wait_phase(name, "Held", timeout=60))
        assert seconds(held["acquiredAt"]) < seconds(told[name]["availableAt"]) - 10, (name, held, told[name])


def test_a_release_has_no_lock_delay(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    holder_and_waiter(locks, "deploy://released")
    released_at = time.time()
    locks.delete("a")
    held = status_of(locks.wait_phase("b", "Held", timeout=45))
    assert seconds(held["acquiredAt"]) - released_at < 40  # not 60: no rest after a release
    assert "LockDelay" not in event_reasons(admin_api, ns, "b")


def test_a_resource_no_policy_governs_has_no_lock_delay(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    held = holder_and_waiter(locks, "github://acme/app/issues/1")
    locks.delete_lock(held["lockName"])
    assert not status_of(locks.wait_phase("a", "Revoked", timeout=60)).get("availableAt")
    locks.wait_phase("b", "Held", timeout=45)  # not after a 60 s rest


def test_lowering_the_delay_decides_the_resource_again(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    held = holder_and_waiter(locks, "deploy://api-prod")
    locks.delete_lock(held["lockName"])
    told = status_of(locks.wait_for("b", lambda b: status_of(b).get("reason") == "LockDelay", timeout=60))
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=1)
    held = status_of(locks.wait_phase("b", "Held", timeout=60))
    # Far sooner than the end of the 60 s rest it was told first.
    assert seconds(held["acquiredAt"]) < seconds(told["availableAt"]) - 10, (held, told)


def test_deleting_the_policy_ends_the_rest(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    held = holder_and_waiter(locks, "deploy://api-prod")
    locks.delete_lock(held["lockName"])
    told = status_of(locks.wait_for("b", lambda b: status_of(b).get("reason") == "LockDelay", timeout=60))
    delete_policy(admin_api, ns, "rest")
    held = status_of(locks.wait_phase("b", "Held", timeout=60))
    assert seconds(held["acquiredAt"]) < seconds(told["availableAt"]) - 10, (held, told)


def test_a_deleted_policy_leaves_an_event_naming_what_it_governed(
    control_plane: Any, locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """A policy's deletion stops it governing at once; the Normal Event `PolicyRemoved` on the policy
    says when, and what it governed (the resources with claims, and their claims)."""
    written = apply_policy(admin_api, ns, "gone", resourcePrefix="deploy://", capacity=2)
    apply_policy(admin_api, ns, "stays", resourcePrefix="github://")
    locks.claim("a", "deploy://api", "agent-a")
    locks.claim("b", "deploy://api", "agent-b")
    locks.claim("c", "deploy://web", "agent-c")
    locks.claim("d", "github://acme/app", "agent-d")  # governed by the other policy
    locks.wait_phases(["a", "b", "c", "d"], "Held")
    delete_policy(admin_api, ns, "gone")
    selector = "involvedObject.kind=LockPolicy"

    def removed() -> list[Any]:
        items = CoreV1Api(admin_api).list_namespaced_event(ns, field_selector=selector).items
        return [e for e in items if e.reason == "PolicyRemoved"]

    wait_until(removed, "a PolicyRemoved Event", timeout=60)
    (event,) = removed()
    involved = event.involved_object
    assert (involved.kind, involved.name, involved.namespace, involved.uid) == (
        "LockPolicy", "gone", ns, written["metadata"]["uid"]
    )
    assert event.type == "Normal"
    assert "LockPolicy gone" in event.message and "governed 2 resources with 3 claims" in event.message, event.message
    shown = kubectl(control_plane, "get", "events", "-n", ns, "--field-selector", selector, "-o", "name").stdout
    assert shown.strip(), shown
    assert "stays" not in {e.involved_object.name for e in removed()}


def test_a_try_lock_during_the_rest_is_turned_away(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    locks.claim("a", "deploy://api-prod", "agent-a")
    held = status_of(locks.wait_phase("a", "Held"))
    locks.delete_lock(held["lockName"])
    locks.wait_phase("a", "Revoked", timeout=60)
    locks.claim("t", "deploy://api-prod", "agent-t")
    rejected = status_of(locks.wait_phase("t", "Rejected", timeout=60))
    assert rejected["reason"] == "LockDelay" and "rests until" in rejected["message"]


def test_the_commands_turned_away_by_a_rest_name_their_own_way_to_queue(  # type: ignore[no-untyped-def]
    control_plane, locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """The operator's advice (wait: true, in a claim made anew) is for a claim written as YAML; the commands
    say how they queue, and exit 1 (busy) with the reason LockDelay."""
    apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=60)
    locks.claim("a", "deploy://api-prod", "agent-a")
    held = status_of(locks.wait_phase("a", "Held"))
    locks.delete_lock(held["lockName"])
    locks.wait_phase("a", "Revoked", timeout=60)
    env = environment(control_plane.kubeconfig, ns, instance="t")
    acquire = run("kubelock", "acquire", "deploy://api-prod", env=env)
    assert acquire.code == ExitCode.HELD, (acquire.code, acquire.stderr)
    assert "rests until" in acquire.stderr, acquire.stderr
    advice = "try again then, or queue for it with kubelock acquire --wait"
    assert acquire.stderr.rstrip().endswith(advice), acquire.stderr
    rlock = run("rlock", "deploy://api-prod", env=env)
    assert rlock.code == ExitCode.HELD, (rlock.code, rlock.stdout)
    answer = json.loads(rlock.stdout)
    assert answer["error"] == "LockDelay", answer
    assert answer["message"].endswith("try again then, or queue for it with rlock --wait"), answer


# ---- quotas -------------------------------------------------------------------------------------


def test_quotas_reject_claims_over_them_naming_the_limit(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    apply_policy(admin_api, ns, "quota", resourcePrefix="deploy://", maxHeldPerHolder=1, maxWaitingPerNamespace=1)
    locks.claim("a1", "deploy://one", "agent-a")
    locks.wait_phase("a1", "Held")
    locks.claim("a2", "deploy://two", "agent-a")
    over = status_of(locks.wait_phase("a2", "Rejected", timeout=60))
    assert over["reason"] == "QuotaExceeded"
    assert "LockPolicy quota" in over["message"] and "maxHeldPerHolder" in over["message"]
    wait_event(admin_api, ns, "a2", "QuotaExceeded")
    locks.claim("b1", "deploy://one", "agent-b", wait=True)
    locks.wait_phase("b1", "Pending")
    locks.claim("c1", "deploy://one", "agent-c", wait=True)
    over = status_of(locks.wait_phase("c1", "Rejected", timeout=60))
    assert over["reason"] == "QuotaExceeded" and "maxWaitingPerNamespace" in over["message"]
    locks.claim("other", "github://x", "agent-a")  # not governed by the policy: no quota
    locks.wait_phase("other", "Held")


def test_an_agent_cannot_escape_a_per_holder_quota_by_naming_new_instances(
    locks: Locks, admin_api: ApiClient, ns: str, user_api: Callable[[str], ApiClient]
) -> None:
    """A hostile agent with only the agent role: admission lets it claim under any instance of its own
    identity, so quotas per holder count the identity, not the instance it made up for each claim."""
    bind(admin_api, ns, "kubelock-agent", "alice")
    wait_allowed(admin_api, "alice", ns, "create", "lockclaims")
    alice = Locks(user_api("alice"), ns)
    apply_policy(admin_api, ns, "per-agent", resourcePrefix="deploy://", maxHeldPerHolder=1, maxWaitingPerHolder=1)
    locks.claim("probe", "deploy://probe", "agent-probe")  # the operator knows the policy once it decides this
    locks.wait_phase("probe", "Held")
    alice.claim("a1", "deploy://one", "user:alice/worker-1")
    alice.wait_phase("a1", "Held")
    alice.claim("a2", "deploy://two", "user:alice/worker-2")
    over = status_of(alice.wait_for("a2", lambda c: phase_of(c) in ("Held", "Rejected"), timeout=60))
    assert (over["phase"], over["reason"]) == ("Rejected", "QuotaExceeded"), over
    assert "user:alice already has 1 claim held" in over["message"] and "maxHeldPerHolder" in over["message"]
    alice.claim("w1", "deploy://probe", "user:alice/worker-3", wait=True)
    alice.wait_phase("w1", "Pending")
    alice.claim("w2", "deploy://probe", "user:alice/worker-4", wait=True)
    over = status_of(alice.wait_for("w2", lambda c: phase_of(c) in ("Pending", "Rejected"), timeout=60))
    assert (over["phase"], over["reason"]) == ("Rejected", "QuotaExceeded"), over
    assert "maxWaitingPerHolder" in over["message"]
    locks.claim("b1", "deploy://two", "user:bob/worker-1")  # another identity is not limited by alice's count
    locks.wait_phase("b1", "Held")


def test_a_waiter_refused_at_its_turn_no_longer_counts_as_waiting(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    """A waiter whose turn comes while its holder is at maxHeldPerHolder is refused. Its first wait was
    reserved in the quota ledger; once it is refused, that reservation no longer counts (no Pending
    can follow a refusal), so the holder's next claim may wait under maxWaitingPerHolder 1 at once,
    not only after the reservation's 30 s."""
    policy = LockPolicy("turns", "deploy://", quotas=Quotas(max_held_per_holder=1, max_waiting_per_holder=1))
    apply_policy(admin_api, ns, "turns", resourcePrefix="deploy://", maxHeldPerHolder=1, maxWaitingPerHolder=1)
    for name, resource, holder in (("x1", "one", "agent-x"), ("y2", "two", "agent-y"), ("c0", "zero", "agent-h")):
        locks.claim(name, f"deploy://{resource}", holder)
        locks.wait_phase(name, "Held")
    locks.claim("w1", "deploy://one", "agent-h", wait=True)
    locks.wait_phase("w1", "Pending")
    lease = CoordinationV1Api(admin_api).read_namespaced_lease(lease_name(ledger_of(policy, ns, "agent-h")), ns)
    entries = entries_of(admin_api.sanitize_for_serialization(lease))
    assert entries[locks.get("w1")["metadata"]["uid"]].count is Count.WAITING, entries  # its first wait, reserved
    locks.delete("x1")  # w1's turn: agent-h already holds c0
    refused = status_of(locks.wait_phase("w1", "Rejected", timeout=60))
    assert refused["reason"] == "QuotaExceeded" and "maxHeldPerHolder" in refused["message"], refused
    locks.claim("w2", "deploy://two", "agent-h", wait=True)
    waiting = status_of(locks.wait_for("w2", lambda c: phase_of(c) in ("Pending", "Rejected"), timeout=60))
    assert waiting["phase"] == "Pending", waiting


def test_a_burst_of_one_holders_claims_never_holds_more_than_its_quota(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """Claims of one holder on many resources at once are decided concurrently (a worker per resource):
    the grants being written count against maxHeldPerHolder, so the holder is never seen holding more
    than the limit, in a first burst nor in a second one right after releasing."""
    limit, burst = 3, 16
    apply_policy(admin_api, ns, "burst", resourcePrefix="deploy://", capacity=2, maxHeldPerHolder=limit)
    # The operator knows the policy once a second holder shares a resource of capacity 2.
    locks.claim("probe-a", "deploy://probe", "agent-probe-a")
    locks.claim("probe-b", "deploy://probe", "agent-probe-b")
    locks.wait_phases(["probe-a", "probe-b"], "Held", timeout=60)
    with HolderMonitor(admin_api, ns) as monitor:
        for wave in range(2):
            names = [f"w{wave}-{i}" for i in range(burst)]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: locks.claim(n, f"deploy://r-{n}", "agent-burst"), names))
            settled = [status_of(locks.wait_for(n, lambda c: phase_of(c) in ("Held", "Rejected"))) for n in names]
            held = [n for n, s in zip(names, settled, strict=True) if s["phase"] == "Held"]
            refused = {s["reason"] for s in settled if s["phase"] == "Rejected"}
            assert len(held) == limit and refused == {"QuotaExceeded"}, (held, refused)
            for name in held:
                locks.delete(name)
            wait_until(lambda: not any(phase_of(c) == "Held" and c["spec"]["holder"] == "agent-burst"
                                       for c in locks.claims()), "the burst's claims released")
    assert monitor.peak_by_holder["agent-burst"] == limit, monitor.peak_by_holder


def test_a_claim_of_several_counts_under_the_quotas_of_each_of_its_resources_policy(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """A claim of several resources is one claim under each policy governing one of its resources:
    refused over a quota of any of them (naming it), and counted once, not per resource, against the
    quotas of a policy that governs several of them."""
    apply_policy(admin_api, ns, "deploys", resourcePrefix="deploy://", maxHeldPerHolder=2, maxWaitingPerHolder=1)
    apply_policy(admin_api, ns, "repos", resourcePrefix="github://", maxHeldPerHolder=1)
    locks.claim("a-repo", "github://acme/one", "agent-a")
    locks.wait_phase("a-repo", "Held")
    # The operator knows both policies once it refuses a claim over the later one's quota.
    locks.claim("a-probe", "github://acme/probe", "agent-a")
    assert status_of(locks.wait_phase("a-probe", "Rejected", timeout=60))["reason"] == "QuotaExceeded"
    claim_all(locks, "a-both", ["deploy://api", "github://acme/two"], "agent-a")
    over = status_of(locks.wait_phase("a-both", "Rejected", timeout=60))
    assert over["reason"] == "QuotaExceeded", over
    assert "agent-a already has 1 claim held under LockPolicy repos" in over["message"], over
    assert "(maxHeldPerHolder)" in over["message"]
    wait_event(admin_api, ns, "a-both", "QuotaExceeded")
    assert all(lk["spec"]["resource"] != "deploy://api" for lk in locks.locks())  # it took nothing
    # Two resources under one policy: one claim held, so a second claim of the holder still fits.
    claim_all(locks, "c-two", ["deploy://p", "deploy://q"], "agent-c")
    locks.wait_phase("c-two", "Held")
    locks.claim("c-one", "deploy://r", "agent-c")
    locks.wait_phase("c-one", "Held")
    locks.claim("c-over", "deploy://s", "agent-c")
    over = status_of(locks.wait_phase("c-over", "Rejected", timeout=60))
    assert "agent-c already has 2 claims held under LockPolicy deploys" in over["message"], over
    # A waiting claim of several counts as waiting: the holder's next wait is over maxWaitingPerHolder.
    claim_all(locks, "c-wait", ["deploy://p", "github://acme/three"], "agent-c2", wait=True)
    locks.wait_phase("c-wait", "Pending")
    claim_all(locks, "c-wait2", ["deploy://q", "github://acme/four"], "agent-c2", wait=True)
    over = status_of(locks.wait_phase("c-wait2", "Rejected", timeout=60))
    assert over["reason"] == "QuotaExceeded" and "(maxWaitingPerHolder)" in over["message"], over


def test_a_waiting_claim_of_several_refused_at_its_turn_lets_the_waiters_of_each_of_its_resources_go(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """One operator: a waiting claim of `deploy://b` (named first) and `deploy://a` is refused at its
    turn (its holder took another lock meanwhile, `maxHeldPerHolder: 1`). It is kept among the ended
    claims under `deploy://b` only, yet the claims queued behind it on each of its resources are
    granted, it leaves no grant, and its deletion changes nothing."""
    apply_policy(admin_api, ns, "one-each", resourcePrefix="deploy://", maxHeldPerHolder=1)
    locks.claim("first", "deploy://a", "agent-first")
    locks.wait_phase("first", "Held")
    claim_all(locks, "m", ["deploy://b", "deploy://a"], "agent-m", wait=True)
    locks.wait_phase("m", "Pending")
    locks.claim("wa", "deploy://a", "agent-wa", wait=True)
    locks.claim("wb", "deploy://b", "agent-wb", wait=True)
    locks.wait_phases(["wa", "wb"], "Pending")  # behind m on both of its resources
    locks.claim("q", "deploy://q", "agent-m")
    locks.wait_phase("q", "Held")
    locks.delete("first")  # m's turn on deploy://a: its holder is at its limit
    refused = status_of(locks.wait_phase("m", "Rejected", timeout=60))
    assert refused["reason"] == "QuotaExceeded", refused
    locks.wait_phases(["wa", "wb"], "Held", timeout=60)
    held = sorted((lk["spec"]["resource"], lk["spec"]["holder"]) for lk in locks.locks())
    expected = [("deploy://a", "agent-wa"), ("deploy://b", "agent-wb"), ("deploy://q", "agent-m")]
    assert held == expected
    locks.delete("m")
    locks.delete("wb")  # deploy://b is released: nothing of m comes back for it
    locks.wait_for("wa", lambda c: phase_of(c) == "Held")
    wait_until(lambda: len(locks.locks()) == 2, "deploy://b's lock deleted")
    held = sorted((lk["spec"]["resource"], lk["spec"]["holder"]) for lk in locks.locks())
    assert held == [("deploy://a", "agent-wa"), ("deploy://q", "agent-m")]


def test_a_burst_of_one_holders_claims_of_several_never_holds_more_than_its_quota(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """Claims of several resources of one holder, all at once: each is decided under a key of its own,
    concurrently; the grants being written count against maxHeldPerHolder under each policy of their
    resources, so the holder is never seen holding more than the limit."""
    limit, burst = 2, 10
    apply_policy(admin_api, ns, "burst", resourcePrefix="deploy://", capacity=2, maxHeldPerHolder=limit)
    locks.claim("probe-a", "deploy://probe", "agent-probe-a")
    locks.claim("probe-b", "deploy://probe", "agent-probe-b")
    locks.wait_phases(["probe-a", "probe-b"], "Held", timeout=60)
    names = [f"m{i}" for i in range(burst)]
    with HolderMonitor(admin_api, ns) as monitor:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: claim_all(locks, n, [f"deploy://{n}-a", f"github://{n}"], "agent-burst"), names))
        settled = [status_of(locks.wait_for(n, lambda c: phase_of(c) in ("Held", "Rejected"))) for n in names]
    held = [n for n, s in zip(names, settled, strict=True) if s["phase"] == "Held"]
    refused = {s["reason"] for s in settled if s["phase"] == "Rejected"}
    assert len(held) == limit and refused == {"QuotaExceeded"}, (held, refused)
    assert monitor.peak_by_holder["agent-burst"] == limit, monitor.peak_by_holder


def test_two_operators_keep_one_holders_quota_together(  # type: ignore[no-untyped-def]
    control_plane, admin_api: ApiClient, tmp_path: Path
) -> None:
    """Two operator replicas, both deciding every resource, one holder's claims against
    maxHeldPerHolder: a burst of claims on free resources, then waiters on many resources whose
    holders all release at once (the replicas then race through the releases in orders of their
    own). Each replica's own reservations would let each fill the limit (up to twice it held at
    once); the quota ledger, which the API server arbitrates, keeps the holder at the limit: the
    claims are watched, and never more than the limit are Held at once."""
    limit, burst, waves = 3, 16, 3
    with temporary_namespace(admin_api, "klq-") as ns:
        locks = Locks(admin_api, ns)
        apply_policy(admin_api, ns, "burst", governed=False, resourcePrefix="deploy://", maxHeldPerHolder=limit)
        first = OperatorProcess(control_plane.kubeconfig, tmp_path / "a.log", namespaces=(ns,)).start()
        second = OperatorProcess(control_plane.kubeconfig, tmp_path / "b.log", namespaces=(ns,)).start()
        try:
            with (
                HolderMonitor(admin_api, ns) as monitor,
                LockMonitor(admin_api, ns) as grants,
                ThreadPoolExecutor(burst) as pool,
            ):
                for wave in range(waves):
                    names = [f"w{wave}-{i:02d}" for i in range(burst)]
                    list(pool.map(lambda n: locks.claim(n, f"deploy://r-{n}", "agent-burst"), names))
                    _settle_quota_wave(locks, names, limit)
                    blockers = [f"b{wave}-{i:02d}" for i in range(burst)]
                    for name in blockers:
                        locks.claim(name, f"deploy://q-{name[1:]}", f"agent-{name}")
                    locks.wait_phases(blockers, "Held", timeout=60)
                    waiters = [f"q{wave}-{i:02d}" for i in range(burst)]
                    for name in waiters:
                        locks.claim(name, f"deploy://q-{name[1:]}", "agent-burst", wait=True)
                    locks.wait_phases(waiters, "Pending", timeout=60)
                    list(pool.map(locks.delete, blockers))  # every resource freed at once
                    _settle_quota_wave(locks, waiters, limit)
                time.sleep(0.5)
            peaks = (monitor.peak_by_holder["agent-burst"], grants.peak_grants_by_holder["agent-burst"])
            assert peaks == (limit, limit), f"most claims Held at once, most grants at once: {peaks}"
            assert not monitor.violations, monitor.violations[:5]
        finally:
            first.stop()
            second.stop()


def _settle_quota_wave(locks: Locks, names: list[str], limit: int) -> None:
    """Wait until each of `names` is Held or refused over its quota; release them all."""
    settled = [
        status_of(locks.wait_for(n, lambda c: phase_of(c) in ("Held", "Rejected"), timeout=60)) for n in names
    ]
    held = [n for n, s in zip(names, settled, strict=True) if s["phase"] == "Held"]
    refused = {s["reason"] for s in settled if s["phase"] == "Rejected"}
    assert refused == {"QuotaExceeded"} and len(held) <= limit, (held, refused)
    for name in names:
        locks.delete(name)
    wait_until(lambda: not any(lk["spec"]["holder"] == "agent-burst" for lk in locks.locks()), "the wave released")


def test_a_ledger_written_by_another_is_read_again_and_counted_in_the_metrics(
    locks: Locks, admin_api: ApiClient, ns: str, policy_operator: OperatorProcess
) -> None:
    """The operator writes a quota ledger on the version it last saw. When another writer (another
    replica, here an admin) wrote it since, the write fails with 409: the operator reads the ledger
    again, decides again (the claim is still granted: one conflict, not a refusal), and
    `kubelock_quota_ledger_conflicts_total` counts it."""
    policy = LockPolicy("raced", "deploy://", quotas=Quotas(max_held_per_holder=3))
    # Returns once the operator has seen the policy: a claim granted before would write no ledger.
    apply_policy(admin_api, ns, "raced", resourcePrefix="deploy://", maxHeldPerHolder=3)
    locks.claim("first", "deploy://one", "agent-raced")
    locks.wait_phase("first", "Held", timeout=30)
    name = lease_name(ledger_of(policy, ns, "agent-raced"))
    leases = CoordinationV1Api(admin_api)
    wait_until(lambda: name in {lease.metadata.name for lease in leases.list_namespaced_lease(ns).items},
               "the ledger written")
    before = value(scrape(policy_operator.metrics_port), "kubelock_quota_ledger_conflicts_total")
    leases.patch_namespaced_lease(name, ns, {"metadata": {"annotations": {"example.com/touched": "yes"}}})
    locks.claim("second", "deploy://two", "agent-raced")
    locks.wait_phase("second", "Held", timeout=30)
    after = value(scrape(policy_operator.metrics_port), "kubelock_quota_ledger_conflicts_total")
    assert after - before == 1, (before, after)
    entries = entries_of(admin_api.sanitize_for_serialization(leases.read_namespaced_lease(name, ns)))
    assert {e.holder for e in entries.values()} == {"agent-raced"} and len(entries) == 2, entries


def test_a_reservation_without_its_grant_stops_counting(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    """The state an operator leaves when it stops between writing a reservation to the quota ledger
    and writing the grant: an entry for a claim that holds nothing. It counts against the holder (a
    claim over the limit with it is refused) only until its bound has passed, then the holder is
    granted again and the entry is dropped from the ledger."""
    policy = LockPolicy("lost", "deploy://", quotas=Quotas(max_held_per_holder=1))
    apply_policy(admin_api, ns, "lost", resourcePrefix="deploy://", maxHeldPerHolder=1)
    key = ledger_of(policy, ns, "agent-lost")
    counts_for = 30.0  # the early claim's refusal must come within it, also on a loaded machine
    stamped = time.time() - RESERVATION_SECONDS + counts_for
    body = ledger_body(key, {"0c0ffee0-dead-4bad-8bad-000000000000": Entry("agent-lost", Count.HELD, stamped)})
    CoordinationV1Api(admin_api).create_namespaced_lease(ns, body)
    locks.claim("early", "deploy://one", "agent-lost")
    early = status_of(locks.wait_phase("early", "Rejected", timeout=counts_for - 1))
    assert early["reason"] == "QuotaExceeded" and "already has 1 claim held" in early["message"], early
    time.sleep(max(0.0, stamped + RESERVATION_SECONDS - time.time()))
    locks.claim("late", "deploy://two", "agent-lost")
    locks.wait_phase("late", "Held", timeout=60)
    lease = CoordinationV1Api(admin_api).read_namespaced_lease(lease_name(key), ns)
    assert list(entries_of(admin_api.sanitize_for_serialization(lease))) == [locks.get("late")["metadata"]["uid"]]


def test_a_policys_capacity_makes_a_semaphore_and_raising_it_admits_waiters(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """Capacity 2: two exclusive holders of one permit each share the resource's one record, the
    third waits; raising the capacity to 3 decides the resource again and grants it."""
    apply_policy(admin_api, ns, "wide", resourcePrefix="deploy://", capacity=2)
    locks.claim("a", "deploy://api-prod", "agent-a")
    locks.claim("b", "deploy://api-prod", "agent-b")
    a = status_of(locks.wait_phase("a", "Held"))
    b = status_of(locks.wait_phase("b", "Held"))
    assert a["fencingToken"] != b["fencingToken"]
    (record,) = locks.locks()
    assert record["spec"]["holders"] == 2
    locks.claim("c", "deploy://api-prod", "agent-c", wait=True)
    assert status_of(locks.wait_phase("c", "Pending"))["holder"] in {"agent-a", "agent-b"}
    locks.claim("big", "deploy://web", "agent-d", permits=3)
    big = status_of(locks.wait_phase("big", "Rejected"))
    assert big["reason"] == "InvalidSpec" and "exceed the capacity 2" in big["message"]
    apply_policy(admin_api, ns, "wide", resourcePrefix="deploy://", capacity=3)
    c = status_of(locks.wait_phase("c", "Held", timeout=60))
    assert c["fencingToken"] > max(a["fencingToken"], b["fencingToken"])
    assert status_of(locks.get("a"))["phase"] == "Held" and status_of(locks.get("b"))["phase"] == "Held"


def test_a_permit_handed_over_is_one_write_and_the_next_is_held_before_the_queue_moves(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """Capacity 2, two holders, three waiters: a holder's release and the first waiter's grant are
    one update of the resource's lock (its watch never shows the permit free in between), the new
    grant's token is above every earlier one, and the first waiter is told Held before the waiters
    behind it are told their new places."""
    apply_policy(admin_api, ns, "pair", resourcePrefix="deploy://", capacity=2)
    resource = "deploy://pair"
    for name in ("p1", "p2"):
        locks.claim(name, resource, f"agent-{name}")
    tokens = [status_of(locks.wait_phase(name, "Held"))["fencingToken"] for name in ("p1", "p2")]
    for name in ("q1", "q2", "q3"):
        locks.claim(name, resource, f"agent-{name}", wait=True)
        locks.wait_phase(name, "Pending")
    (lock,) = locks.locks()
    since = lock["metadata"]["resourceVersion"]
    locks.delete("p1")
    q1 = locks.wait_phase("q1", "Held")
    q2 = locks.wait_for("q2", lambda body: status_of(body).get("queuePosition") == 1, timeout=60, what="q2 first")
    versions = []
    stream = watch.Watch().stream(
        CustomObjectsApi(admin_api).list_namespaced_custom_object, GROUP, VERSION, ns, "resourcelocks",
        resource_version=since, timeout_seconds=60,
    )
    for event in stream:
        spec = event["object"]["spec"]
        versions.append(sorted(g["claimRef"]["name"] for g in [spec, *(spec.get("grants") or [])]))
        if "q1" in versions[-1]:
            break
    assert versions == [["p2", "q1"]], versions  # p1's permit went to q1 in the same write
    assert status_of(q1)["fencingToken"] > max(tokens)
    assert int(q1["metadata"]["resourceVersion"]) < int(q2["metadata"]["resourceVersion"])


# ---- restart ------------------------------------------------------------------------------------


def test_a_restarted_operator_keeps_the_rest(  # type: ignore[no-untyped-def]
    control_plane, admin_api: ApiClient, tmp_path: Path
) -> None:
    """The rest is recorded in the ended claim's status, not in the operator's memory."""
    with temporary_namespace(admin_api, "klpr-") as ns:
        locks = Locks(admin_api, ns)
        with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(ns,)) as first:
            DECIDED_BY[ns] = first
            try:
                # A long rest: the operator's stop and the next one's start fit in it on a loaded machine.
                apply_policy(admin_api, ns, "rest", resourcePrefix="deploy://", lockDelaySeconds=RESTART_REST)
            finally:
                DECIDED_BY.pop(ns, None)
            held = holder_and_waiter(locks, "deploy://api-prod")
            locks.delete_lock(held["lockName"])
            revoked = status_of(locks.wait_phase("a", "Revoked", timeout=60))
            locks.wait_for("b", lambda b: status_of(b).get("reason") == "LockDelay", timeout=60)
        with OperatorProcess(control_plane.kubeconfig, tmp_path / "op2.log", namespaces=(ns,)):
            # Otherwise the test would show nothing: the rest must still be on when the new operator starts.
            assert time.time() < seconds(revoked["availableAt"]) - 2, "the operator took too long to restart"
            granted = status_of(locks.wait_phase("b", "Held", timeout=RESTART_REST + 60))
        assert seconds(granted["acquiredAt"]) >= seconds(revoked["availableAt"]) - 0.001


class Crossing:
    """Two replicas made to cross on one holder's quota against the real API server: in-process
    reconcilers with caches of their own, fed by LISTs where a scenario says their watches caught up
    (`hand_over`), their requests held at gates where it says. After every write of a lock the locks
    are listed (`peaks`: the holder's locks then)."""

    def __init__(self, kube: KubeClient, ns: str, holder: str) -> None:
        self.kube, self.ns, self.holder = kube, ns, holder
        self.peaks: list[int] = []

    async def holders_locks(self) -> int:
        items = (await self.kube.list(paths.locks(self.ns)))["items"]
        return sum(1 for lk in items if lk["spec"]["holder"] == self.holder)

    async def count(self, path: str) -> None:
        """After a write that can give the holder a lock (a lock's create, or its update handing it over)."""
        if path.startswith(paths.locks(self.ns)):
            self.peaks.append(await self.holders_locks())

    async def hand_over(self, to: Reconciler) -> None:
        for body in (await self.kube.list(paths.claims(self.ns)))["items"]:
            to.cache.upsert_claim(body)
        for body in (await self.kube.list(paths.locks(self.ns)))["items"]:
            to.cache.upsert_lock(body)

    def replica(self, *, failed_lock_writes: int = 0, **quotas: int) -> tuple[Reconciler, GatedClient]:
        """`failed_lock_writes`: how many of its first updates of a lock fail (the API server unreachable)."""
        crossing = self
        failing = [failed_lock_writes]

        class Counting(GatedClient):
            async def create(self, path: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
                stored = await super().create(path, body, **params)
                await crossing.count(path)
                return stored

            async def patch(self, path: str, patch: dict[str, Any], **params: Any) -> dict[str, Any]:
                if failing[0] and path.startswith(paths.locks(crossing.ns)):
                    failing[0] -= 1
                    raise Unreachable("connection reset")
                stored = await super().patch(path, patch, **params)
                await crossing.count(path)
                return stored

        index, client = PolicyIndex(), Counting(self.kube)
        index.upsert({"metadata": {"name": "crossed", "namespace": self.ns},
                      "spec": {"resourcePrefix": "deploy://", **quotas}})
        events = EventRecorder(client, SystemClock(), "test")  # type: ignore[arg-type]
        return Reconciler(client, Cache(), Policy(), SystemClock(), events, policies=index), client  # type: ignore[arg-type]

    async def claim(
        self, name: str, resource: str | None = None, holder: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name},
                "spec": {"resource": resource or f"deploy://{name}", "holder": holder or self.holder, **spec}}
        return await self.kube.create(paths.claims(self.ns), body)

    async def phase(self, name: str) -> tuple[str, str]:
        status = (await self.kube.get(paths.claims(self.ns, name))).get("status") or {}
        return status.get("phase", ""), status.get("reason", "")


@pytest.mark.parametrize("b_waits_at", ["told", "lock"])
def test_two_replicas_each_refusing_a_claim_the_other_grants_keep_the_holder_at_its_limit(
    control_plane: Any, admin_api: ApiClient, b_waits_at: str
) -> None:
    """Two replicas made to cross on one holder's quota against the real API server, in the order of
    `tests/unit/test_quota_crossing.py` (which says why each step): each refuses a claim of the holder
    that the other is granting. The holder never has more locks than its limit."""
    limit = 2

    async def scenario(ns: str) -> None:
        async with KubeClient(kube_config.load(control_plane.kubeconfig)) as kube:
            x = Crossing(kube, ns, "agent-crossed")
            (a, a_api), (b, b_api) = x.replica(maxHeldPerHolder=limit), x.replica(maxHeldPerHolder=limit)
            await x.claim("c0")
            await x.hand_over(a)
            await a.reconcile((ns, "deploy://c0"))
            assert await x.phase("c0") == ("Held", "Granted")
            await x.claim("c1")
            await x.claim("c2")
            await x.hand_over(a)
            await x.hand_over(b)  # both views: c0 held, c1 and c2 waiting for an answer
            a_ledger = a_api.hold("patch", paths.leases(ns))
            a_told = a_api.hold("update", paths.claims(ns, "c2", status=True))
            b_grant = (
                b_api.hold("update", paths.claims(ns, "c1", status=True)) if b_waits_at == "told"
                else b_api.hold("create", paths.locks(ns))
            )
            a_grants_c2 = asyncio.create_task(a.reconcile((ns, "deploy://c2")))  # A reserves c2 in memory
            await asyncio.wait_for(a_ledger.reached.wait(), 30)
            b_grants_c1 = asyncio.create_task(b.reconcile((ns, "deploy://c1")))  # B reserves c1 in the ledger
            await asyncio.wait_for(b_grant.reached.wait(), 30)
            await a.reconcile((ns, "deploy://c1"))  # A counts c0 and c2: refuses c1
            assert await x.phase("c1") == ("Rejected", "QuotaExceeded")
            await b.reconcile((ns, "deploy://c2"))  # B counts c0 and c1: refuses c2
            assert await x.phase("c2") == ("Rejected", "QuotaExceeded")
            a_ledger.open()  # A meets B's reservation of c1 in the ledger, its view of c2 still waiting
            await asyncio.wait_for(a_told.reached.wait(), 30)
            assert a.ledgers.conflicts == 1
            b_grant.open()
            await asyncio.wait_for(b_grants_c1, 30)
            a_told.open()
            await asyncio.wait_for(a_grants_c2, 30)
            assert max(x.peaks) <= limit, f"the holder's locks after each lock write: {x.peaks}"
            assert [await x.phase(n) for n in ("c0", "c1", "c2")] == [
                ("Held", "Granted"), ("Rejected", "QuotaExceeded"), ("Rejected", "QuotaExceeded")]
            for each in (a, b):
                await each.stop()

    with temporary_namespace(admin_api, "klx-") as ns:
        asyncio.run(scenario(ns))


def test_a_stale_replicas_first_wait_does_not_overwrite_a_live_held_reservation(
    control_plane: Any, admin_api: ApiClient
) -> None:
    """The order of `tests/unit/test_quota_crossing.py`'s test of the same name, against the real API
    server: A grants c2 (held in the ledger, its write of the lock held back) while B, its view still showing
    r2 held by a claim since released, queues c2 and records its first wait; B then decides the
    holder's c3. The holder never has more locks than its limit, and c3 is refused."""
    limit = 2

    async def scenario(ns: str) -> None:
        async with KubeClient(kube_config.load(control_plane.kubeconfig)) as kube:
            x = Crossing(kube, ns, "agent-crossed")
            quotas = {"maxHeldPerHolder": limit, "maxWaitingPerHolder": 3}
            (a, a_api), (b, _) = x.replica(**quotas), x.replica(**quotas)
            await x.claim("c0")
            other = await x.claim("o2", "deploy://r2", holder="agent-other")
            await x.hand_over(a)
            for resource in ("deploy://c0", "deploy://r2"):
                await a.reconcile((ns, resource))
            assert [await x.phase(n) for n in ("c0", "o2")] == [("Held", "Granted")] * 2
            await x.claim("c2", "deploy://r2", wait=True)
            await x.hand_over(a)
            await x.hand_over(b)  # both views: c0 and o2 held, c2 new
            await kube.delete(paths.claims(ns, "o2"))
            a.cache.delete_claim(other)  # released: A sees it, B not yet
            a_write = a_api.hold("patch", paths.locks(ns))  # o2's lock handed to c2: one update
            a_grants_c2 = asyncio.create_task(a.reconcile((ns, "deploy://r2")))  # held in the ledger
            await asyncio.wait_for(a_write.reached.wait(), 30)
            await b.reconcile((ns, "deploy://r2"))  # B queues c2: its first wait, recorded after A's hold
            assert b.ledgers.conflicts == 1
            assert await x.phase("c2") == ("Pending", "Queued")
            await x.claim("c3")
            await x.hand_over(b)  # c3, and c2 Pending; c2's lock not made yet
            await b.reconcile((ns, "deploy://c3"))
            a_write.open()
            await asyncio.wait_for(a_grants_c2, 30)
            assert max(x.peaks) <= limit, f"the holder's locks after each lock write: {x.peaks}"
            assert await x.phase("c3") == ("Rejected", "QuotaExceeded")
            for each in (a, b):
                await each.stop()

    with temporary_namespace(admin_api, "klx-") as ns:
        asyncio.run(scenario(ns))


def test_a_waiter_whose_grant_failed_after_its_hold_was_recorded_still_counts_as_waiting(
    control_plane: Any, admin_api: ApiClient
) -> None:
    """The order of `tests/unit/test_quota_crossing.py`'s test of the same name, against the real API
    server (maxHeldPerHolder 2, maxWaitingPerHolder 1): w1's turn comes, its hold is recorded in the
    ledger and the write of its lock fails, so w1 still waits; the holder's w2, arriving to wait, is
    a second waiter and is refused."""

    async def scenario(ns: str) -> None:
        async with KubeClient(kube_config.load(control_plane.kubeconfig)) as kube:
            x = Crossing(kube, ns, "agent-crossed")
            a, _ = x.replica(failed_lock_writes=1, maxHeldPerHolder=2, maxWaitingPerHolder=1)
            other = await x.claim("o1", "deploy://r1", holder="agent-other")
            await x.claim("o2", "deploy://r2", holder="agent-other")
            await x.claim("w1", "deploy://r1", wait=True)
            await x.hand_over(a)
            for resource in ("deploy://r1", "deploy://r2"):
                await a.reconcile((ns, resource))
            assert await x.phase("w1") == ("Pending", "Queued")
            await kube.delete(paths.claims(ns, "o1"))
            a.cache.delete_claim(other)
            with contextlib.suppress(Unreachable):
                await a.reconcile((ns, "deploy://r1"))  # w1's hold recorded; the update of o1's lock fails
            key = ledger_of(a.policies.policy_for(ns, "deploy://r1"), ns, x.holder)  # type: ignore[union-attr]
            entries = entries_of(await kube.get(paths.leases(ns, lease_name(key))))
            w1_uid = (await kube.get(paths.claims(ns, "w1")))["metadata"]["uid"]
            assert entries[w1_uid].count is Count.HELD
            assert await x.phase("w1") == ("Pending", "Queued")
            await x.claim("w2", "deploy://r2", wait=True)
            await x.hand_over(a)
            await a.reconcile((ns, "deploy://r2"))
            assert await x.phase("w2") == ("Rejected", "QuotaExceeded")
            await a.stop()

    with temporary_namespace(admin_api, "klx-") as ns:
        asyncio.run(scenario(ns))


def test_a_grant_of_a_refused_claim_of_several_counts_on_a_resource_it_was_not_named_first(
    control_plane: Any, admin_api: ApiClient
) -> None:
    """A try-lock of several resources (`deploy://b`, named first, and `deploy://a`) is refused by
    replica A (`deploy://b` is held by another holder) while replica B, its view behind, grants it:
    B records the hold in the quota ledger and, slow, creates the lock of `deploy://a` (granted first,
    in sorted order) only after the reservation's bound. Until that lock is deleted it holds
    `deploy://a` with a fencing token, so A counts it against the holder (`maxHeldPerHolder: 1`) and
    refuses the holder's next claim; then A removes the stray grant, the claim waiting on
    `deploy://a` gets it, and deleting the refused claim leaves nothing of it behind."""

    async def scenario(ns: str) -> None:
        async with KubeClient(kube_config.load(control_plane.kubeconfig)) as kube:
            x = Crossing(kube, ns, "agent-crossed")
            (a, _), (b, b_api) = x.replica(maxHeldPerHolder=1), x.replica(maxHeldPerHolder=1)
            await x.claim("o", "deploy://b", holder="agent-other")
            await x.hand_over(a)
            await a.reconcile((ns, "deploy://b"))
            assert await x.phase("o") == ("Held", "Granted")
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": "m"},
                    "spec": {"resources": ["deploy://b", "deploy://a"], "holder": x.holder}}
            m = await kube.create(paths.claims(ns), body)
            m_key = multi_key(ns, m["metadata"]["uid"])
            b.cache.upsert_claim(m)  # B's view: m, and neither o nor its lock yet
            b_create = b_api.hold("create", paths.locks(ns))
            b_grants_m = asyncio.create_task(b.reconcile(m_key))  # its hold recorded in the ledger
            await asyncio.wait_for(b_create.reached.wait(), 30)
            await x.hand_over(a)
            await a.reconcile(m_key)
            assert await x.phase("m") == ("Rejected", "HeldByAnotherHolder")
            await asyncio.sleep(RESERVATION_SECONDS + 1)  # B's reservation no longer counts
            # B creates the lock of deploy://a, then stops before its next write (a ledger write or
            # the create of deploy://b's lock): the grant stays until a replica removes it.
            b_next = [b_api.hold("patch", paths.leases(ns)), b_api.hold("create", paths.locks(ns))]
            b_create.open()
            waits = [asyncio.ensure_future(g.reached.wait()) for g in b_next]
            await asyncio.wait(waits, timeout=MIN_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for each in waits:
                each.cancel()
            assert any(g.reached.is_set() for g in b_next), "B made no write after the lock of deploy://a"
            stray = await kube.get(paths.locks(ns, lock_name("deploy://a")))
            assert stray["spec"]["claimRef"]["uid"] == m["metadata"]["uid"]
            await x.claim("c")  # the holder's next claim, a try-lock of deploy://c
            await x.hand_over(a)  # A's view: m Rejected, its grant on deploy://a, and c
            await a.reconcile((ns, "deploy://c"))
            assert max(x.peaks, default=0) <= 1, f"the holder's locks after each lock write: {x.peaks}"
            assert await x.phase("c") == ("Rejected", "QuotaExceeded")
            await x.claim("w", "deploy://a", holder="agent-waiter", wait=True)
            await x.hand_over(a)
            await a.reconcile((ns, "deploy://a"))  # the stray grant goes, w gets deploy://a
            assert await x.phase("w") == ("Held", "Granted")
            await kube.delete(paths.claims(ns, "m"))
            deleted = a.cache.delete_claim(m)
            if deleted is not None:
                await a.reconcile(deleted)
            b_grants_m.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await b_grants_m
            for gate in b_next:
                gate.open()
            locks = (await kube.list(paths.locks(ns)))["items"]
            assert sorted((lk["spec"]["resource"], lk["spec"]["holder"]) for lk in locks) == [
                ("deploy://a", "agent-waiter"), ("deploy://b", "agent-other")]
            assert [await x.phase(n) for n in ("o", "w")] == [("Held", "Granted")] * 2
            for each in (a, b):
                await each.stop()

    with temporary_namespace(admin_api, "klx-") as ns:
        asyncio.run(scenario(ns))

