"""A hostile agent, a sixth pass (docs/security.md, "A hostile agent, a sixth pass (2026-11-27)").
Agents bound to `kubelock-agent` (the static user alice), a lock admin (`lockadmin`, `kubelock-admin`)
and the cluster admin who writes LockPolicies, against the real API server and an operator of this
tree: when a LockPolicy just created starts to govern (its `status.observedGeneration`), that a burst
of claims made after it is held to its quota, that a flood of another agent's claims does not keep a
new policy from governing, and that no kubelock role writes a policy's status. (A second live process
of the holder's instance releasing the first's lock: test_process_adoption.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from kubelock.api.constants import GROUP, VERSION
from kubelock.sdk import LockClient, LockError
from kubelock.testbed import ControlPlane
from tests.support.access import bind, wait_allowed
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klh6-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
POLICIES = "lockpolicies"
ALICE = "user:alice/w1"
Body = dict[str, Any]
UserApi = Callable[[str], ApiClient]


@pytest.fixture
def ns(admin_api: ApiClient, prefix_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        bind(admin_api, name, "kubelock-agent", "alice")
        bind(admin_api, name, "kubelock-admin", "lockadmin")
        wait_allowed(admin_api, "alice", name, "create", "lockclaims")
        wait_allowed(admin_api, "lockadmin", name, "create", "lockpolicies")
        yield name


def create_policy(api: ApiClient, ns: str, name: str, **spec: Any) -> Body:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockPolicy", "metadata": {"name": name}, "spec": spec}
    return dict(CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, body))


def get_policy(api: ApiClient, ns: str, name: str) -> Body:
    return dict(CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, name))


def wait_governing(api: ApiClient, ns: str, name: str) -> tuple[Body, float]:
    """What the docs tell a policy's writer to do before making claims it must govern: wait until the
    operator records the policy's generation. The policy then, and the seconds it took."""
    began = time.monotonic()
    seen: list[Body] = []

    def recorded() -> bool:
        body = get_policy(api, ns, name)
        seen[:] = [body]
        return (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"]

    wait_until(recorded, f"LockPolicy {ns}/{name} records the generation it governs with", timeout=DEADLINE)
    return seen[0], time.monotonic() - began


def claim_body(name: str, resource: str, holder: str) -> Body:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name},
            "spec": {"resource": resource, "holder": holder, "wait": False}}


def burst(api: ApiClient, ns: str, names_resources: list[tuple[str, str]]) -> None:
    """Every claim created at once, one thread each (as many agents' processes would)."""
    errors: list[BaseException] = []

    def create(name: str, resource: str) -> None:
        try:
            CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "lockclaims", claim_body(name, resource, ALICE))
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=create, args=pair) for pair in names_resources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert not errors, errors


def answered(locks: Locks, names: list[str]) -> dict[str, str]:
    """Each claim's phase once every one has an answer (Held or an end: these claims do not wait)."""
    phases: dict[str, str] = {}

    def all_answered() -> bool:
        phases.clear()
        phases.update({c["metadata"]["name"]: phase_of(c) or "" for c in locks.claims()
                       if c["metadata"]["name"] in names})
        return len(phases) == len(names) and all(p not in ("", "Pending") for p in phases.values())

    wait_until(all_answered, f"all {len(names)} claims answered", timeout=DEADLINE)
    return dict(phases)


def test_a_policy_records_when_it_governs_and_a_burst_made_after_is_held_to_its_quota(
    admin_api: ApiClient, user_api: UserApi, ns: str
) -> None:
    locks = Locks(admin_api, ns)
    lockadmin = user_api("lockadmin")
    created = create_policy(lockadmin, ns, "held-two", resourcePrefix="deploy://", maxHeldPerHolder=2)
    assert created["metadata"]["generation"] == 1
    policy, took = wait_governing(admin_api, ns, "held-two")
    assert policy["status"] == {"observedGeneration": 1}
    print(f"observedGeneration 1 recorded {took:.2f} s after the create")

    names = [f"b{i}" for i in range(12)]
    burst(user_api("alice"), ns, [(n, f"deploy://burst/{n}") for n in names])
    phases = answered(locks, names)
    held = sorted(n for n, p in phases.items() if p == "Held")
    assert len(held) == 2, phases
    for name in set(names) - set(held):
        status = status_of(locks.get(name))
        assert (status.get("phase"), status.get("reason")) == ("Rejected", "QuotaExceeded"), status
        assert "LockPolicy held-two" in status.get("message", ""), status

    # A change is a new generation: recorded in turn, then in force (one more claim fits).
    objects = CustomObjectsApi(lockadmin)
    objects.patch_namespaced_custom_object(GROUP, VERSION, ns, POLICIES, "held-two", {"spec": {"maxHeldPerHolder": 3}})
    policy, took = wait_governing(admin_api, ns, "held-two")
    assert (policy["metadata"]["generation"], policy["status"]["observedGeneration"]) == (2, 2)
    print(f"observedGeneration 2 recorded {took:.2f} s after the change")
    burst(user_api("alice"), ns, [("c0", "deploy://burst/c0"), ("c1", "deploy://burst/c1")])
    after = answered(locks, ["c0", "c1"])
    assert sorted(after.values()) == ["Held", "Rejected"], after


def test_no_kubelock_role_writes_a_policys_status(admin_api: ApiClient, user_api: UserApi, ns: str) -> None:
    """The status says since when claims are decided under the policy: only the operator writes it. An
    agent forging it, or a lock admin, would have the policy's writer make claims too soon."""
    create_policy(admin_api, ns, "p", resourcePrefix="deploy://")
    policy, _ = wait_governing(admin_api, ns, "p")
    forged = {"status": {"observedGeneration": 7}}
    for user in ("alice", "lockadmin"):
        with pytest.raises(ApiException) as refused:
            CustomObjectsApi(user_api(user)).patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, POLICIES, "p", forged)
        assert refused.value.status == 403, (user, refused.value.body)
    # A status in the body of a spec write is dropped (the status subresource), for the admin too.
    CustomObjectsApi(user_api("lockadmin")).patch_namespaced_custom_object(
        GROUP, VERSION, ns, POLICIES, "p", {"spec": {"capacity": 2}, **forged})
    changed, _ = wait_governing(admin_api, ns, "p")
    assert changed["status"] == {"observedGeneration": 2}, changed
    assert policy["metadata"]["uid"] == changed["metadata"]["uid"]


def test_a_flood_of_claims_does_not_keep_a_new_policy_from_governing(
    admin_api: ApiClient, user_api: UserApi, ns: str
) -> None:
    """alice creates claims of her own as fast as four threads can while a lock admin creates a policy
    that limits her: the policy is recorded all the same (the operator takes policies in on a watch
    of their own, not behind the claims), and what she claims after that is held to it."""
    locks = Locks(admin_api, ns)
    alice = user_api("alice")
    stop = threading.Event()
    flooded: list[int] = []

    def flood(worker: int) -> None:
        objects = CustomObjectsApi(alice)
        count = 0
        while not stop.is_set() and count < 60:
            name = f"f{worker}-{count}"
            objects.create_namespaced_custom_object(
                GROUP, VERSION, ns, "lockclaims", claim_body(name, f"flood://{name}", ALICE))
            count += 1
        flooded.append(count)

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(locks.claims()) >= 40, "the flood under way", timeout=DEADLINE)
        create_policy(user_api("lockadmin"), ns, "one", resourcePrefix="deploy://", maxHeldPerHolder=1)
        _, took = wait_governing(admin_api, ns, "one")
        print(f"observedGeneration recorded {took:.2f} s after the create, under the flood")
        names = [f"d{i}" for i in range(6)]
        burst(alice, ns, [(n, f"deploy://{n}") for n in names])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=DEADLINE)
    print(f"flood: {sum(flooded)} claims")
    phases = answered(locks, names)
    assert sorted(phases.values()) == ["Held"] + ["Rejected"] * 5, phases


def test_claims_with_generated_names_never_give_one_holder_a_resource_twice(
    admin_api: ApiClient, user_api: UserApi, ns: str, control_plane: ControlPlane
) -> None:
    """The SDK and the commands derive a claim's name from holder + resource; an agent writing claims
    itself may use `generateName` and so make many claims of one holder for one resource. At most
    one is Held; the others are refused, and the SDK's own acquire of the resource is refused too
    (a wait on itself, `SelfDeadlock`), never reported as held."""
    locks = Locks(admin_api, ns)
    alice = CustomObjectsApi(user_api("alice"))
    errors: list[BaseException] = []

    def create() -> None:
        body = claim_body("", "deploy://generated", ALICE)
        body["metadata"] = {"generateName": "g-"}
        try:
            alice.create_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", body)
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert not errors, errors
    names = [c["metadata"]["name"] for c in locks.claims()]
    assert len(names) == 10 and all(n.startswith("g-") for n in names), names
    phases = answered(locks, names)
    held = [n for n, p in phases.items() if p == "Held"]
    assert len(held) == 1, phases
    assert sorted(set(phases.values())) == ["Held", "Rejected"], phases
    (lock,) = locks.locks()
    assert lock["spec"]["claimRef"]["name"] == held[0]
    for name in set(names) - set(held):
        status = status_of(locks.get(name))
        assert (status.get("reason"), status.get("holder")) == ("HeldByAnotherHolder", ALICE), status

    if not isinstance(control_plane, ControlPlane):
        return  # the SDK's part needs the bed's static users' kubeconfigs
    config = str(control_plane.user_kubeconfig("alice"))
    with (LockClient(kubeconfig=config, namespace=ns, instance="w1", decision_timeout=DEADLINE) as client,
          pytest.raises(LockError) as refused):
        client.acquire("deploy://generated", ttl=60)
    print(f"SDK acquire beside a generated claim: {type(refused.value).__name__} {refused.value.reason}: "
          f"{refused.value.message}")
    # The SDK's acquire waits: waiting on a resource its own holder holds is a cycle of one.
    assert refused.value.reason == "SelfDeadlock", refused.value
    assert f"{ALICE} → deploy://generated → {ALICE}" in refused.value.message
