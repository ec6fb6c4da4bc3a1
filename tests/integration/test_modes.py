"""Lock modes against the real control plane: Shared holders together, an exclusive holder alone,
fairness between them, permits, every grant fenced, per-grant leases, breaking a shared lock, the
token rule kept by admission, and two operators at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi

from kubelock.api.fencing import grant_tokens
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import lock_name
from kubelock.sdk import AsyncLockClient, LockClient
from kubelock.sdk.admin import AsyncAdmin
from tests.support.claims import GROUP, VERSION, Locks, phase_of, status_of, wait_until
from tests.support.monitor import HolderMonitor
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klm-"


@pytest.fixture(scope="module")
def modes_operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",)) as op:
        yield op


@pytest.fixture
def ns(admin_api: ApiClient, modes_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        yield name


@pytest.fixture
def locks(admin_api: ApiClient, ns: str) -> Locks:
    return Locks(admin_api, ns)


def _lock(locks: Locks, resource: str) -> dict:  # type: ignore[type-arg]
    return locks.lock(lock_name(resource))


def test_shared_holders_hold_together_each_with_its_own_increasing_token(locks: Locks) -> None:
    r = "github://acme/app/pr/10"
    for name in ("r1", "r2", "r3"):
        locks.claim(name, r, f"reader-{name}", mode="Shared")
        locks.wait_phase(name, "Held")
    statuses = [status_of(locks.get(n)) for n in ("r1", "r2", "r3")]
    tokens = [s["fencingToken"] for s in statuses]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3, tokens
    for name, status in zip(("r1", "r2", "r3"), statuses, strict=True):
        assert status["grants"] == [{"resource": r, "lockName": lock_name(r), "fencingToken": status["fencingToken"],
                                     "mode": "Shared", "permits": 1}], name
    lock = _lock(locks, r)
    assert (lock["spec"]["mode"], lock["spec"]["holders"], len(lock["spec"]["grants"])) == ("Shared", 3, 2)
    # Every grant's token as readers take it (kubelock.api.fencing) is the one its claim was told.
    assert sorted(grant_tokens(lock).values()) == tokens


def test_an_exclusive_claim_waits_for_readers_and_readers_behind_it_wait_for_it(locks: Locks) -> None:
    r = "github://acme/app/pr/11"
    locks.claim("r1", r, "reader-1", mode="Shared")
    locks.wait_phase("r1", "Held")
    locks.claim("try", r, "writer-0")  # a try-lock is turned away, naming a holder
    assert status_of(locks.wait_phase("try", "Rejected"))["holder"] == "reader-1"
    locks.claim("w", r, "writer-1", wait=True)
    locks.wait_phase("w", "Pending")
    locks.claim("r2", r, "reader-2", mode="Shared", wait=True)
    assert status_of(locks.wait_phase("r2", "Pending"))["queuePosition"] == 2  # not past the writer
    locks.claim("r3", r, "reader-3", mode="Shared")  # nor as a try-lock
    locks.wait_phase("r3", "Rejected")
    locks.delete("r1")
    writer = status_of(locks.wait_phase("w", "Held"))
    assert phase_of(locks.get("r2")) == "Pending"
    locks.delete("w")
    assert status_of(locks.wait_phase("r2", "Held"))["fencingToken"] > writer["fencingToken"]


def test_consecutive_shared_waiters_are_granted_together(locks: Locks) -> None:
    r = "deploy://api-prod"
    locks.claim("w", r, "writer", ttl=600)
    locks.wait_phase("w", "Held")
    for i in range(4):
        locks.claim(f"r{i}", r, f"reader-{i}", mode="Shared", wait=True)
    locks.wait_phases([f"r{i}" for i in range(4)], "Pending")
    locks.delete("w")
    locks.wait_phases([f"r{i}" for i in range(4)], "Held")
    assert _lock(locks, r)["spec"]["holders"] == 4


def test_permits_on_a_resource_of_one_permit(locks: Locks) -> None:
    r = "deploy://batch"
    locks.claim("one", r, "agent-1", permits=1)
    locks.wait_phase("one", "Held")
    locks.claim("two", r, "agent-2", permits=1)
    locks.wait_phase("two", "Rejected")
    locks.claim("big", r, "agent-3", permits=2, wait=True)  # could never be granted: refused, not queued
    big = status_of(locks.wait_phase("big", "Rejected"))
    assert big["reason"] == "InvalidSpec" and "permits 2 exceed the capacity 1" in big["message"], big


def test_a_shared_lease_expires_alone_and_the_others_keep_theirs(locks: Locks) -> None:
    r = "github://acme/app/pr/12"
    # `short` must still hold when `long` joins it: a lease of seconds, not the 2 s it was, which a
    # loaded machine could spend between the two grants.
    locks.claim("short", r, "reader-short", mode="Shared", ttl=15)
    first = status_of(locks.wait_phase("short", "Held"))
    locks.claim("long", r, "reader-long", mode="Shared", ttl=600)
    second = status_of(locks.wait_phase("long", "Held"))
    assert phase_of(locks.get("short")) == "Held"
    locks.wait_phase("short", "Expired", timeout=60)
    wait_until(lambda: _lock(locks, r)["spec"]["holders"] == 1, "the expired grant to be removed")
    lock = _lock(locks, r)
    # The first grant went: the next one moved up, with the token it was told.
    assert lock["spec"]["claimRef"]["name"] == "long" and lock["spec"]["holders"] == 1
    assert grant_tokens(lock) == {lock["spec"]["claimRef"]["uid"]: second["fencingToken"]}
    assert second["fencingToken"] > first["fencingToken"]
    locks.renew("long")  # a renewal of a grant keeps its token
    locks.wait_for("long", lambda b: status_of(b).get("renewedAt") != second["renewedAt"], what="renewed")
    assert status_of(locks.get("long"))["fencingToken"] == second["fencingToken"]
    assert phase_of(locks.get("long")) == "Held"


def test_breaking_a_shared_lock_revokes_every_holder(locks: Locks) -> None:
    r = "github://acme/app/pr/13"
    for name in ("r1", "r2"):
        locks.claim(name, r, f"reader-{name}", mode="Shared")
        locks.wait_phase(name, "Held")
    locks.claim("w", r, "writer", wait=True)
    locks.wait_phase("w", "Pending")
    locks.delete_lock(lock_name(r))
    for name in ("r1", "r2"):
        assert status_of(locks.wait_phase(name, "Revoked"))["reason"] == "LockBroken"
    locks.wait_phase("w", "Held")


def test_admission_keeps_every_grants_token(locks: Locks, admin_api: ApiClient, ns: str) -> None:
    r = "github://acme/app/pr/14"
    for name in ("r1", "r2"):
        locks.claim(name, r, f"reader-{name}", mode="Shared")
        locks.wait_phase(name, "Held")
    lock = _lock(locks, r)
    api = CustomObjectsApi(admin_api)
    grants = lock["spec"]["grants"]
    assert grants[0]["fencingToken"] == 0  # made by the lock's last write: its token is the resourceVersion
    forged = [{**grants[0], "fencingToken": 1}]
    patch = {"metadata": {"resourceVersion": lock["metadata"]["resourceVersion"]}, "spec": {"grants": forged}}
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, "resourcelocks", lock["metadata"]["name"], patch)
    assert refused.value.status == 422
    assert "records its resourceVersion" in str(refused.value.body)


def test_a_claim_naming_a_resource_twice_once_normalised_is_refused(locks: Locks) -> None:
    locks.api.create_namespaced_custom_object(GROUP, VERSION, locks.namespace, "lockclaims", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": "same"},
        "spec": {"resources": ["github://acme/a", "GITHUB://acme/a/"], "holder": "agent-a"},
    })
    status = status_of(locks.wait_phase("same", "Rejected"))
    assert status["reason"] == "InvalidSpec" and "github://acme/a more than once" in status["message"], status


# ---- two operators at once ----------------------------------------------------------------------


def test_two_operators_at_once_never_grant_conflicting_modes(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A burst of exclusive and Shared waiters on a few resources, decided by two operators at once:
    at no observed moment do conflicting claims hold a resource, and every grant's token is new."""
    locks = Locks(admin_api, iso_ns)
    first = OperatorProcess(control_plane.kubeconfig, tmp_path / "a.log", namespaces=(iso_ns,)).start()
    second = OperatorProcess(control_plane.kubeconfig, tmp_path / "b.log", namespaces=(iso_ns,)).start()
    try:
        with HolderMonitor(admin_api, iso_ns) as monitor:
            names = []
            for i in range(12):
                for r in range(5):
                    name = f"c{r}-{i:02d}"
                    mode = "Exclusive" if i % 4 == 3 else "Shared"
                    locks.claim(name, f"deploy://svc-{r}", f"agent-{r}-{i}", wait=True, mode=mode)
                    names.append(name)
            remaining = set(names)
            deadline = time.monotonic() + 240
            while remaining and time.monotonic() < deadline:
                for claim in locks.claims():
                    name = claim["metadata"]["name"]
                    if phase_of(claim) == "Held" and name in remaining:
                        remaining.discard(name)
                        locks.delete(name)
                    assert phase_of(claim) in (None, "Pending", "Held"), claim
                time.sleep(0.1)
            assert not remaining, sorted(remaining)[:5]
            # The watch (another connection) may lag behind the LISTs above: wait until it has shown
            # every grant (more would be a violation, judged below).
            wait_until(lambda: len(monitor.grants) >= len(names), "the watch to show every grant", timeout=60)
        assert not monitor.violations, monitor.violations[:5]
        assert len(monitor.grants) == 60
        for resource, tokens in monitor.tokens_by_resource().items():
            assert len(set(tokens)) == len(tokens), (resource, tokens)
        wait_until(lambda: not locks.locks(), "every lock to be gone")
    finally:
        first.stop()
        second.stop()


def test_unlock_of_one_shared_holder_revokes_it_alone(control_plane, locks: Locks, ns: str) -> None:  # type: ignore[no-untyped-def]
    """kubelock unlock --holder, as a cluster admin, on a lock two readers share."""
    r = "github://acme/app/pr/15"
    for name in ("r1", "r2"):
        locks.claim(name, r, f"user:reader-{name}/w1", mode="Shared")
        locks.wait_phase(name, "Held")
    kept = status_of(locks.get("r2"))["fencingToken"]

    async def unlock() -> None:
        async with AsyncLockClient(kubeconfig=str(control_plane.kubeconfig), namespace=ns, instance="admin") as client:
            broken = await AsyncAdmin(client).break_locks(reason="stuck reader", holders=["user:reader-r1/w1"])
            assert [b.lock.resource for b in broken] == [r]

    asyncio.run(unlock())
    revoked = status_of(locks.wait_phase("r1", "Revoked"))
    assert revoked["reason"] == "LockBroken" and "stuck reader" in revoked["message"], revoked
    assert phase_of(locks.get("r2")) == "Held"
    wait_until(lambda: not (_lock(locks, r)["metadata"].get("annotations") or {}), "the break record to be cleared")
    lock = _lock(locks, r)
    assert lock["spec"]["holders"] == 1 and list(grant_tokens(lock).values()) == [kept]


def test_a_deadlock_through_a_shared_grant_is_found(locks: Locks) -> None:
    """reader-a holds R1 Shared and waits for R2; writer-b holds R2 and waits for R1 (exclusively): the
    shared grant keeps writer-b out, so the second wait closes a cycle."""
    r1, r2 = "github://acme/app/pr/20", "deploy://api-20"
    locks.claim("a1", r1, "reader-a", mode="Shared")
    locks.claim("b2", r2, "writer-b")
    locks.wait_phases(["a1", "b2"], "Held")
    locks.claim("a2", r2, "reader-a", wait=True)
    locks.wait_phase("a2", "Pending")
    locks.claim("b1", r1, "writer-b", wait=True)
    status = status_of(locks.wait_phase("b1", "Deadlocked"))
    assert status["cycle"] == ["writer-b", r1, "reader-a", r2, "writer-b"], status
    locks.claim("c1", r1, "reader-c", mode="Shared", wait=True)  # a reader beside a reader is no wait at all
    locks.wait_phase("c1", "Held")


def test_the_cli_and_the_sdk_take_shared_locks(control_plane, ns: str) -> None:  # type: ignore[no-untyped-def]
    uri = "github://acme/app/pr/21"
    bin_dir = Path(sys.executable).parent
    common = ["--kubeconfig", str(control_plane.kubeconfig), "-n", ns]

    def rlock(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        done = subprocess.run([str(bin_dir / "rlock"), *args, *common], capture_output=True, text=True, timeout=60)
        return done.returncode, json.loads(done.stdout)

    code, first = rlock(uri, "--shared", "--instance", "r1")
    assert code == 0 and first["ok"], first
    client = LockClient(kubeconfig=str(control_plane.kubeconfig), namespace=ns, instance="r2")
    with client, client.lock(uri, mode="Shared", ttl=60) as lease:
        assert lease.fencing_token is not None and lease.fencing_token > first["fencingToken"]
        assert lease.claim.mode == "Shared" and lease.claim.tokens == {uri: lease.fencing_token}
        code, refused = rlock(uri, "--instance", "w1")  # a writer while two read
        assert code == ExitCode.HELD and refused["error"] == "HeldByAnotherHolder", refused
        code, bad = rlock(uri, "--shared", "--permits", "2", "--instance", "w1")
        assert code == ExitCode.INVALID_INPUT and "no permits" in bad["message"], bad
    run = subprocess.run([str(bin_dir / "kubelock"), "run", uri, "--shared", "--instance", "r3", *common, "-o", "json",
                          "--", "sh", "-c", "test -n \"$KUBELOCK_FENCING_TOKEN\""],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["fencingToken"] > first["fencingToken"]
