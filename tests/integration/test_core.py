"""Core locking against the real control plane: grants, try-lock, FIFO waiting, leases, fencing,
admin break, restart safety and two operators at once."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from kubelock.api.fencing import lock_token
from kubelock.domain.queueposition import out_of_band
from kubelock.domain.resource import lock_name
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.monitor import HolderMonitor, LockMonitor, StatusLog
from tests.support.namespaces import new_namespace, temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klc-"


@pytest.fixture(scope="module")
def core_operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    """One operator for this module, watching only its namespaces (klc-*)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",)) as op:
        yield op




@pytest.fixture
def ns(admin_api: ApiClient, core_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        yield name


@pytest.fixture
def locks(admin_api: ApiClient, ns: str) -> Locks:
    return Locks(admin_api, ns)


def _events(admin_api: ApiClient, ns: str, name: str) -> list[tuple[str, str, str]]:
    items = CoreV1Api(admin_api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.type, e.message) for e in items]


def _wait_events(
    admin_api: ApiClient, ns: str, name: str, reason: str, timeout: float = 60
) -> list[tuple[str, str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(admin_api, ns, name)
        if any(r == reason for r, _, _ in events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"no {reason} event for {name}: {_events(admin_api, ns, name)}")


# ---- grants and try-lock -----------------------------------------------------------------------


def test_free_resource_is_granted_with_lease_token_and_lock(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    locks.claim("a", "github://acme/app/issues/42", "agent-a", ttl=600)
    claim = locks.wait_phase("a", "Held")
    status = status_of(claim)
    assert status["holder"] == "agent-a"
    assert status["lockName"] == lock_name("github://acme/app/issues/42")
    assert status["reason"] == "Granted"
    assert isinstance(status["fencingToken"], int) and status["fencingToken"] > 0
    assert status["acquiredAt"] and status["renewedAt"] and status["expiresAt"]
    assert status["observedGeneration"] == claim["metadata"]["generation"]
    held = next(c for c in status["conditions"] if c["type"] == "Held")
    assert held["status"] == "True" and held["reason"] == "Granted"
    lock = locks.lock(status["lockName"])
    assert lock["spec"]["holder"] == "agent-a"
    assert lock_token(lock) == status["fencingToken"]
    assert lock["spec"]["claimRef"] == {"name": "a", "uid": claim["metadata"]["uid"]}
    assert lock["spec"]["leaseDurationSeconds"] == 600
    # No finalizers anywhere, so nothing can block namespace deletion.
    assert not claim["metadata"].get("finalizers") and not lock["metadata"].get("finalizers")
    # kopf writes nothing of its own onto the objects.
    assert not any(k.startswith("kopf.") for k in (claim["metadata"].get("annotations") or {}))
    _wait_events(admin_api, ns, "a", "Granted")


def test_try_lock_conflict_is_rejected_naming_the_holder(locks: Locks) -> None:
    locks.claim("a", "deploy://api-prod", "agent-a")
    locks.wait_phase("a", "Held")
    locks.claim("b", "deploy://api-prod", "agent-b")
    rejected = status_of(locks.wait_phase("b", "Rejected"))
    assert rejected["holder"] == "agent-a"
    assert rejected["reason"] == "HeldByAnotherHolder"
    assert "held by agent-a" in rejected["message"]
    assert not rejected.get("lockName") and rejected.get("fencingToken") is None
    # A rejected try-lock is a record only: releasing the holder does not grant it later.
    locks.delete("a")
    time.sleep(1)
    assert phase_of(locks.get("b")) == "Rejected"


def test_normalised_resources_conflict(locks: Locks) -> None:
    locks.claim("a", "github://a/b", "agent-a")
    locks.wait_phase("a", "Held")
    locks.claim("b", "GITHUB://a/b/", "agent-b")
    assert status_of(locks.wait_phase("b", "Rejected"))["holder"] == "agent-a"
    locks.claim("c", "github://a/B", "agent-c")  # the path stays case-sensitive: another resource
    locks.wait_phase("c", "Held")


def test_printer_columns(locks: Locks, control_plane, ns: str) -> None:  # type: ignore[no-untyped-def]
    locks.claim("a", "deploy://api-prod", "agent-a", ttl=600)
    locks.wait_phase("a", "Held")
    kubectl = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig), "-n", ns]
    lc = subprocess.run([*kubectl, "get", "lc"], check=True, capture_output=True, text=True).stdout
    assert lc.split("\n")[0].split() == ["NAME", "RESOURCE", "HOLDER", "PHASE", "POSITION", "EXPIRES", "AGE"]
    assert "deploy://api-prod" in lc and "Held" in lc
    rl = subprocess.run([*kubectl, "get", "rl"], check=True, capture_output=True, text=True).stdout
    assert rl.split("\n")[0].split() == ["NAME", "RESOURCE", "HOLDER", "MODE", "HOLDERS", "TOKEN", "EXPIRES", "AGE"]
    assert rl.split("\n")[1].split()[3:5] == ["Exclusive", "1"]
    both = subprocess.run([*kubectl, "get", "locks"], check=True, capture_output=True, text=True).stdout
    assert "lockclaim.kubelock.dev/a" in both and "resourcelock.kubelock.dev/" in both



@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).parents[2] / "examples").glob("*.yaml")))
def test_every_example_passes_admission(control_plane, ns: str, example: str) -> None:  # type: ignore[no-untyped-def]
    """What the README tells newcomers to apply is accepted as it is (schema, rules, admission policies)."""
    path = Path(__file__).parents[2] / "examples" / example
    kubectl = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig), "-n", ns]
    applied = subprocess.run([*kubectl, "apply", "--dry-run=server", "-f", str(path)], capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert "(server dry run)" in applied.stdout, applied.stdout

# ---- waiting ------------------------------------------------------------------------------------


def test_ten_waiters_are_granted_first_come_first_served(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    locks.claim("holder", "github://acme/app/pr/17", "agent-0")
    locks.wait_phase("holder", "Held")
    names = [f"w{i}" for i in range(10)]
    with StatusLog(admin_api, ns) as statuses:
        for i, name in enumerate(names):
            locks.claim(name, "github://acme/app/pr/17", f"agent-{i + 1}", wait=True)
        for position, name in enumerate(names, start=1):
            locks.wait_for(name, lambda b, p=position: status_of(b).get("queuePosition") == p,
                           what=f"position {position}")
            assert status_of(locks.get(name))["holder"] == "agent-0"
        current = "holder"
        for i, name in enumerate(names):
            locks.delete(current)
            locks.wait_phase(name, "Held")
            # The next waiter is told it is first, and whom it waits for; those behind it have a
            # position within a factor of two of their place (docs/api.md, `queuePosition`).
            for later, other in enumerate(names[i + 1 :], start=1):
                locks.wait_for(other, lambda b, p=later: not out_of_band(status_of(b).get("queuePosition"), p),
                               what=f"position near {later}")
                assert phase_of(locks.get(other)) == "Pending"
            if i + 1 < len(names):
                first = locks.wait_for(names[i + 1], lambda b: status_of(b).get("queuePosition") == 1, what="first")
                assert status_of(first)["holder"] == f"agent-{i + 1}"
            current = name
        locks.wait_phase(names[-1], "Held")
    # The last waiter moved from 10 to 1 through nine grants: rewritten at 5, 2 and 1, not nine times.
    moves = [position for phase, position in statuses.of(names[-1]) if phase == "Pending"]
    assert sorted(set(moves), reverse=True) == [10, 5, 2, 1], moves


def test_wait_timeout_ends_a_waiter(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    locks.claim("a", "deploy://db", "agent-a")
    locks.wait_phase("a", "Held")
    # Timed from the request, not from seeing Pending: a loaded machine may show the claim only
    # after its 2 s are over. 2 s, and 10 s for a machine ten times slower than an idle one.
    asked = time.monotonic()
    locks.claim("b", "deploy://db", "agent-b", wait=True, wait_timeout=2)
    timed_out = status_of(locks.wait_phase("b", "TimedOut"))
    assert time.monotonic() - asked < 2 + 10
    assert timed_out["reason"] == "WaitTimedOut"
    assert timed_out.get("queuePosition") is None
    _wait_events(admin_api, ns, "b", "WaitTimedOut")
    locks.delete("a")
    time.sleep(1)
    assert phase_of(locks.get("b")) == "TimedOut"


def test_release_grants_the_next_waiter(locks: Locks) -> None:
    locks.claim("a", "deploy://cache", "agent-a")
    first = status_of(locks.wait_phase("a", "Held"))
    locks.claim("b", "deploy://cache", "agent-b", wait=True)
    locks.wait_phase("b", "Pending")
    locks.delete("a")
    second = status_of(locks.wait_phase("b", "Held", timeout=10))
    assert second["fencingToken"] > first["fencingToken"]
    assert locks.lock(second["lockName"])["spec"]["claimRef"]["name"] == "b"


# ---- leases -------------------------------------------------------------------------------------


def test_lease_expires_without_renewal(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    locks.claim("a", "deploy://short", "agent-a", ttl=2)
    # Held or already Expired: a loaded machine may look only after the 2 s lease is over.
    locks.wait_for("a", lambda b: phase_of(b) in ("Held", "Expired"), what="Held or Expired")
    lock = lock_name("deploy://short")
    expired = status_of(locks.wait_phase("a", "Expired"))
    assert expired["reason"] == "LeaseExpired"
    assert not expired.get("lockName")
    # The status is written first (so the holder learns at once), the lock is deleted right after:
    # within 25 s on a loaded machine, before the 30 s for which a deletion may be held back.
    deadline = time.monotonic() + 25
    while True:
        try:
            locks.lock(lock)
        except ApiException as gone:
            assert gone.status == 404
            break
        assert time.monotonic() < deadline, f"lock {lock} still exists 25 s after its claim expired"
        time.sleep(0.05)
    _wait_events(admin_api, ns, "a", "LeaseExpired")
    # Renewing an expired claim changes nothing.
    locks.renew("a")
    time.sleep(1)
    assert phase_of(locks.get("a")) == "Expired"


def test_a_burst_of_expiries_sends_warnings_one_by_one_then_summarised_and_accounts_for_each(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """40 leases ending together: 25 Warnings one by one (and one a second after that), the rest in
    summaries that name how many claims they cover; no claim's Warning is lost, and fewer writes."""
    count = 40
    for i in range(count):
        locks.claim(f"e{i}", f"deploy://burst/{i}", f"agent-{i}", ttl=2)
    for i in range(count):
        locks.wait_phase(f"e{i}", "Expired", timeout=30)

    def covered() -> tuple[int, list[str]]:
        events = CoreV1Api(admin_api).list_namespaced_event(ns).items
        expired = [e for e in events if e.reason == "LeaseExpired" and e.type == "Warning"]
        summaries = [e.message for e in expired if "more claims: LeaseExpired" in e.message]
        return len(expired) - len(summaries) + sum(int(m.split()[0]) for m in summaries), summaries

    wait_until(lambda: covered()[0] == count, "every expiry's Warning sent or summarised", 15)
    _, summaries = covered()
    one_by_one = count - sum(int(m.split()[0]) for m in summaries)
    assert summaries, "a burst past 25 Warnings is summarised"
    assert 25 <= one_by_one < count, one_by_one


def test_a_waiter_arriving_while_expiries_are_due_is_granted_at_once_and_every_expired_lock_goes(
    locks: Locks,
) -> None:
    """Leases ending one after another: the deletion of an expired lock nobody waits for is held
    back while other expiries are due, but a claim arriving on its resource meanwhile is granted at
    once (not after the hold-back's 30 s), with a greater token; and every other lock goes after."""
    count = 60
    # The first one Held before the rest are asked for: under load 60 creates take longer than a
    # lease of 2 s, and its Held would be gone before it was looked at.
    with locks.history() as seen:  # Held for 4 s only: a poll held up longer would find it Expired
        locks.claim("s0", "deploy://storm/0", "agent-0", ttl=4)
        first = status_of(seen.wait_phase("s0", "Held"))
    for i in range(1, count):
        locks.claim(f"s{i}", f"deploy://storm/{i}", f"agent-{i}", ttl=2)
    locks.wait_phase("s0", "Expired")
    asked = time.monotonic()
    locks.claim("next", "deploy://storm/0", "agent-next", wait=True)
    second = status_of(locks.wait_phase("next", "Held"))
    # At once is well under the hold-back's 30 s; 20 s leaves a loaded machine its margin.
    assert time.monotonic() - asked < 20
    assert second["fencingToken"] > first["fencingToken"]
    locks.wait_phases([f"s{i}" for i in range(count)], "Expired", timeout=30)
    wait_until(lambda: [lk["spec"]["claimRef"]["name"] for lk in locks.locks()] == ["next"],
               "every expired lock deleted, the new holder's kept", 30)


def test_an_uncontended_grant_is_the_locks_creation_and_the_lock_is_never_written_again(
    locks: Locks, admin_api: ApiClient, ns: str
) -> None:
    """The floor of a cycle: the lock is created and deleted, nothing in between. Its token is the
    revision of its creation, which the holder is told; no write copies it into the lock."""
    with LockMonitor(admin_api, ns) as monitor:
        locks.claim("a", "deploy://floor", "agent-a", ttl=600)
        status = status_of(locks.wait_phase("a", "Held"))
        lock = locks.lock(status["lockName"])
        # The monitor's watch runs in a thread of its own: Held may be read before it saw the lock.
        wait_until(lambda: bool(monitor.created), "the monitor saw the lock's creation", 10)
        (created,) = monitor.created.values()
        assert (lock["spec"]["fencingToken"], int(lock["metadata"]["resourceVersion"])) == (0, created[1])
        assert status["fencingToken"] == created[1] == lock_token(lock)
        locks.delete("a")
        wait_until(lambda: all(c[-1] == "DELETED" for c in monitor.changes.values()), "the lock deleted", 10)
        assert list(monitor.changes.values()) == [["ADDED", "DELETED"]]


def test_a_renewal_records_the_token_in_the_lock(locks: Locks) -> None:
    """The first write of a lock after its creation records its token: the one the holder was told."""
    locks.claim("a", "deploy://recorded", "agent-a", ttl=600)
    status = status_of(locks.wait_phase("a", "Held"))
    locks.renew("a")
    wait_until(lambda: locks.lock(status["lockName"])["spec"]["fencingToken"] != 0, "the token recorded", 10)
    lock = locks.lock(status["lockName"])
    assert lock["spec"]["fencingToken"] == status["fencingToken"] < int(lock["metadata"]["resourceVersion"])


def test_renewal_keeps_the_lock_past_its_ttl(locks: Locks) -> None:
    # Renewed every second, a lease of 8 s outlives an operator that a loaded machine holds up for
    # seconds (with 3 s it could expire between two renewals); renewed for two and a half leases.
    locks.claim("a", "deploy://long", "agent-a", ttl=8)
    first = status_of(locks.wait_phase("a", "Held"))
    until = time.monotonic() + 20
    while time.monotonic() < until:
        locks.renew("a")
        time.sleep(1)
        assert phase_of(locks.get("a")) == "Held"
    later = status_of(locks.get("a"))
    assert later["renewedAt"] > first["renewedAt"]
    assert later["expiresAt"] > first["expiresAt"]
    assert later["fencingToken"] == first["fencingToken"]  # a renewal is the same grant
    locks.wait_phase("a", "Expired")


def test_expiry_hands_over_to_the_next_waiter(locks: Locks) -> None:
    # 6 s: b queued behind a before a loaded machine lets the lease end; a's Held is seen through the
    # claim history, which a poll held up past those 6 s would miss.
    with locks.history() as seen:
        locks.claim("a", "deploy://handover", "agent-a", ttl=6)
        first = status_of(seen.wait_phase("a", "Held"))
    locks.claim("b", "deploy://handover", "agent-b", wait=True)
    second = status_of(locks.wait_phase("b", "Held"))
    assert phase_of(locks.get("a")) == "Expired"
    assert second["fencingToken"] > first["fencingToken"]


def test_holder_written_timestamps_are_not_trusted(locks: Locks) -> None:
    """Only the operator's own observation of a renewal counts; a marker that claims a far-future
    time extends the lease by ttlSeconds from now, no more."""
    locks.claim("a", "deploy://clock", "agent-a", ttl=8)  # still Held when the renewal comes, even loaded
    locks.wait_phase("a", "Held")
    renewed = locks.renew("a", marker="2999-01-01T00:00:00Z")
    assert renewed
    locks.wait_for("a", lambda b: status_of(b).get("observedRenew") == "2999-01-01T00:00:00Z", what="renewed")
    locks.wait_phase("a", "Expired")


# ---- admin break and fencing --------------------------------------------------------------------


def test_admin_break_revokes_and_grants_the_next_waiter(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    locks.claim("a", "github://acme/app/issues/7", "agent-a")
    first = status_of(locks.wait_phase("a", "Held"))
    locks.claim("b", "github://acme/app/issues/7", "agent-b", wait=True)
    locks.wait_phase("b", "Pending")
    locks.delete_lock(first["lockName"])
    revoked = status_of(locks.wait_phase("a", "Revoked", timeout=10))
    assert revoked["reason"] == "LockBroken"
    second = status_of(locks.wait_phase("b", "Held", timeout=10))
    assert second["fencingToken"] > first["fencingToken"]
    events = _wait_events(admin_api, ns, "a", "LockBroken")
    assert any(t == "Warning" for r, t, _ in events if r == "LockBroken")


def test_fencing_tokens_increase_across_release_expiry_break_and_deletion(locks: Locks) -> None:
    resource = "deploy://fenced"
    tokens = []
    locks.claim("t1", resource, "agent-a")
    tokens.append(status_of(locks.wait_phase("t1", "Held"))["fencingToken"])
    locks.delete("t1")  # release
    with locks.history() as seen:  # Held for 5 s only: a poll held up longer would find it Expired
        locks.claim("t2", resource, "agent-b", ttl=5)
        tokens.append(status_of(seen.wait_phase("t2", "Held"))["fencingToken"])
    locks.wait_phase("t2", "Expired")  # expiry
    locks.claim("t3", resource, "agent-c")
    t3 = status_of(locks.wait_phase("t3", "Held", timeout=10))
    tokens.append(t3["fencingToken"])
    locks.delete_lock(t3["lockName"])  # break
    locks.wait_phase("t3", "Revoked", timeout=10)
    for claim in locks.claims():  # deletion of every object
        locks.delete(claim["metadata"]["name"])
    wait_until(lambda: not locks.locks(), "every lock gone with its claim")
    locks.claim("t4", resource, "agent-d")
    tokens.append(status_of(locks.wait_phase("t4", "Held", timeout=10))["fencingToken"])
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens


# ---- restarts and replicas ----------------------------------------------------------------------


def _burst(locks: Locks, resources: int, per_resource: int, first: int = 0) -> list[str]:
    """`per_resource` waiting claims on each of `resources` resources, numbered from `first`."""
    names = []
    for i in range(first, first + per_resource):
        for r in range(resources):
            name = f"c{r:02d}-{i:02d}"
            locks.claim(name, f"deploy://svc-{r:02d}", f"agent-{r:02d}-{i:02d}", wait=True)
            names.append(name)
    return names


def _drain(locks: Locks, names: list[str], resources: int, timeout: float = 240) -> None:
    """Release whoever holds, resource after resource, until every claim has been granted once."""
    remaining = set(names)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        held = [c for c in locks.claims() if phase_of(c) == "Held" and c["metadata"]["name"] in remaining]
        for claim in held:
            name = claim["metadata"]["name"]
            remaining.discard(name)
            locks.delete(name)
        lost = [c["metadata"]["name"] for c in locks.claims() if phase_of(c) not in (None, "Pending", "Held")]
        assert not lost, f"waiters ended without being granted: {lost}"
        time.sleep(0.1)
    assert not remaining, f"{len(remaining)} waiters never granted, e.g. {sorted(remaining)[:5]}"


def _assert_fifo_and_fenced(monitor: HolderMonitor) -> None:
    assert not monitor.violations, monitor.violations[:5]
    for resource, tokens in monitor.tokens_by_resource().items():
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), (resource, tokens)
    order: dict[str, list[str]] = {}
    for resource, claim, _ in monitor.grants:
        order.setdefault(resource, []).append(claim)
    for resource, claims in order.items():
        assert claims == sorted(claims), f"{resource} granted out of order: {claims}"


def test_operator_sigkill_mid_burst_loses_nothing_and_grants_nothing_twice(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)).start()
    try:
        with HolderMonitor(admin_api, iso_ns) as monitor:
            names = _burst(locks, resources=20, per_resource=5)  # 100 claims while the operator works
            op.kill()
            names += _burst(locks, resources=20, per_resource=5, first=5)  # 100 more while it is dead
            op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)).start()
            _drain(locks, names, 20)
            time.sleep(0.5)
        _assert_fifo_and_fenced(monitor)
        assert len(monitor.grants) == 200
    finally:
        op.stop()




def test_two_operators_at_once_never_make_two_holders(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    first = OperatorProcess(control_plane.kubeconfig, tmp_path / "a.log", namespaces=(iso_ns,)).start()
    second = OperatorProcess(control_plane.kubeconfig, tmp_path / "b.log", namespaces=(iso_ns,)).start()
    try:
        with HolderMonitor(admin_api, iso_ns) as monitor:
            names = _burst(locks, resources=20, per_resource=10)
            _drain(locks, names, 20)
            time.sleep(0.5)
        _assert_fifo_and_fenced(monitor)
        assert len(monitor.grants) == 200
    finally:
        first.stop()
        second.stop()


def test_restart_rearms_deadlines_and_keeps_tokens_increasing(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    log = tmp_path / "op.log"
    op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(iso_ns,)).start()
    try:
        locks.claim("a", "deploy://restart", "agent-a", ttl=10)  # still Held at the kill, even loaded
        first = status_of(locks.wait_phase("a", "Held"))
        locks.claim("b", "deploy://restart", "agent-b", wait=True)
        locks.wait_phase("b", "Pending")
        op.kill()
        op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(iso_ns,)).start()
        # The expiry deadline was re-armed from the status the previous process wrote.
        locks.wait_phase("a", "Expired")
        second = status_of(locks.wait_phase("b", "Held"))
        assert second["fencingToken"] > first["fencingToken"]
        op.kill()
        locks.delete("b")
        locks.claim("c", "deploy://restart", "agent-c")
        op = OperatorProcess(control_plane.kubeconfig, log, namespaces=(iso_ns,)).start()
        third = status_of(locks.wait_phase("c", "Held"))
        assert third["fencingToken"] > second["fencingToken"]
    finally:
        op.stop()


def test_stale_lock_is_marked_and_cleared_by_renewal(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    op = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,), extra_args=("--stale-after-percent", "34")
    ).start()
    try:
        # Stale after 10 s (34%), expired after 30: a loaded machine has 20 s to see Stale and renew.
        locks.claim("a", "deploy://stale", "agent-a", ttl=30)
        locks.wait_phase("a", "Held")

        def stale(body: dict) -> bool:  # type: ignore[type-arg]
            return any(c["type"] == "Stale" and c["status"] == "True" for c in status_of(body).get("conditions", []))

        locks.wait_for("a", stale, what="Stale")
        events = _wait_events(admin_api, iso_ns, "a", "Stale")
        assert any("has not been renewed for 10 seconds, 34% of its 30 seconds lease" in m
                   for r, _, m in events if r == "Stale")
        locks.renew("a")
        locks.wait_for("a", lambda b: not stale(b), what="not Stale")
        assert phase_of(locks.get("a")) == "Held"
    finally:
        op.stop()


def test_namespace_deletion_is_not_blocked_while_the_operator_is_down(
    control_plane,
    admin_api: ApiClient,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    ns = new_namespace(admin_api, "kli-")
    locks = Locks(admin_api, ns)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(ns,)).start()
    locks.claim("a", "deploy://x", "agent-a")
    locks.claim("b", "deploy://x", "agent-b", wait=True)
    locks.wait_phase("b", "Pending")
    op.kill()
    core = CoreV1Api(admin_api)
    core.delete_namespace(ns)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespace(ns)
        except ApiException as error:
            assert error.status == 404
            return
        time.sleep(0.5)
    raise AssertionError(f"namespace {ns} still exists 60 s after deletion with the operator down")
