"""Nodes that never come back, through the node lifecycle controller's taints, as in a cluster.

kwok's nodes renew their Leases here (``ControlPlane(node_lifecycle=True)``) and kube-controller-manager
runs the node-lifecycle, taint-eviction and pod garbage collector controllers. A node whose own kwok
is killed (``lose_fake_node``) is a node gone for good: no Lease renewal, no pod status, its pods'
containers gone with it, so their holders renew no more. What is promised
(docs/api.md `podRef`, docs/architecture.md "Pods"):

- a node that stops reporting goes `NotReady` (`Unknown`) and is tainted
  `node.kubernetes.io/unreachable:NoExecute`; a pod with a short `tolerationSeconds` is evicted (its
  deletion begins) and then stays `Terminating`, since no kubelet reports its end. Its grants stay
  until the lease runs out: the waiter is granted one TTL after the holder's last renewal, never
  before;
- a pod with the default tolerations (300 s) is not evicted within its lease; the lease decides alone;
- a Node deleted outright: the pod garbage collector removes its pods (after 40 s) and the claims of
  those pods are revoked (`HolderPodTerminated`) then, before a long lease runs out; a removed pod
  whose claim had already expired takes nothing from the waiter that followed it;
- a lost node tainted `node.kubernetes.io/out-of-service` (its machine known to be off): its pods are
  evicted and removed by the pod garbage collector, and their claims revoked then, as for a deletion;
- a pod being evicted gets nothing new and leaves the queues it waits in (`Rejected`,
  `HolderPodTerminated`).

A watch of every claim checks throughout that no resource ever has two `Held` claims.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from kubelock.testbed import ControlPlane
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.operator import OperatorProcess
from tests.support.planes import own_plane, own_plane_fixtures

# About 2.5 minutes at load 8-13 (plane start included); the bound leaves room for a busier machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PREFIX = "kl-nodegone-"
GROUP, VERSION = "kubelock.dev", "v1alpha1"
POD_LABEL = {"kubelock.dev/lock-holder": "true"}
GRACE = 20  # --node-monitor-grace-period: NotReady this long after the last Lease renewal
TOLERATION = 10  # the evicted pod's tolerationSeconds for the unreachable/not-ready taints
TTL = 60  # the holders' lease: past the grace and the toleration, so the taints come first
RENEW_EVERY = 2.0
SLACK = 30.0  # two shared, loaded cores: a bound is checked with this much to spare
LONG_TTL = 600  # the holders whose pods Kubernetes removes: their lease is not what frees them
UNREACHABLE = "node.kubernetes.io/unreachable"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
POD_GRACE = 5  # terminationGracePeriodSeconds: an evicted pod's grace ends well before its lease


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with own_plane(tmp_path_factory.mktemp("nodegone-plane"), "the test bed's own controller manager and kwok",
                   node_lifecycle=True, node_monitor_grace_seconds=GRACE) as plane:  # fmt: skip
        yield plane


admin, ns, operator = own_plane_fixtures(PREFIX)


class HeldWatch:
    """Every LockClaim event of a namespace, in the API server's order: fails if a resource ever has
    two `Held` claims at once, and keeps when each claim reached each phase."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = CustomObjectsApi(api)
        self._namespace = namespace
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._state: dict[str, tuple[str | None, str]] = {}
        self.reached: dict[tuple[str, str], float] = {}
        self.overlaps: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = False

    def __enter__(self) -> HeldWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped = True
        self._watch.stop()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        version = ""
        while not self._stopped:
            try:
                stream = self._watch.stream(  # type: ignore[no-untyped-call]
                    self._api.list_namespaced_custom_object, GROUP, VERSION, self._namespace, "lockclaims",
                    resource_version=version, timeout_seconds=60,
                )  # fmt: skip
                for event in stream:
                    body = event["object"]
                    version = body["metadata"]["resourceVersion"]
                    self._see(event["type"], body)
            except ApiException as error:
                if error.status == 410:  # expired: start again from a fresh list
                    version = ""
                    continue
                time.sleep(0.5)
            except Exception:  # a dropped connection: the watch resumes from `version`
                time.sleep(0.5)

    def _see(self, kind: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        resource = body["spec"]["resource"]
        phase = None if kind == "DELETED" else phase_of(body)
        self._state[name] = (phase, resource)
        if phase is not None:
            self.reached.setdefault((name, phase), time.monotonic())
        held = sorted(n for n, (p, r) in self._state.items() if p == "Held" and r == resource)
        if len(held) > 1:
            version = body["metadata"]["resourceVersion"]
            self.overlaps.append(f"{resource}: {held} Held at once (resourceVersion {version})")




def _pod(core: CoreV1Api, ns: str, name: str, node: str, toleration: int | None) -> dict[str, str]:
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{"name": "agent", "image": "agent:latest"}],
        "terminationGracePeriodSeconds": POD_GRACE,
    }
    if toleration is not None:
        spec["tolerations"] = [
            {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": toleration}
            for key in (UNREACHABLE, "node.kubernetes.io/not-ready")
        ]
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": POD_LABEL}, "spec": spec})
    wait_until(lambda: core.read_namespaced_pod(name, ns).status.phase == "Running", f"pod {name} Running")
    return {"name": pod.metadata.name, "uid": pod.metadata.uid}


def _unreachable(core: CoreV1Api, node: str) -> bool:
    taints = core.read_node(node).spec.taints or []
    return any(t.key == UNREACHABLE and t.effect == "NoExecute" for t in taints)


def _taints(core: CoreV1Api, node: str) -> list[dict[str, Any]]:
    return [{"key": t.key, "value": t.value, "effect": t.effect} for t in core.read_node(node).spec.taints or []]


def _terminating(core: CoreV1Api, ns: str, pod: str) -> bool:
    return core.read_namespaced_pod(pod, ns).metadata.deletion_timestamp is not None


def _gone(core: CoreV1Api, ns: str, pod: str) -> bool:
    try:
        core.read_namespaced_pod(pod, ns)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _first(done: Callable[[], bool], what: str, timeout: float) -> float:
    """Waits for `done` and returns the monotonic time it was first seen."""
    wait_until(done, what, timeout)
    return time.monotonic()


def test_nodes_that_never_come_back_free_their_locks_as_promised(
    plane: ControlPlane, admin: ApiClient, ns: str, operator: OperatorProcess
) -> None:
    core = CoreV1Api(admin)
    locks = Locks(admin, ns)
    # Nodes stay: with every node of the zone NotReady the controller stops evicting ("master
    # disruption mode"), and with more than 55 % of them (and more than two) it evicts nothing in a
    # cluster this small. Three lost of six (the deleted one no longer counts) is still a healthy zone.
    for name in ("stays", "stays-too", "stays-three", "deleted"):
        plane.create_fake_node(name)
    for name in ("evicted", "tolerant", "shutdown"):  # each with a kwok of its own, to lose
        plane.create_fake_node(name, own_kwok=True)
    pods = {
        "evicted": _pod(core, ns, "on-evicted", "evicted", TOLERATION),
        "tolerant": _pod(core, ns, "on-tolerant", "tolerant", None),  # the default 300 s
        "deleted": _pod(core, ns, "on-deleted", "deleted", None),
        "shutdown": _pod(core, ns, "on-shutdown", "shutdown", None),
    }
    ttl = {"evicted": TTL, "tolerant": TTL, "deleted": LONG_TTL, "shutdown": LONG_TTL}
    with HeldWatch(admin, ns) as held:
        for node, pod in pods.items():
            locks.claim(f"{node}-holder", f"deploy://{node}", pod["name"], pod=(pod["name"], pod["uid"]), ttl=ttl[node])
            locks.wait_phase(f"{node}-holder", "Held")
            locks.claim(f"{node}-next", f"deploy://{node}", f"next-{node}", wait=True)
            locks.wait_phase(f"{node}-next", "Pending")
        # The evicted pod also waits for something someone else holds.
        locks.claim("busy-holder", "deploy://busy", "someone")
        locks.wait_phase("busy-holder", "Held")
        locks.claim("evicted-waits", "deploy://busy", "on-evicted", pod=(pods["evicted"]["name"], None), wait=True)
        locks.wait_phase("evicted-waits", "Pending")
        # The holders renew while their nodes run, then go with them.
        for _ in range(3):
            for node in pods:
                locks.renew(f"{node}-holder")
            time.sleep(RENEW_EVERY)
        last_renewal = {}
        for node in pods:
            locks.renew(f"{node}-holder")
            last_renewal[node] = time.monotonic()  # the operator sees the renewal after this, never before
        plane.lose_fake_node("evicted")  # its kwok killed: no Lease, no pod status from now on
        plane.lose_fake_node("tolerant")
        plane.lose_fake_node("shutdown")
        core.delete_node("deleted")
        gone_at = time.monotonic()

        # A node lost: NotReady after the grace, tainted, its pod evicted after its toleration and then
        # left Terminating; its claim keeps the lock while the lease lasts.
        tainted = _first(lambda: _unreachable(core, "evicted"), "node evicted tainted", GRACE + SLACK + 60)
        evicted = _first(lambda: _terminating(core, ns, "on-evicted"), "on-evicted evicted", TOLERATION + SLACK + 60)
        assert evicted - tainted >= TOLERATION - 1
        # Its grace ends (deletionTimestamp) and nobody reports the containers' end: the lease decides.
        grace_end = core.read_namespaced_pod("on-evicted", ns).metadata.deletion_timestamp.timestamp()
        time.sleep(max(0.0, grace_end + 2 - time.time()))
        if time.monotonic() - last_renewal["evicted"] < TTL - 5:  # the lease still runs (a slow machine may be past it)
            checked_past_grace = True
            assert phase_of(locks.get("evicted-holder")) == "Held"
            assert phase_of(locks.get("evicted-next")) == "Pending"
            # The evicted pod gets nothing new: it is stopping.
            locks.claim("evicted-again", "deploy://other", "on-evicted", pod=(pods["evicted"]["name"], None), wait=True)
            again = status_of(locks.wait_phase("evicted-again", "Rejected"))
            assert again["reason"] == "HolderPodTerminated" and "terminating" in again["message"], again
        else:
            checked_past_grace = False
        # Nor does it keep its place in a queue.
        waited = status_of(locks.wait_phase("evicted-waits", "Rejected"))
        assert waited["reason"] == "HolderPodTerminated" and "terminating" in waited["message"], waited
        # The controller taints one lost node at a time (--node-eviction-rate 0.1: one each 10 s).
        wait_until(lambda: _unreachable(core, "tolerant"), "node tolerant tainted", GRACE + SLACK + 60)

        # A lost node declared out of service (its machine known to be off): its pods are evicted at
        # once and the pod garbage collector removes them, which revokes their claims.
        wait_until(lambda: _unreachable(core, "shutdown"), "node shutdown tainted unreachable", GRACE + SLACK + 60)
        out_of_service = {"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}
        core.patch_node("shutdown", {"spec": {"taints": [*_taints(core, "shutdown"), out_of_service]}})
        declared = time.monotonic()

        # A node deleted: the pod garbage collector removes its pod (40 s after), which revokes at once.
        for node, since in (("deleted", gone_at), ("shutdown", declared)):
            revoked = status_of(locks.wait_phase(f"{node}-holder", "Revoked", timeout=60 + SLACK))
            assert revoked["reason"] == "HolderPodTerminated", revoked
            locks.wait_phase(f"{node}-next", "Held")
            assert _gone(core, ns, f"on-{node}")
            assert held.reached[(f"{node}-next", "Held")] - held.reached[(f"{node}-holder", "Revoked")] < SLACK
            assert held.reached[(f"{node}-next", "Held")] - since < LONG_TTL / 2

        # Both lost nodes' locks go at the lease's end, not before, whatever the taints did.
        for node in ("evicted", "tolerant"):
            locks.wait_phase(f"{node}-next", "Held", timeout=TTL + SLACK)
            granted = held.reached[(f"{node}-next", "Held")]
            assert granted - last_renewal[node] >= TTL - 1, (node, granted - last_renewal[node])
            assert granted - last_renewal[node] < TTL + SLACK, (node, granted - last_renewal[node])
            assert status_of(locks.get(f"{node}-holder"))["reason"] == "LeaseExpired"
        assert _terminating(core, ns, "on-evicted")  # still: nobody reports its end
        assert not _terminating(core, ns, "on-tolerant")  # 300 s of toleration: not yet evicted

        # The lost node deleted at last: its Terminating pod is removed; the waiter that followed keeps
        # its grant and its token.
        token = status_of(locks.get("evicted-next"))["fencingToken"]
        core.delete_node("evicted")
        wait_until(lambda: _gone(core, ns, "on-evicted"), "pod on-evicted removed", 40 + SLACK + 60)
        time.sleep(3)  # the operator's look at the removal
        after = locks.get("evicted-next")
        assert phase_of(after) == "Held" and status_of(after)["fencingToken"] == token, after
        assert phase_of(locks.get("evicted-holder")) == "Expired"

    assert held.overlaps == []
    print(
        "timeline (s after the last renewal): "
        f"evicted: tainted {tainted - last_renewal['evicted']:.1f}, evicted {evicted - last_renewal['evicted']:.1f}, "
        f"next Held {held.reached[('evicted-next', 'Held')] - last_renewal['evicted']:.1f}; "
        f"tolerant: next Held {held.reached[('tolerant-next', 'Held')] - last_renewal['tolerant']:.1f}; "
        f"deleted (from the delete): next Held {held.reached[('deleted-next', 'Held')] - gone_at:.1f}; "
        f"shutdown: out-of-service {declared - last_renewal['shutdown']:.1f} after the last renewal, "
        f"next Held {held.reached[('shutdown-next', 'Held')] - declared:.1f} after it; "
        f"the evicted holder seen Held past its grace: {checked_past_grace}"
    )
    for node in ("tolerant", "shutdown"):
        with contextlib.suppress(ApiException):
            core.delete_node(node)
