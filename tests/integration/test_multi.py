"""Claims of several resources (`spec.resources`) against the real control plane: all or nothing,
never Held with part of the set, FIFO with overlapping sets, every end ends the whole claim, two
operators at once, an operator stopped in the middle of a grant, and bad input."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from kubelock.api.fencing import grant_tokens
from kubelock.domain.resource import lock_name, normalise
from tests.support.claims import GROUP, VERSION, Locks, phase_of, status_of, wait_until
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klmr-"
Body = dict[str, Any]


@pytest.fixture(scope="module")
def multi_operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",)) as op:
        yield op


@pytest.fixture
def ns(admin_api: ApiClient, multi_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        yield name


@pytest.fixture
def locks(admin_api: ApiClient, ns: str) -> Locks:
    return Locks(admin_api, ns)


def claim_all(locks: Locks, name: str, resources: list[str], holder: str, **spec: object) -> Body:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name},
        "spec": {"resources": resources, "holder": holder, **spec},
    }
    return dict(locks.api.create_namespaced_custom_object(GROUP, VERSION, locks.namespace, "lockclaims", body))


def held_grants(body: Body) -> dict[str, int]:
    return {g["resource"]: g["fencingToken"] for g in status_of(body).get("grants") or []}


class SetMonitor:
    """Watches claims and locks of a namespace; replays both in revision order (the API server's one
    order of writes) and checks, at every Held of a claim, that every grant its status lists is in its
    lock at that revision, and that the claims Held on a resource may hold it together."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = CustomObjectsApi(api)
        self._namespace = namespace
        self._events: list[tuple[int, str, str, Body]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(p,), daemon=True)
                         for p in ("lockclaims", "resourcelocks")]
        self._watches: list[watch.Watch] = []

    def __enter__(self) -> SetMonitor:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()
        for t in self._threads:
            t.join(10)

    def _run(self, plural: str) -> None:
        w = watch.Watch()
        self._watches.append(w)
        version = ""
        while not self._stop.is_set():
            try:
                for event in w.stream(self._api.list_namespaced_custom_object, GROUP, VERSION, self._namespace,
                                      plural, resource_version=version or None, timeout_seconds=30):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self._events.append((int(version), plural, event["type"], obj))
            except Exception:
                if self._stop.is_set():
                    return

    def deletions_seen(self) -> int:
        """How many claims the claim watch has shown deleted."""
        return sum(1 for _, plural, kind, _ in list(self._events) if plural == "lockclaims" and kind == "DELETED")

    def violations(self) -> tuple[list[str], int]:
        """Violations, and how many Held claims of several resources were checked."""
        out: list[str] = []
        locks: dict[str, dict[str, int]] = {}  # resource -> claim uid -> token
        held: dict[str, dict[str, str]] = defaultdict(dict)  # resource -> claim name -> mode
        checked = 0
        for _, plural, kind, obj in sorted(self._events, key=lambda e: (e[0], e[1] != "resourcelocks")):
            if plural == "resourcelocks":
                resource = normalise(obj["spec"]["resource"])
                locks[resource] = {} if kind == "DELETED" else grant_tokens(obj)
                continue
            spec, status, name = obj["spec"], obj.get("status") or {}, obj["metadata"]["name"]
            resources = [normalise(r) for r in spec.get("resources") or [spec["resource"]]]
            holding = kind != "DELETED" and status.get("phase") == "Held"
            for resource in resources:
                if holding and name not in held[resource]:
                    held[resource][name] = spec.get("mode", "Exclusive")
                    modes = set(held[resource].values())
                    if len(held[resource]) > 1 and modes != {"Shared"}:
                        out.append(f"{resource} held by {sorted(held[resource])} at once")
                elif not holding:
                    held[resource].pop(name, None)
            if holding and spec.get("resources") and status.get("reason") == "Granted":
                grants = held_grants(obj)
                if sorted(grants) != sorted(resources):
                    out.append(f"{name} Held listing {sorted(grants)} of {sorted(resources)}")
                uid = obj["metadata"]["uid"]
                for resource, token in grants.items():
                    if locks.get(resource, {}).get(uid) != token:
                        out.append(f"{name} Held at {obj['metadata']['resourceVersion']} without its grant on "
                                   f"{resource} (lock: {locks.get(resource)})")
                checked += 1
        return out, checked


# ---- all or nothing ----------------------------------------------------------------------------


def test_granted_all_at_once_with_one_token_per_resource(locks: Locks) -> None:
    a, b = "github://acme/app/issues/1", "git://acme/app/branch/fix-1"
    claim_all(locks, "both", [b, a], "agent-a")
    status = status_of(locks.wait_phase("both", "Held"))
    assert [g["resource"] for g in status["grants"]] == sorted([a, b])
    assert status.get("lockName") is None and status.get("fencingToken") is None
    for g in status["grants"]:
        lock = locks.lock(lock_name(g["resource"]))
        assert g["lockName"] == lock_name(g["resource"])
        assert grant_tokens(lock)[locks.get("both")["metadata"]["uid"]] == g["fencingToken"]
        assert (g["mode"], g["permits"]) == ("Exclusive", 1)
    locks.delete("both")
    wait_until(lambda: not locks.locks(), "both grants to be released")


def test_kubectl_get_wide_lists_the_resources_of_a_claim_of_several(
    locks: Locks, control_plane  # type: ignore[no-untyped-def]
) -> None:
    a, b = "github://acme/app/issues/2", "git://acme/app/branch/fix-2"
    claim_all(locks, "both", [a, b], "agent-a")
    locks.wait_phase("both", "Held")
    kubectl = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig)]
    table = subprocess.run([*kubectl, "-n", locks.namespace, "get", "lc", "both", "-o", "wide"],
                           check=True, capture_output=True, text=True).stdout.splitlines()
    header, row = table[0].split(), table[1]
    assert header[-1] == "RESOURCES", header
    assert a in row and b in row, row


def test_waits_holding_nothing_and_is_granted_when_the_last_one_is_free(locks: Locks) -> None:
    a, b = "deploy://a", "deploy://b"
    locks.claim("ha", a, "agent-x")
    locks.wait_phase("ha", "Held")
    claim_all(locks, "m", [a, b], "agent-m", wait=True)
    status = status_of(locks.wait_phase("m", "Pending"))
    assert a in status["message"] and "agent-x" in status["message"], status
    assert [lk["spec"]["resource"] for lk in locks.locks()] == [a]  # nothing held on b meanwhile
    # b is free, but promised to m, queued ahead of anyone who comes now: a try-lock is turned away.
    locks.claim("tb", b, "agent-t")
    refused = status_of(locks.wait_phase("tb", "Rejected"))
    assert "agent-m" in refused["message"], refused
    locks.delete("ha")
    assert set(held_grants(locks.wait_phase("m", "Held"))) == {a, b}


def test_try_lock_of_several_is_refused_when_one_is_taken_and_takes_nothing(locks: Locks) -> None:
    a, b = "deploy://c", "deploy://d"
    locks.claim("hb", b, "agent-x")
    locks.wait_phase("hb", "Held")
    claim_all(locks, "m", [a, b], "agent-m")
    status = status_of(locks.wait_phase("m", "Rejected"))
    assert status["reason"] == "HeldByAnotherHolder" and "held by agent-x" in status["message"], status
    time.sleep(0.5)
    assert [lk["spec"]["resource"] for lk in locks.locks()] == [b]


def test_fifo_with_overlapping_sets_and_unrelated_waiters_not_held_back(locks: Locks) -> None:
    """m1 {a,b} holds; m2 {b,c} waits for b; a single waiter on c queued after m2 waits too (FIFO: c
    is promised to m2), while a waiter on d, which no claim ahead of it asks for, is granted at once."""
    a, b, c, d = "q://a", "q://b", "q://c", "q://d"
    claim_all(locks, "m1", [a, b], "agent-1")
    locks.wait_phase("m1", "Held")
    claim_all(locks, "m2", [b, c], "agent-2", wait=True)
    locks.wait_phase("m2", "Pending")
    locks.claim("sc", c, "agent-3", wait=True)
    assert "reserved for the claim of agent-2" in status_of(locks.wait_phase("sc", "Pending"))["message"]
    locks.claim("sd", d, "agent-4", wait=True)
    locks.wait_phase("sd", "Held")
    claim_all(locks, "m3", [a, d], "agent-5", wait=True)  # behind m1 on a, behind sd on d
    locks.wait_phase("m3", "Pending")
    locks.delete("m1")
    assert set(held_grants(locks.wait_phase("m2", "Held"))) == {b, c}
    assert phase_of(locks.get("sc")) == "Pending" and phase_of(locks.get("m3")) == "Pending"
    locks.delete("sd")
    assert set(held_grants(locks.wait_phase("m3", "Held"))) == {a, d}
    locks.delete("m2")
    locks.wait_phase("sc", "Held")


# ---- every end ends the whole claim ------------------------------------------------------------


def test_release_expiry_and_break_of_one_resource_end_the_whole_claim(locks: Locks) -> None:
    a, b = "end://a", "end://b"
    claim_all(locks, "exp", [a, b], "agent-e", ttlSeconds=3)
    status = status_of(locks.wait_phase("exp", "Expired", timeout=60))  # a lease ends only once granted
    assert status["reason"] == "LeaseExpired" and not status.get("grants"), status
    wait_until(lambda: not locks.locks(), "the expired claim's grants to go")

    claim_all(locks, "brk", [a, b], "agent-b")
    locks.wait_phase("brk", "Held")
    locks.delete_lock(lock_name(a))  # an administrator breaks one of the two
    status = status_of(locks.wait_phase("brk", "Revoked"))
    assert status["reason"] == "LockBroken" and f"other grants ({b}) are released" in status["message"], status
    wait_until(lambda: not locks.locks(), "the other grant to be released")

    claim_all(locks, "rel", [a, b], "agent-r")
    locks.wait_phase("rel", "Held")
    locks.delete("rel")
    wait_until(lambda: not locks.locks(), "every grant to be released")


def test_a_waiter_of_several_is_granted_as_soon_as_the_claim_of_several_ahead_expires(locks: Locks) -> None:
    """m1 {a, b, c} (a 3 s lease, never renewed) and m2 {a, b, c} queue behind the holder of a, which
    releases: m1 is granted, expires, and m2 must be granted then, not at its own wait timeout. The
    operator's own deletions of m1's grants are no news to its cache when their events arrive, so m2
    is decided again only if m1's reconcile wakes it; six sets at once, as a lost wake-up depended on
    which of a deletion's response and its event came first."""
    sets = [[f"exp{i}://a", f"exp{i}://b", f"exp{i}://c"] for i in range(6)]
    for i, resources in enumerate(sets):
        locks.claim(f"h{i}", resources[0], f"agent-h{i}")
    locks.wait_phases([f"h{i}" for i in range(len(sets))], "Held")
    for i, resources in enumerate(sets):
        claim_all(locks, f"m1-{i}", resources, f"agent-m1-{i}", wait=True, ttlSeconds=3)
        claim_all(locks, f"m2-{i}", resources, f"agent-m2-{i}", wait=True, waitTimeoutSeconds=180)
    locks.wait_phases([f"m2-{i}" for i in range(len(sets))], "Pending")
    for i in range(len(sets)):
        locks.delete(f"h{i}")
    locks.wait_phases([f"m1-{i}" for i in range(len(sets))], "Expired", timeout=60)
    # Within 40 s of every expiry (a loaded machine), far below the 180 s wait timeout (a lost wake-up
    # would leave m2 Pending until then) and below the operator's 60 s resync.
    held = locks.wait_phases([f"m2-{i}" for i in range(len(sets))], "Held", timeout=40)
    assert all(set(held_grants(body)) == set(resources) for body, resources in zip(held, sets, strict=True))


def test_renewing_the_claim_renews_every_grant(locks: Locks) -> None:
    a, b = "renew://a", "renew://b"
    claim_all(locks, "m", [a, b], "agent-r", ttlSeconds=10)
    # The beats are timed from the grant (acquiredAt, this machine's clock), not from when this test saw
    # it: a loaded machine can show the claim Held seconds after its lease began.
    acquired = datetime.fromisoformat(status_of(locks.wait_phase("m", "Held"))["acquiredAt"].replace("Z", "+00:00"))
    for i in range(4):
        # A beat every 3 s, well inside the lease, also when a renewal takes seconds to land.
        time.sleep(max(0.0, acquired.timestamp() + 3 * (i + 1) - time.time()))
        locks.renew("m", f"beat-{i}")
    assert phase_of(locks.get("m")) == "Held"  # 12 s > its 10 s lease: the renewals kept it

    def renewed_together() -> bool:
        """Both grants carry the last renewal: the operator writes one lock after the other, so a read
        right after a beat may find one of them a beat behind."""
        grants = locks.locks()
        return len(grants) == 2 and len({lk["spec"]["expireTime"] for lk in grants}) == 1

    wait_until(renewed_together, "both grants renewed to the same expiry", timeout=60)


def test_wait_timeout_and_deadlock_victim(locks: Locks) -> None:
    a, b, c = "dl://a", "dl://b", "dl://c"
    locks.claim("xa", a, "agent-x")
    locks.wait_phase("xa", "Held")
    claim_all(locks, "t", [a, b], "agent-t", wait=True, waitTimeoutSeconds=2)
    assert status_of(locks.wait_phase("t", "TimedOut", timeout=60))["reason"] == "WaitTimedOut"
    # agent-x holds a and, with a claim of several, waits for b and c; agent-y holds c and waits for a.
    locks.claim("yc", c, "agent-y")
    locks.wait_phase("yc", "Held")
    locks.claim("ya", a, "agent-y", wait=True)
    locks.wait_phase("ya", "Pending")
    claim_all(locks, "xbc", [b, c], "agent-x", wait=True)
    status = status_of(locks.wait_phase("xbc", "Deadlocked"))
    assert status["cycle"][0] == status["cycle"][-1] == "agent-x", status
    assert not any(lk["spec"]["resource"] == b for lk in locks.locks())


def test_on_busy_requeue_puts_a_claim_of_several_back_at_the_end_of_its_queues(
    locks: Locks, admin_api: ApiClient
) -> None:
    a, b = "rq://a", "rq://b"
    locks.claim("xa", a, "agent-x")
    locks.wait_phase("xa", "Held")
    claim_all(locks, "patient", [a, b], "agent-p", wait=True, waitTimeoutSeconds=2, onBusy="Requeue")
    locks.wait_phase("patient", "Pending")
    locks.claim("other", a, "agent-o", wait=True)  # arrives after it: served before it once it requeued
    other = status_of(locks.wait_phase("other", "Pending"))["sequence"]
    claim_all(locks, "quitter", [a, b], "agent-q", wait=True, waitTimeoutSeconds=2)
    # Requeued behind `other`. A loaded machine may take longer than the 2 s wait to create `other`:
    # then a first requeue comes before it, and a later one (it goes on) puts `patient` behind it.
    requeued = locks.wait_for(
        "patient", lambda c: (status_of(c).get("requeues") or 0) >= 1 and status_of(c).get("sequence", 0) > other,
        timeout=60, what="requeued behind other",
    )
    assert phase_of(requeued) == "Pending", requeued
    assert status_of(locks.wait_phase("quitter", "TimedOut", timeout=60))["reason"] == "WaitTimedOut"

    def requeued_event() -> bool:
        events = CoreV1Api(admin_api).list_namespaced_event(locks.namespace).items
        return any(e.reason == "Requeued" and "back at the end of the queue (onBusy: Requeue" in e.message
                   and e.involved_object.name == "patient" for e in events)

    wait_until(requeued_event, "a Requeued Event on patient", timeout=60)
    locks.delete("xa")
    locks.wait_phase("other", "Held")
    assert phase_of(locks.get("patient")) == "Pending"  # behind the claim that arrived after it
    locks.delete("other")
    assert set(held_grants(locks.wait_phase("patient", "Held", timeout=60))) == {a, b}


# ---- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_refused(locks: Locks) -> None:
    claim_all(locks, "same", ["github://acme/a", "GITHUB://acme/a/"], "agent-a")
    status = status_of(locks.wait_phase("same", "Rejected"))
    assert status["reason"] == "InvalidSpec" and "github://acme/a more than once" in status["message"], status
    claim_all(locks, "big", ["sem://a", "sem://b"], "agent-a", permits=2)  # no policy: capacity 1
    status = status_of(locks.wait_phase("big", "Rejected"))
    assert status["reason"] == "InvalidSpec" and "permits 2 exceed the capacity" in status["message"], status


# ---- replicas and restarts ---------------------------------------------------------------------


def test_two_operators_under_a_burst_of_overlapping_claims_of_several(
    control_plane, admin_api: ApiClient, iso_ns: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    first = OperatorProcess(control_plane.kubeconfig, tmp_path / "a.log", namespaces=(iso_ns,)).start()
    second = OperatorProcess(control_plane.kubeconfig, tmp_path / "b.log", namespaces=(iso_ns,)).start()
    resources = [f"burst://r{i}" for i in range(6)]
    try:
        with SetMonitor(admin_api, iso_ns) as monitor:
            names = []
            for i in range(30):
                picked = [resources[(i + k * (1 + i % 3)) % 6] for k in range(2 + i % 2)]
                picked = sorted(set(picked))
                name = f"m{i:02d}"
                if len(picked) > 1:
                    claim_all(locks, name, picked, f"agent-{i}", wait=True)
                else:
                    locks.claim(name, picked[0], f"agent-{i}", wait=True)
                names.append(name)
                if i % 3 == 2:
                    locks.claim(f"s{i:02d}", resources[i % 6], f"single-{i}", wait=True)
                    names.append(f"s{i:02d}")
            remaining = set(names)
            deadline = time.monotonic() + 240
            while remaining and time.monotonic() < deadline:
                for claim in locks.claims():
                    name = claim["metadata"]["name"]
                    assert phase_of(claim) in (None, "Pending", "Held"), claim
                    if phase_of(claim) == "Held" and name in remaining:
                        remaining.discard(name)
                        locks.delete(name)
                time.sleep(0.1)
            assert not remaining, sorted(remaining)
            wait_until(lambda: not locks.locks(), "every lock to be gone")
            # The watch (another connection) may lag behind what the LISTs above showed: judge the
            # history only once it has shown every claim's end.
            wait_until(lambda: monitor.deletions_seen() >= len(names), "the watch to show every claim deleted",
                       timeout=60)
        violations, checked = monitor.violations()
        assert not violations, violations[:5]
        assert checked >= 20, checked
    finally:
        first.stop()
        second.stop()


def test_an_operator_stopped_between_two_grant_writes_leaves_a_consistent_state(
    control_plane, admin_api: ApiClient, iso_ns: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """The state an operator leaves when it stops after writing one grant of a claim of several and
    before the next: a lock with that grant, the claim Pending. A new operator completes the grant:
    the grant already stored is kept (same token), the rest is written, then the claim is told Held."""
    locks = Locks(admin_api, iso_ns)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "a.log", namespaces=(iso_ns,)).start()
    b, c = "half://b", "half://c"
    try:
        claim_all(locks, "back", [b, c], "agent-k", wait=True)
        kept = held_grants(locks.wait_phase("back", "Held"))[b]
        op.stop()
        # Rewind to the moment between two writes: "back" Pending with only its grant on b stored.
        locks.delete_lock(lock_name(c))
        status = {**status_of(locks.get("back")), "phase": "Pending", "reason": "Queued", "grants": None}
        locks.api.patch_namespaced_custom_object_status(GROUP, VERSION, iso_ns, "lockclaims", "back",
                                                        {"status": status})
        op = OperatorProcess(control_plane.kubeconfig, tmp_path / "b.log", namespaces=(iso_ns,)).start()
        grants = held_grants(locks.wait_phase("back", "Held"))
        assert set(grants) == {b, c} and grants[b] == kept and grants[c] > kept, grants
    finally:
        op.stop()
