"""A frozen path to the API server, against the real one: the connections open at the moment stay
open and carry nothing, while the far kernel still acknowledges (the forwarder's
`Partition.blackhole_open`: a stuck proxy, a frozen API-server process behind a TCP-level load
balancer). No error comes and keepalive sees nothing wrong (test_dark_path.py is the dropped-packet
case). In a scope where the operator writes nothing, its echo check (test_silent_partition.py) has
nothing to notice either: only the watches' own bound finds the dead stream. The API server ends
every watch after `kube.client.WATCH_SECONDS`; one not ended `WATCH_GRACE_SECONDS` later is given up
and resumed from its last version, on a new connection, and shows what came meanwhile. Before this
bound (server-side 300 s + 30 s) a claim made there waited five and a half minutes for its verdict.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from kubelock.domain.resource import claim_name, normalise
from kubelock.sdk import AcquireResult, LockClient
from kubelock.testbed import ControlPlane
from tests.support.access import bind, wait_allowed
from tests.support.claims import Locks, phase_of, wait_until
from tests.support.monitor import HolderMonitor
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, kubeconfig_for

Cluster = Any
R, R2 = "deploy://frozen-a", "deploy://frozen-b"
# The bound, written out so that a regression in the code cannot loosen the test: the server-side
# timeout (`kube.client.WATCH_SECONDS`) and the client's grace past it (`WATCH_GRACE_SECONDS`).
WATCH_BOUND_SECONDS = 60 + 15
REQUEST_TIMEOUT_SECONDS = 10.0  # the new watch, or the grant's write, sent on a pooled silent connection
SLACK = 10.0  # two shared cores


def test_a_frozen_claim_watch_is_given_up_within_its_bound_and_a_claim_made_meanwhile_is_granted(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, partition: Partition, tmp_path: Path
) -> None:
    config = kubeconfig_for(control_plane.kubeconfig, partition.address, tmp_path / "operator-kubeconfig")
    locks = Locks(admin_api, iso_ns)
    bound = WATCH_BOUND_SECONDS + REQUEST_TIMEOUT_SECONDS + SLACK
    with OperatorProcess(config, tmp_path / "operator.log", namespaces=(iso_ns,)) as op, \
            HolderMonitor(admin_api, iso_ns) as holders:
        locks.claim("a", R, "agent-a", ttl=600)
        locks.wait_phase("a", "Held")
        time.sleep(1)  # the grant's writes are answered; from here the operator writes nothing here
        partition.blackhole_open()
        frozen = time.time()
        assert partition.silent_connections >= 3  # the claim, lock and policy watches at least
        locks.claim("c", R2, "agent-c")  # made directly: only the operator's path is frozen
        locks.wait_phase("c", "Held", timeout=bound + 5)
        granted = time.time() - frozen
        log = op.log_text()
        print(f"c held {granted:.1f} s after the path froze")
        assert granted < bound, (granted, log[-4000:])
        # The dead stream was given up, and said so.
        assert f"claim watch of namespace {iso_ns} lost its connection" in log, log[-4000:]
        assert phase_of(locks.get("a")) == "Held"  # the first holder kept its lock throughout
    assert not holders.violations, holders.violations


@pytest.fixture
def agents(control_plane: Cluster, admin_api: ApiClient, iso_ns: str) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    bind(admin_api, iso_ns, "kubelock-agent", "alice")
    wait_allowed(admin_api, "alice", iso_ns, "create", "lockclaims")


def test_an_sdk_waiter_behind_a_frozen_path_learns_its_grant_within_the_bound(
    control_plane: ControlPlane, admin_api: ApiClient, iso_ns: str, partition: Partition, agents: None,
    tmp_path: Path,
) -> None:
    """alice waits in the queue through the forwarder (the operator talks to the API server
    directly); her path freezes; the holder ahead of her leaves and the operator grants her claim.
    Her watch delivers nothing and says nothing; it is given up within its bound and the resumed one
    shows the grant."""
    locks = Locks(admin_api, iso_ns)
    config = kubeconfig_for(control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "alice")
    alice = LockClient(kubeconfig=str(config), namespace=iso_ns, instance="w1")
    mine = claim_name("user:alice/w1", normalise(R))
    got: list[AcquireResult] = []
    learned: list[float] = []

    def wait_in_queue() -> None:
        got.append(alice.acquire(R, wait=True, ttl=600))
        learned.append(time.time())

    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(iso_ns,)):
        locks.claim("b", R, "agent-b", ttl=600)
        locks.wait_phase("b", "Held")
        waiter = threading.Thread(target=wait_in_queue, daemon=True)
        waiter.start()
        try:
            wait_until(lambda: any(c["metadata"]["name"] == mine and phase_of(c) == "Pending" for c in locks.claims()),
                       what="alice to be queued", timeout=30)
            time.sleep(1)  # her watch has shown Pending; from here it is all her path carries
            partition.blackhole_open()
            locks.delete("b")
            locks.wait_phase(mine, "Held", timeout=30)
            held = time.time()
            waiter.join(WATCH_BOUND_SECONDS + SLACK + 5)
            assert learned, f"alice had not learned of her grant {time.time() - held:.1f} s after it"
            late = learned[0] - held
            print(f"alice learned of her grant {late:.1f} s after it was made")
            assert got[0].ok, got[0]
            assert late < WATCH_BOUND_SECONDS + SLACK, late
        finally:
            partition.heal()
            alice.close()
