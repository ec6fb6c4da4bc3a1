"""Deadlock detection across pending claims, and locks released when their pod terminates."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from kubelock.domain.resource import normalise
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.namespaces import new_namespace, temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "kld-"
POD_LABEL = {"kubelock.dev/lock-holder": "true"}


@pytest.fixture(scope="module")
def deadlock_operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",)) as op:
        yield op




@pytest.fixture
def ns(admin_api: ApiClient, deadlock_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        yield name


@pytest.fixture
def locks(admin_api: ApiClient, ns: str) -> Locks:
    return Locks(admin_api, ns)


def _hold(locks: Locks, name: str, resource: str, holder: str) -> dict:  # type: ignore[type-arg]
    locks.claim(name, resource, holder)
    return locks.wait_phase(name, "Held")


# ---- deadlocks ----------------------------------------------------------------------------------


def test_two_holder_cycle_makes_the_closing_claim_deadlocked(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    _hold(locks, "a-pr", "github://acme/app/pr/10", "agent-a")
    _hold(locks, "b-deploy", "deploy://api-prod", "agent-b")
    locks.claim("a-wants-deploy", "deploy://api-prod", "agent-a", wait=True)
    locks.wait_phase("a-wants-deploy", "Pending")
    locks.claim("b-wants-pr", "github://acme/app/pr/10", "agent-b", wait=True)
    victim = status_of(locks.wait_phase("b-wants-pr", "Deadlocked"))
    assert victim["cycle"] == ["agent-b", "github://acme/app/pr/10", "agent-a", "deploy://api-prod", "agent-b"]
    assert victim["reason"] == "DeadlockDetected"
    assert victim["message"] == "deadlock: agent-b → github://acme/app/pr/10 → agent-a → deploy://api-prod → agent-b"
    assert phase_of(locks.get("a-wants-deploy")) == "Pending"
    def events() -> list[Any]:
        selector = "involvedObject.name=b-wants-pr"
        return list(CoreV1Api(admin_api).list_namespaced_event(ns, field_selector=selector).items)

    wait_until(lambda: any(e.reason == "DeadlockDetected" for e in events()), "the DeadlockDetected Event")
    assert any(e.reason == "DeadlockDetected" and e.type == "Warning" for e in events())
    # The victim's holder releases what it holds: the other claim of the cycle proceeds.
    locks.delete("b-deploy")
    locks.wait_phase("a-wants-deploy", "Held")


def test_three_holder_cycle(locks: Locks) -> None:
    for holder, resource in (("a", "r://1"), ("b", "r://2"), ("c", "r://3")):
        _hold(locks, f"{holder}-holds", resource, holder)
    locks.claim("a-waits", "r://2", "a", wait=True)
    locks.claim("b-waits", "r://3", "b", wait=True)
    locks.wait_phases(["a-waits", "b-waits"], "Pending")
    locks.claim("c-waits", "r://1", "c", wait=True)
    victim = status_of(locks.wait_phase("c-waits", "Deadlocked"))
    assert victim["cycle"] == ["c", "r://1", "a", "r://2", "b", "r://3", "c"]
    locks.delete("c-holds")
    locks.wait_phase("b-waits", "Held")
    locks.delete("b-holds")
    locks.wait_phase("a-waits", "Held")


def test_cycle_closed_by_a_grant(locks: Locks) -> None:
    """a holds r1 and waits for r2 (held by x); b waits for r2 too, and holds nothing a needs...
    until x releases r2 and it goes to... a first (FIFO). Build it so the grant closes the cycle:
    b holds r3 and waits for r1 (held by a); a waits for r2 behind nobody else; x holds r2 and
    then hands it to b's second claim? Simplest closing grant: c holds r2, a waits for r2, b holds
    r1? — see the concrete set-up below."""
    _hold(locks, "a-r1", "r://1", "a")  # a holds r1
    _hold(locks, "x-r2", "r://2", "x")  # x holds r2
    locks.claim("b-r2", "r://2", "b", wait=True)  # b waits for r2 (first in queue)
    locks.wait_phase("b-r2", "Pending")
    locks.claim("b-r1", "r://1", "b", wait=True)  # b also waits for r1 (held by a): b -> a
    locks.wait_phase("b-r1", "Pending")
    locks.claim("a-r2", "r://2", "a", wait=True)  # a waits for r2 (held by x, b queued first): a -> x
    locks.wait_phase("a-r2", "Pending")
    # No cycle yet: a -> x, b -> x, b -> a. x releases r2: it is granted to b (first in queue),
    # and now a waits for r2 held by b while b waits for r1 held by a: the grant closed a cycle.
    locks.delete("x-r2")
    locks.wait_phase("b-r2", "Held")
    victim = status_of(locks.wait_phase("a-r2", "Deadlocked"))  # the newest wait in the cycle
    assert victim["cycle"] == ["a", "r://2", "b", "r://1", "a"]
    assert phase_of(locks.get("b-r1")) == "Pending"


def test_simultaneous_closers_make_exactly_one_victim(locks: Locks) -> None:
    _hold(locks, "a-r1", "r://1", "a")
    _hold(locks, "b-r2", "r://2", "b")
    barrier = threading.Barrier(2)

    def close(name: str, resource: str, holder: str) -> None:
        barrier.wait()
        locks.claim(name, resource, holder, wait=True)

    threads = [
        threading.Thread(target=close, args=("a-waits", "r://2", "a")),
        threading.Thread(target=close, args=("b-waits", "r://1", "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    locks.wait_for("a-waits", lambda b: phase_of(b) in ("Pending", "Deadlocked"))
    locks.wait_for("b-waits", lambda b: phase_of(b) in ("Pending", "Deadlocked"))
    time.sleep(1.5)  # let any (wrong) second victim appear
    phases = sorted([phase_of(locks.get("a-waits")), phase_of(locks.get("b-waits"))])
    assert phases == ["Deadlocked", "Pending"], phases
    # The victim is the later claim of the two.
    a, b = locks.get("a-waits"), locks.get("b-waits")
    later = max((a, b), key=lambda c: int(status_of(c)["sequence"]))
    assert phase_of(later) == "Deadlocked"


def test_self_deadlock(locks: Locks) -> None:
    _hold(locks, "first", "deploy://same", "agent-a")
    locks.claim("second", "deploy://same", "agent-a", wait=True)
    victim = status_of(locks.wait_phase("second", "Deadlocked"))
    assert victim["cycle"] == ["agent-a", "deploy://same", "agent-a"]
    assert victim["reason"] == "SelfDeadlock"


def test_try_lock_never_deadlocks(locks: Locks) -> None:
    _hold(locks, "a-r1", "r://1", "a")
    _hold(locks, "b-r2", "r://2", "b")
    locks.claim("a-waits", "r://2", "a", wait=True)
    locks.wait_phase("a-waits", "Pending")
    locks.claim("b-tries", "r://1", "b")
    assert status_of(locks.wait_phase("b-tries", "Rejected"))["holder"] == "a"
    # A rejected try-lock leaves no edge behind: a later real wait is judged on real waits only.
    assert phase_of(locks.get("a-waits")) == "Pending"


def _brute_force_cycle(held: dict[str, str], waits: dict[str, set[str]]) -> bool:
    """Any cycle in holder -> holder(resource) over all waits (exhaustive DFS)."""
    graph = {h: {held[r] for r in rs if r in held and held[r] != h} for h, rs in waits.items()}
    selfish = any(held.get(r) == h for h, rs in waits.items() for r in rs)
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1 or (state.get(nxt) is None and visit(nxt)):
                return True
        state[node] = 2
        return False

    return selfish or any(state.get(n) is None and visit(n) for n in list(graph))


def test_no_false_positives_in_a_random_workload(locks: Locks) -> None:
    """500 claims by 40 holders over 60 resources. Afterwards, every Deadlocked claim must have
    been part of a real cycle: with the victims removed the remaining waits are cycle-free, and
    putting any one victim back creates a cycle (checked by brute force on the final state)."""
    _random_workload(locks)
    _assert_every_cycle_ended(locks)


def test_no_cycle_is_left_when_the_claims_arrive_in_bulk(locks: Locks, deadlock_operator: OperatorProcess) -> None:
    """The same workload created while the operator is paused, as an operator far behind a busy API
    server sees it: every claim is known before any resource is decided, so cycles overlap in every
    search. None may be left (a search that stopped at the first cycle it met left some)."""
    deadlock_operator.pause()
    try:
        _random_workload(locks)
    finally:
        deadlock_operator.resume()
    _assert_every_cycle_ended(locks)


def _random_workload(locks: Locks) -> None:
    rng = random.Random(7)
    holders = [f"h{i}" for i in range(40)]
    resources = [f"res://{i}" for i in range(60)]
    for i in range(500):
        locks.claim(f"c{i:03d}", rng.choice(resources), rng.choice(holders), wait=rng.random() < 0.7)


def _assert_every_cycle_ended(locks: Locks) -> None:
    # Every claim decided and no cycle among the pending ones, waited for together: a loaded machine
    # may still be choosing victims well after the last claim got its first answer (a fixed 2 s
    # after it may be too short). A cycle left for good still fails, after the deadline.
    def settled() -> bool:
        claims = locks.claims()
        return all(phase_of(c) is not None for c in claims) and not _brute_force_cycle(*_waits_for(claims))

    wait_until(settled, "every claim decided and no cycle of pending claims left", timeout=180)
    claims = locks.claims()
    assert all(phase_of(c) is not None for c in claims), "some claims were never decided"
    held, waits = _waits_for(claims)
    victims = [c for c in claims if phase_of(c) == "Deadlocked"]
    assert not _brute_force_cycle(held, waits), "a cycle of pending claims was left undetected"
    for victim in victims:
        trial = {h: set(rs) for h, rs in waits.items()}
        trial.setdefault(victim["spec"]["holder"], set()).add(normalise(victim["spec"]["resource"]))
        cycle = status_of(victim)["cycle"]
        assert cycle[0] == cycle[-1] == victim["spec"]["holder"]
        # The reported cycle was real when it was found; in the final state it may have been
        # broken by other victims, so only the path shape is checked here.
        assert len(cycle) % 2 == 1 and len(cycle) >= 3


# ---- pod-bound liveness -------------------------------------------------------------------------


def _waits_for(claims: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Who holds each resource, and which resources each holder's pending claims wait for."""
    held = {normalise(c["spec"]["resource"]): c["spec"]["holder"] for c in claims if phase_of(c) == "Held"}
    waits: dict[str, set[str]] = {}
    for c in claims:
        if phase_of(c) == "Pending":
            waits.setdefault(c["spec"]["holder"], set()).add(normalise(c["spec"]["resource"]))
    return held, waits


def _pod(admin_api: ApiClient, ns: str, name: str, node: str, labels: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    core = CoreV1Api(admin_api)
    body = {
        "metadata": {"name": name, "labels": POD_LABEL if labels is None else labels},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "agent:latest"}]},
    }
    pod = core.create_namespaced_pod(ns, body)
    return {"name": pod.metadata.name, "uid": pod.metadata.uid}


def _set_pod_phase(admin_api: ApiClient, ns: str, name: str, phase: str) -> None:
    CoreV1Api(admin_api).patch_namespaced_pod_status(name, ns, {"status": {"phase": phase}})


def test_pod_deleted_hands_the_lock_to_the_next_waiter(
    locks: Locks, admin_api: ApiClient, ns: str, fake_node: str
) -> None:
    pod = _pod(admin_api, ns, "agent-0", fake_node)
    locks.claim("mine", "github://acme/app/issues/1", "agent-0", pod=(pod["name"], pod["uid"]))
    locks.wait_phase("mine", "Held")
    locks.claim("next", "github://acme/app/issues/1", "agent-1", wait=True)
    locks.wait_phase("next", "Pending")
    started = time.monotonic()
    CoreV1Api(admin_api).delete_namespaced_pod("agent-0", ns, grace_period_seconds=0)
    locks.wait_phase("next", "Held")
    assert time.monotonic() - started < 20  # at once (about 1 s idle), with a loaded machine's margin
    revoked = locks.get("mine")
    if revoked:  # the garbage collector may already have removed it if it had an owner reference
        assert phase_of(revoked) == "Revoked" and status_of(revoked)["reason"] == "HolderPodTerminated"


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_pod_finished_releases_its_lock(
    locks: Locks, admin_api: ApiClient, ns: str, fake_node: str, phase: str
) -> None:
    pod = _pod(admin_api, ns, "agent-0", fake_node)
    locks.claim("mine", "deploy://x", "agent-0", pod=(pod["name"], pod["uid"]))
    locks.wait_phase("mine", "Held")
    locks.claim("next", "deploy://x", "agent-1", wait=True)
    locks.wait_phase("next", "Pending")
    _set_pod_phase(admin_api, ns, "agent-0", phase)
    revoked = status_of(locks.wait_phase("mine", "Revoked"))
    assert revoked["reason"] == "HolderPodTerminated"
    locks.wait_phase("next", "Held")


# No kubelet or kwok manages this node (there is no such Node): a pod bound to it and deleted
# gracefully stays in its grace period (deletionTimestamp set, phase unchanged) until the test says
# its containers stopped, as a real kubelet does once they have exited.
UNMANAGED_NODE = "kld-node-without-kubelet"


def test_a_terminating_pod_keeps_its_lock_until_its_containers_have_stopped(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    pod = _pod(admin_api, ns, "agent-0", UNMANAGED_NODE)
    locks.claim("mine", "deploy://z", "agent-0", pod=(pod["name"], pod["uid"]))
    locks.wait_phase("mine", "Held")
    locks.claim("next", "deploy://z", "agent-1", wait=True)
    locks.wait_phase("next", "Pending")
    # The pod also waits for a lock another holds.
    locks.claim("other", "deploy://busy", "agent-2", wait=True)
    locks.wait_phase("other", "Held")
    locks.claim("queued", "deploy://busy", "agent-0", wait=True, pod=(pod["name"], pod["uid"]))
    locks.wait_phase("queued", "Pending")
    # SIGTERM to the holder's containers: it may still be finishing its work under the lock.
    CoreV1Api(admin_api).delete_namespaced_pod("agent-0", ns, grace_period_seconds=120)
    # Its waiter is refused as a new claim would be: it lost nothing, and its process reads the answer.
    queued = status_of(locks.wait_for("queued", lambda b: phase_of(b) != "Pending", what="an end"))
    assert (queued["phase"], queued["reason"]) == ("Rejected", "HolderPodTerminated"), queued
    assert queued["message"] == "pod agent-0 is terminating", queued
    time.sleep(2)
    assert phase_of(locks.get("mine")) == "Held"
    assert phase_of(locks.get("next")) == "Pending"
    # A claim the stopping pod makes now, on a free resource, is not granted: the deletion was seen.
    locks.claim("late", "deploy://free", "agent-0", pod=(pod["name"], pod["uid"]))
    late = status_of(locks.wait_for("late", lambda b: phase_of(b) is not None, what="an answer"))
    assert (late["phase"], late["reason"]) == ("Rejected", "HolderPodTerminated"), late
    assert "is terminating" in late["message"]
    assert phase_of(locks.get("mine")) == "Held"
    # The kubelet reports that the containers have stopped: now the lock goes to the next waiter.
    stopped = time.monotonic()
    _set_pod_phase(admin_api, ns, "agent-0", "Failed")
    assert status_of(locks.wait_phase("mine", "Revoked"))["reason"] == "HolderPodTerminated"
    locks.wait_phase("next", "Held")
    assert time.monotonic() - stopped < 20  # at once, with a loaded machine's margin


def test_a_terminating_pod_that_never_reports_its_end_keeps_its_lock_while_its_lease_lasts(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    # Its node is lost, say: nobody reports the containers' end, and its grace's end says nothing of
    # them (a kubelet that is alive kills them then; one that is gone leaves them running, and their
    # holder renewing). The lease decides: renewed, the lock stays; not renewed, it expires.
    pod = _pod(admin_api, ns, "agent-0", UNMANAGED_NODE)
    # A lease of 12 s renewed every 1.5 s: a loaded machine that holds up a renewal for seconds
    # does not end it (with 8 s it could).
    ttl = 12
    locks.claim("mine", "deploy://w", "agent-0", pod=(pod["name"], pod["uid"]), ttl=ttl)
    locks.wait_phase("mine", "Held")
    locks.claim("next", "deploy://w", "agent-1", wait=True)
    locks.wait_phase("next", "Pending")
    CoreV1Api(admin_api).delete_namespaced_pod("agent-0", ns, grace_period_seconds=2)
    renewing_until = time.monotonic() + 16  # past the grace, and past a lease not renewed
    while time.monotonic() < renewing_until:
        renewed = time.monotonic()  # the operator sees the renewal after this, never before
        locks.renew("mine")
        time.sleep(1.5)
        assert phase_of(locks.get("mine")) == "Held"
        assert phase_of(locks.get("next")) == "Pending"
    locks.wait_phase("next", "Held")
    # Not before the lease's 12 s from the last renewal (less 1 s of margin).
    assert time.monotonic() - renewed >= ttl - 1
    assert status_of(locks.get("mine"))["reason"] == "LeaseExpired"


def test_pod_recreated_under_the_same_name_revokes_the_old_claim(
    locks: Locks, admin_api: ApiClient, ns: str, fake_node: str
) -> None:
    old = _pod(admin_api, ns, "agent-0", fake_node)
    locks.claim("mine", "deploy://y", "agent-0", pod=(old["name"], old["uid"]))
    locks.wait_phase("mine", "Held")
    core = CoreV1Api(admin_api)
    core.delete_namespaced_pod("agent-0", ns, grace_period_seconds=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod("agent-0", ns)
        except ApiException:
            break
        time.sleep(0.1)
    new = _pod(admin_api, ns, "agent-0", fake_node)
    assert new["uid"] != old["uid"]
    assert status_of(locks.wait_phase("mine", "Revoked", timeout=20))["reason"] == "HolderPodTerminated"


def test_claim_for_a_missing_or_unwatched_pod_is_rejected(
    locks: Locks, admin_api: ApiClient, ns: str, fake_node: str
) -> None:
    locks.claim("ghost", "deploy://z", "agent-9", pod=("agent-9", None))
    ghost = status_of(locks.wait_phase("ghost", "Rejected"))
    assert ghost["reason"] == "PodNotFound" and "does not exist" in ghost["message"]
    _pod(admin_api, ns, "plain", fake_node, labels={})
    locks.claim("plain", "deploy://z", "plain", pod=("plain", None))
    plain = status_of(locks.wait_phase("plain", "Rejected"))
    assert "kubelock.dev/lock-holder" in plain["message"]


def test_pod_dies_while_the_operator_is_down(
    control_plane,
    admin_api: ApiClient,
    fake_node: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    ns = new_namespace(admin_api, "kldi-")
    locks = Locks(admin_api, ns)
    log = tmp_path / "op.log"
    op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(ns,)).start()
    try:
        pod = _pod(admin_api, ns, "agent-0", fake_node)
        locks.claim("mine", "deploy://down", "agent-0", pod=(pod["name"], pod["uid"]))
        locks.wait_phase("mine", "Held")
        locks.claim("next", "deploy://down", "agent-1", wait=True)
        locks.wait_phase("next", "Pending")
        op.kill()
        CoreV1Api(admin_api).delete_namespaced_pod("agent-0", ns, grace_period_seconds=0)
        time.sleep(1)
        op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(ns,)).start()
        # From the restarted operator's readiness (its start-up on a loaded machine is not the point):
        # at once (about a second on an idle machine), with a loaded machine's margin.
        started = time.monotonic()
        locks.wait_phase("next", "Held")
        assert time.monotonic() - started < 20
    finally:
        op.stop()
        with contextlib.suppress(ApiException):
            CoreV1Api(admin_api).delete_namespace(ns)


def test_an_operator_of_exact_namespaces_follows_holder_pods(
    control_plane,
    admin_api: ApiClient,
    fake_node: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # For exact namespaces kopf scans neither namespaces nor CRDs (`settings.scanning.disabled`); its
    # watch of the holder pods must still tell the operator of a pod's end. The resync pass, which
    # would also find it, runs 5 s after the start and then only after 300 s.
    ns = new_namespace(admin_api, "kldx-")
    locks = Locks(admin_api, ns)
    op = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "op.log", namespaces=(ns,), extra_args=("--resync-seconds", "300")
    ).start()
    try:
        started = time.monotonic()
        pod = _pod(admin_api, ns, "agent-0", fake_node)
        locks.claim("mine", "deploy://exact", "agent-0", pod=(pod["name"], pod["uid"]))
        locks.wait_phase("mine", "Held")
        locks.claim("next", "deploy://exact", "agent-1", wait=True)
        locks.wait_phase("next", "Pending")
        time.sleep(max(0.0, 7 - (time.monotonic() - started)))  # past the first resync pass
        CoreV1Api(admin_api).delete_namespaced_pod("agent-0", ns, grace_period_seconds=0)
        locks.wait_phase("next", "Held", timeout=60)
    finally:
        op.stop()
        with contextlib.suppress(ApiException):
            CoreV1Api(admin_api).delete_namespace(ns)


def test_a_restarted_operator_keeps_a_stopping_pods_lock_until_it_is_reported_stopped(
    control_plane,
    admin_api: ApiClient,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # The operator restarts while a holder's pod is being deleted (its command cleaning up under the
    # lock). The restarted operator knows nothing of the pod: its early path grants new claims from a
    # small view before the priming is in, and the normal path starts from a cache the pod watch has
    # not filled yet. Neither may take the pod for ended: the lock stays with it until its containers
    # are reported stopped (no kubelet runs the node here: the test reports it).
    ns = new_namespace(admin_api, "kldr-")
    locks = Locks(admin_api, ns)
    log = tmp_path / "op.log"
    op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(ns,)).start()
    try:
        pod = _pod(admin_api, ns, "agent-0", UNMANAGED_NODE)
        locks.claim("mine", "deploy://stopping", "agent-0", pod=(pod["name"], pod["uid"]))
        locks.wait_phase("mine", "Held")
        locks.claim("queued", "deploy://stopping", "agent-1", wait=True)
        locks.wait_phase("queued", "Pending")
        op.kill()
        deleted = time.monotonic()
        CoreV1Api(admin_api).delete_namespaced_pod("agent-0", ns, grace_period_seconds=20)
        # Unanswered at the restart: the early path's to decide.
        locks.claim("new", "deploy://stopping", "agent-2", wait=True)
        op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(ns,)).start()
        locks.wait_phase("new", "Pending")
        # Through the grace and past it: the holder has not been reported stopped.
        while time.monotonic() - deleted < 24:
            assert phase_of(locks.get("mine")) == "Held"
            assert phase_of(locks.get("queued")) == "Pending"
            assert phase_of(locks.get("new")) == "Pending"
            time.sleep(0.2)
        # The kubelet reports the containers stopped: the lock goes to the first waiter.
        stopped = time.monotonic()
        _set_pod_phase(admin_api, ns, "agent-0", "Failed")
        locks.wait_phase("queued", "Held")
        assert time.monotonic() - stopped < 20  # at once, with a loaded machine's margin
        assert status_of(locks.get("mine"))["reason"] == "HolderPodTerminated"
        assert phase_of(locks.get("new")) == "Pending"
    finally:
        op.stop()
        with contextlib.suppress(ApiException):
            CoreV1Api(admin_api).delete_namespace(ns)
