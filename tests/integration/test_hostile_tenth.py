"""A hostile agent, a tenth pass (docs/security.md, "A hostile agent, a tenth pass (2026-11-28)").
The static users alice and bob bound to `kubelock-agent`, against the real API server and an operator
of this tree: two resources whose lock names collide; a namespace deleted while its claims hold and
wait, and made again at once with the same claim names; one tenant's flood of claims beside another
namespace's acquires; what the agent role allows outside lock objects.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CoordinationV1Api, CoreV1Api, V1Namespace, V1ObjectMeta

from kubelock.domain.resource import lock_name, normalise
from kubelock.testbed import ControlPlane
from tests.integration.conftest import UserApi
from tests.support.access import agents_namespace, allowed, bind, bind_agents, wait_allowed
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.commands import environment, python_json
from tests.support.namespaces import new_namespace, temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klh10-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
Body = dict[str, Any]

# Two resources whose lock names are one: both share the name's readable start (its first 40
# characters), and the 12 hex digits of the digest that follow match: a 48-bit birthday collision,
# found in 20 s of one core by walks of sha256 with distinguished points.
COLLIDING = (
    "mr://collide/0123456789012345678901234567890123456789/b4aaad9595a4",
    "mr://collide/0123456789012345678901234567890123456789/dcf02201bed3",
)


def _bind_agents(admin_api: ApiClient, name: str) -> str:
    bind_agents(admin_api, name)
    return name


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with agents_namespace(admin_api, PREFIX) as name:
        yield name


def claim_many(locks: Locks, name: str, resources: list[str], holder: str) -> None:
    body = {
        "apiVersion": "kubelock.dev/v1alpha1",
        "kind": "LockClaim",
        "metadata": {"name": name},
        "spec": {"resources": resources, "holder": holder, "ttlSeconds": 300},
    }
    locks.api.create_namespaced_custom_object("kubelock.dev", "v1alpha1", locks.namespace, "lockclaims", body)


def reason_of(body: Body) -> str | None:
    reason = status_of(body).get("reason")
    return None if reason is None else str(reason)


def test_a_resource_whose_lock_name_is_another_resources_lock_is_refused_not_spun_on(
    ns: str, user_api: UserApi, prefix_operator: OperatorProcess
) -> None:
    a, b = COLLIDING
    name = lock_name(normalise(a))
    assert name == lock_name(normalise(b)) and a != b
    alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns)
    log_start = len(prefix_operator.log_text())
    alice.claim("collide-a", a, "user:alice/w", ttl=300)
    alice.wait_phase("collide-a", "Held", DEADLINE)

    # A try-lock of the other resource is answered at once: nothing granted, and told why.
    bob.claim("collide-b", b, "user:bob/w", ttl=300)
    tried = bob.wait_for("collide-b", lambda x: phase_of(x) is not None, DEADLINE, "answered")
    assert phase_of(tried) == "Rejected" and reason_of(tried) == "LockRefused", status_of(tried)
    assert a in status_of(tried)["message"] and name in status_of(tried)["message"], status_of(tried)
    # The same for a claim of several resources that includes it: it holds none of them.
    claim_many(bob, "collide-multi", ["mr://collide-free", b], "user:bob/w")
    multi = bob.wait_for("collide-multi", lambda x: phase_of(x) is not None, DEADLINE, "answered")
    assert phase_of(multi) == "Rejected" and reason_of(multi) == "LockRefused", status_of(multi)

    # A waiter waits (told why), and is granted once the other resource's lock is gone.
    bob.claim("collide-wait", b, "user:bob/w2", ttl=300, wait=True)
    waiting = bob.wait_for("collide-wait", lambda x: reason_of(x) == "LockRefused", DEADLINE, "LockRefused")
    assert phase_of(waiting) == "Pending", status_of(waiting)
    [lock] = [x for x in alice.locks() if x["metadata"]["name"] == name]
    assert lock["spec"]["resource"] == a and lock["spec"]["holder"] == "user:alice/w"  # alice's lock untouched
    alice.delete("collide-a")
    held = bob.wait_phase("collide-wait", "Held", DEADLINE)
    assert status_of(held)["lockName"] == name
    assert bob.lock(name)["spec"]["resource"] == b
    bob.delete("collide-wait")
    log = prefix_operator.log_text()[log_start:]
    assert "did not settle" not in log, log[-3000:]


def _claims_gone(locks: Locks) -> bool:
    return not locks.claims() and not locks.locks()


def _errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]


def test_a_namespace_deleted_while_holding_and_made_again_at_once_starts_clean(
    admin_api: ApiClient, control_plane: ControlPlane, user_api: UserApi, prefix_operator: OperatorProcess
) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    core = CoreV1Api(admin_api)
    log_start = len(prefix_operator.log_text())
    # Deleted by the test itself, made again under the same name, and deleted again.
    name = _bind_agents(admin_api, new_namespace(admin_api, PREFIX))
    alice, bob = Locks(user_api("alice"), name), Locks(user_api("bob"), name)
    alice.claim("held", "mr://ns/r", "user:alice/w", ttl=300)
    first = alice.wait_phase("held", "Held", DEADLINE)
    bob.claim("waiter", "mr://ns/r", "user:bob/w", ttl=300, wait=True)
    bob.wait_phase("waiter", "Pending", DEADLINE)
    old_lock_uid = alice.locks()[0]["metadata"]["uid"]

    started = time.monotonic()
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    wait_until(gone, f"namespace {name} to be gone", DEADLINE)
    gone_after = time.monotonic() - started
    # Made again at once, with the same claim names on the same resource, in the other order.
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))
    try:
        _bind_agents(admin_api, name)
        made_again = time.monotonic()
        bob.claim("waiter", "mr://ns/r", "user:bob/w", ttl=300)
        held = bob.wait_phase("waiter", "Held", DEADLINE)
        granted_after = time.monotonic() - made_again
        alice.claim("held", "mr://ns/r", "user:alice/w", ttl=300, wait=True)
        queued = alice.wait_phase("held", "Pending", DEADLINE)
        assert status_of(queued)["reason"] == "Queued", status_of(queued)
        [lock] = bob.locks()
        assert lock["metadata"]["uid"] != old_lock_uid and lock["spec"]["holder"] == "user:bob/w"
        assert status_of(held)["fencingToken"] > status_of(first)["fencingToken"]
        bob.delete("waiter")
        alice.wait_phase("held", "Held", DEADLINE)
        alice.delete("held")
        wait_until(lambda: _claims_gone(alice), "nothing left in the namespace", DEADLINE)
    finally:
        core.delete_namespace(name)
    print(f"namespace gone {gone_after:.1f} s after the delete; granted {granted_after:.2f} s after made again")
    errors = _errors(prefix_operator.log_text()[log_start:])
    assert not errors, errors


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _try_lock_seconds(locks: Locks, name: str, resource: str, holder: str) -> float:
    started = time.monotonic()
    locks.claim(name, resource, holder, ttl=300)
    locks.wait_phase(name, "Held", DEADLINE)
    took = time.monotonic() - started
    locks.delete(name)
    return took


FLOOD = 1000


def test_one_tenants_flood_of_claims_leaves_others_served_and_nothing_behind(
    admin_api: ApiClient, control_plane: ControlPlane, user_api: UserApi, prefix_operator: OperatorProcess
) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    assert prefix_operator.popen is not None
    pid = prefix_operator.popen.pid
    log_start = len(prefix_operator.log_text())
    tenant_ns = _bind_agents(admin_api, new_namespace(admin_api, PREFIX))
    other_ns = _bind_agents(admin_api, new_namespace(admin_api, PREFIX))
    try:
        alice, bob = Locks(user_api("alice"), tenant_ns), Locks(user_api("bob"), other_ns)
        rss_before = _rss_kib(pid)
        before = [_try_lock_seconds(bob, f"before-{i}", f"mr://other/{i}", "user:bob/w") for i in range(10)]
        flood_started = time.monotonic()
        clients = [Locks(user_api("alice"), tenant_ns) for _ in range(4)]

        def create(i: int) -> None:
            clients[i % 4].claim(f"flood-{i}", f"mr://flood/{i}", f"user:alice/w{i % 50}", ttl=600)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            flooding = pool.map(create, range(FLOOD))
            during = [_try_lock_seconds(bob, f"during-{i}", f"mr://other/d{i}", "user:bob/w") for i in range(10)]
            list(flooding)
        created_in = time.monotonic() - flood_started
        rss_peak = _rss_kib(pid)
        wait_until(lambda: sum(phase_of(c) == "Held" for c in alice.claims()) == FLOOD, "the flood held", 600)
        held_in = time.monotonic() - flood_started
        rss_held = _rss_kib(pid)
        events = CoreV1Api(admin_api).list_namespaced_event(tenant_ns).items
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: clients[i % 4].delete(f"flood-{i}"), range(FLOOD)))
        wait_until(lambda: _claims_gone(alice), "nothing left of the flood", 600)
        cleared_in = time.monotonic() - flood_started
        events_after = CoreV1Api(admin_api).list_namespaced_event(tenant_ns).items
        leases = CoordinationV1Api(admin_api).list_namespaced_lease(tenant_ns).items
        after = [_try_lock_seconds(bob, f"after-{i}", f"mr://other/a{i}", "user:bob/w") for i in range(10)]
        rss_after = _rss_kib(pid)
    finally:
        CoreV1Api(admin_api).delete_namespace(tenant_ns)
        CoreV1Api(admin_api).delete_namespace(other_ns)
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().strip()
    print(
        f"\nflood of {FLOOD}: created in {created_in:.1f} s, all Held at {held_in:.1f} s, all gone at "
        f"{cleared_in:.1f} s; other namespace's try-lock s before/during/after (median, max): "
        f"{sorted(before)[5]:.2f}/{max(before):.2f} {sorted(during)[5]:.2f}/{max(during):.2f} "
        f"{sorted(after)[5]:.2f}/{max(after):.2f}; operator RSS KiB before {rss_before}, after the creates "
        f"{rss_peak}, all held {rss_held}, after {rss_after}; Events while held {len(events)}, after "
        f"{len(events_after)} ({sorted({e.reason for e in events_after})}); leases left "
        f"{len(leases)}; load {load}"
    )
    assert not _errors(prefix_operator.log_text()[log_start:])
    # Routine Events are a per-namespace burst of 25 refilled one per 300 s, then summaries a minute:
    # bounded by the namespace, not by its claims.
    assert len(events_after) <= 60, len(events_after)
    assert not leases  # no quota ledger (no LockPolicy), nothing else of the operator's


# What the agent role lets an agent do beside lock objects, in its own namespace (`kubelock-agent`
# bound there) and what a lock admin of one namespace may do in another.
AGENT_REFUSED = [
    ("get", "secrets", ""), ("list", "configmaps", ""), ("create", "configmaps", ""),
    ("get", "leases", "coordination.k8s.io"), ("create", "leases", "coordination.k8s.io"),
    ("update", "leases", "coordination.k8s.io"), ("delete", "leases", "coordination.k8s.io"),
    ("create", "events", ""), ("delete", "events", ""), ("patch", "events", ""),
    ("create", "pods", ""), ("create", "serviceaccounts/token", ""),
    ("create", "rolebindings", "rbac.authorization.k8s.io"),
    ("update", "lockclaims/status", "kubelock.dev"), ("create", "resourcelocks", "kubelock.dev"),
    ("delete", "resourcelocks", "kubelock.dev"), ("create", "lockpolicies", "kubelock.dev"),
    ("deletecollection", "lockclaims", "kubelock.dev"), ("prioritize", "lockclaims", "kubelock.dev"),
]


def test_what_the_agent_role_allows_beside_lock_objects(
    ns: str, admin_api: ApiClient, control_plane: ControlPlane
) -> None:
    allowed_now = [(v, r, g) for v, r, g in AGENT_REFUSED if allowed(admin_api, "alice", ns, v, r, g)]
    assert not allowed_now, allowed_now
    # Nothing in a namespace it is not bound in (the operator's, for one), nor cluster-wide.
    for namespace in ("kube-system", "default", None):
        for verb, resource in (("list", "lockclaims"), ("list", "resourcelocks"), ("create", "lockclaims")):
            assert not allowed(admin_api, "alice", namespace, verb, resource), (namespace, verb, resource)
    # A lock admin of one namespace has nothing in another.
    with temporary_namespace(admin_api, PREFIX) as mine:
        bind(admin_api, mine, "kubelock-admin", "lockadmin")
        wait_allowed(admin_api, "lockadmin", mine, "delete", "resourcelocks")
        for verb, resource in (("delete", "resourcelocks"), ("create", "lockpolicies"), ("delete", "lockclaims"),
                               ("prioritize", "lockclaims"), ("list", "lockclaims")):
            assert not allowed(admin_api, "lockadmin", ns, verb, resource), (verb, resource)
        assert not allowed(admin_api, "lockadmin", mine, "create", "leases", "coordination.k8s.io")
        assert not allowed(admin_api, "lockadmin", mine, "get", "secrets", "")


# An agent whose wall clock is `skew` seconds off the cluster's takes a lock with the SDK, and says
# how long it believes it holds it (the lease's loss moment, on its monotonic clock) against the end
# the operator enforces (the claim's expiresAt, by the cluster's clock: this machine's, unskewed).
SKEWED = """
import asyncio, json, time
_real = time.time
time.time = lambda: _real() + {skew}
from kubelock.sdk import LockError
from kubelock.sdk.client import AsyncLockClient

async def main():
    async with AsyncLockClient(decision_timeout=120) as client:
        try:
            async with client.lock({uri!r}, ttl=30, wait=False) as lease:
                loop = asyncio.get_running_loop()
                believed = lease.loss_at() - loop.time()
                enforced = lease.claim.expires_at.timestamp() - _real()
                print(json.dumps({{"believed": believed, "enforced": enforced}}))
        except LockError as error:
            print(json.dumps({{"error": type(error).__name__, "message": str(error)}}))

asyncio.run(main())
"""


@pytest.mark.parametrize("skew", [-600, 600])
def test_an_agent_whose_clock_is_off_holds_no_longer_than_the_operator_enforces(
    ns: str, control_plane: ControlPlane, user_api: UserApi, skew: int
) -> None:
    instance = f"skew{skew + 1000}"
    env = environment(control_plane.user_kubeconfig("alice"), ns, instance)
    answer = python_json(SKEWED.format(skew=skew, uri=f"mr://skewed/{skew + 1000}"), env)
    # Before: a clock 600 s slow believed it held for 630 s a lease the operator ends after 30 s; a
    # clock 600 s fast was told `Expired` at once for every fresh grant.
    print(f"\nclock {skew:+d} s: {answer}")
    assert "error" not in answer, answer
    assert answer["believed"] <= answer["enforced"], answer
    assert answer["believed"] >= answer["enforced"] - 5, answer  # the bound costs at most a second or so
    left = [c for c in Locks(user_api("alice"), ns).claims() if c["spec"]["holder"].endswith(instance)]
    assert not left, left  # released on the way out


def test_claims_named_at_the_253_character_limit_are_served_and_their_events_named(
    ns: str, admin_api: ApiClient, user_api: UserApi
) -> None:
    alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns)
    held, waiter = "a" * 253, "b" * 253
    alice.claim(held, "mr://long-names", "user:alice/w", ttl=300)
    alice.wait_phase(held, "Held", DEADLINE)
    bob.claim(waiter, "mr://long-names", "user:bob/w", ttl=300, wait=True)
    bob.wait_for(waiter, lambda x: reason_of(x) == "Queued", DEADLINE, "Queued")
    alice.delete(held)
    granted = bob.wait_phase(waiter, "Held", DEADLINE)
    assert bob.lock(status_of(granted)["lockName"])["spec"]["claimRef"]["name"] == waiter

    def events_on_both() -> bool:
        named = {e.involved_object.name for e in CoreV1Api(admin_api).list_namespaced_event(ns).items}
        return {held, waiter} <= named

    # The Events' names are generated from the claim's first 200 characters: an Event is stored.
    wait_until(events_on_both, "Events on both claims", DEADLINE)
    bob.delete(waiter)
