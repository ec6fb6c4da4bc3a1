"""The operator stopped by SIGTERM, as a pod's deletion or a rollout stops it: it exits cleanly and
says so in its log (so that a clean stop is told from a crash), and what it answered stays as it
was: the held claim, its lock and fencing token, and the waiter's place in the queue."""

from __future__ import annotations

from pathlib import Path

from kubernetes.client import ApiClient

from tests.integration.conftest import Cluster
from tests.support.claims import Locks, status_of
from tests.support.operator import OperatorProcess

STOPPING = "kubelock operator stopping"


def test_sigterm_stops_the_operator_cleanly_and_keeps_every_lock(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, tmp_path: Path
) -> None:
    locks = Locks(admin_api, namespace)
    operator = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)).start()
    try:
        locks.claim("holder", "deploy://api-prod", "user:alice/w1", ttl=600)
        held = status_of(locks.wait_phase("holder", "Held"))
        locks.claim("waiter", "deploy://api-prod", "user:bob/w1", wait=True)
        locks.wait_for("waiter", lambda body: status_of(body).get("queuePosition") == 1, what="position 1")
        assert STOPPING not in operator.log_text()
        lock_before = locks.locks()
        # SIGTERM; a clean exit (given the time a loaded machine needs: after 15 s it would be SIGKILLed).
        assert operator.stop(timeout=120) == 0
        assert STOPPING in operator.log_text(), operator.log_text()[-2000:]
        assert status_of(locks.get("holder"))["fencingToken"] == held["fencingToken"]
        assert status_of(locks.get("holder"))["phase"] == "Held"
        assert status_of(locks.get("waiter"))["phase"] == "Pending"
        assert [lock["metadata"]["uid"] for lock in locks.locks()] == [lock["metadata"]["uid"] for lock in lock_before]
    finally:
        operator.stop()
