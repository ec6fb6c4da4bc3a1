"""A grant rests on a fresh, complete view: claims arriving while the operator starts are served
first come, first served whatever order they are listed in, and an operator that was stopped does
not grant to a claim deleted meanwhile."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

from kubernetes.client import ApiClient

from tests.support.claims import GROUP, VERSION, Locks, phase_of, status_of, wait_until
from tests.support.monitor import LockMonitor
from tests.support.operator import OperatorProcess

RESOURCES = 12


def _current_version(locks: Locks) -> int:
    listing = locks.api.list_namespaced_custom_object(GROUP, VERSION, locks.namespace, "lockclaims", limit=1)
    return int(listing["metadata"]["resourceVersion"])



def test_claims_arriving_while_the_operator_starts_are_served_in_creation_order(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Pairs of waiters keep arriving on fresh resources while the operator lists and starts
    watching; the younger of each pair has the name that sorts first, so a listing in name order
    hands it over first. The older must be granted."""
    locks = Locks(admin_api, iso_ns)
    pairs: list[tuple[str, str]] = []  # (older, younger) claim names, one pair per resource
    stop = threading.Event()

    def create() -> None:
        for k in range(10_000):
            if stop.is_set():
                return
            resource = f"deploy://start-{k:04d}"
            older, younger = f"z-{k:04d}", f"a-{k:04d}"
            locks.claim(older, resource, f"agent-z-{k:04d}", wait=True)
            locks.claim(younger, resource, f"agent-a-{k:04d}", wait=True)
            pairs.append((older, younger))

    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,))
    creator = threading.Thread(target=create, daemon=True)
    creator.start()
    try:
        time.sleep(0.3)
        op.start()
        time.sleep(2.0)
        # On a loaded machine the creates are slow: go on until there are pairs enough to show
        # anything (the start is slow there too, so the early ones still arrive during it).
        wait_until(lambda: len(pairs) > 20, "more than 20 pairs of waiters", timeout=60)
    finally:
        stop.set()
        creator.join(30)
    try:
        held: dict[str, str] = {}

        def every_resource_granted() -> bool:
            for claim in locks.claims():
                if phase_of(claim) == "Held":
                    held[claim["spec"]["resource"]] = claim["metadata"]["name"]
            return len(held) >= len(pairs)

        wait_until(every_resource_granted, "a grant on every resource", timeout=120)
    finally:
        op.stop()
    assert len(pairs) > 20, "too few claims to show anything"
    overtaken = [younger for older, younger in pairs if held[f"deploy://start-{older[2:]}"] != older]
    assert not overtaken, f"younger waiters granted before older ones: {overtaken[:10]}"


def test_a_stopped_operator_grants_nothing_to_claims_deleted_while_it_was_stopped(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """SIGSTOP the operator while holders' leases run out and their waiters give up: when it
    resumes, its cache still shows the waiters and its deadline heap says the leases are over."""
    locks = Locks(admin_api, iso_ns)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)).start()
    try:
        with LockMonitor(admin_api, iso_ns) as monitor:
            for r in range(RESOURCES):
                # 30 s: every waiter is queued (and seen Pending) before a lease ends, even on a
                # loaded machine where 24 creates and their answers take longer than 5 s.
                locks.claim(f"h{r:02d}", f"deploy://paused-{r:02d}", f"holder-{r:02d}", ttl=30)
            leases_end = max(
                _timestamp(status_of(locks.wait_phase(f"h{r:02d}", "Held"))["expiresAt"]) for r in range(RESOURCES)
            )
            waiters = {}
            for r in range(RESOURCES):
                body = locks.claim(f"w{r:02d}", f"deploy://paused-{r:02d}", f"waiter-{r:02d}", wait=True)
                waiters[body["metadata"]["uid"]] = f"w{r:02d}"
            for name in waiters.values():
                locks.wait_phase(name, "Pending")
            op.pause()
            try:
                for name in waiters.values():
                    locks.delete(name)  # the waiters give up while the operator is stopped
                deleted_by = _current_version(locks)
                time.sleep(max(0.0, leases_end + 1 - time.time()))  # and the holders' leases run out
            finally:
                op.resume()
            for r in range(RESOURCES):
                locks.wait_phase(f"h{r:02d}", "Expired")
            wait_until(lambda: not locks.locks(), "every lock to be gone")
            time.sleep(0.5)
        phantoms = [
            waiters[claim] for claim, version in monitor.created.values() if claim in waiters and version > deleted_by
        ]
        assert not phantoms, f"locks created for claims deleted while the operator was stopped: {phantoms}"
        assert "did not run for" in op.log_text()
    finally:
        op.stop()


def _timestamp(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
