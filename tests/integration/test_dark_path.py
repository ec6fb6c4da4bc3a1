"""A path to the API server gone dark: every packet of the operator's open connections dropped, both
ways, so that not even TCP answers (tests/support/firewall.py), against the real API server. Unlike
the forwarder's silent mode (test_silent_partition.py), where the kernels still acknowledge, only
keepalive probes can tell such a connection is dead, and in a namespace where the operator writes
nothing, nothing else does: its claim watch would wait for its own bound (`kube.client.WATCH_SECONDS`
and its grace, 75 s; test_frozen_path.py) while new claims there go unseen."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from tests.support import firewall
from tests.support.claims import Locks
from tests.support.monitor import HolderMonitor
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, kubeconfig_for

Cluster = Any
R, R2 = "deploy://dark-a", "deploy://dark-b"
# Keepalive (`kubelock.kube.keepalive`): first probe after 10 s of silence, then every 5 s, dead after
# 3 unanswered, written out here so that a regression in the code cannot loosen the test.
KEEPALIVE_SECONDS = 10 + 5 * 3
REQUEST_TIMEOUT_SECONDS = 10.0  # a grant's write sent on a pooled connection of the dark path
SLACK = 10.0  # two shared cores


@pytest.fixture
def firewall_rules() -> None:
    """iptables on this host, with no rules left by an earlier run (the forwarder is conftest's)."""
    reason = firewall.unavailable()
    if reason:
        pytest.skip(reason)
    firewall.remove_stale_rules()


def test_a_claim_watch_on_a_dark_path_is_ended_by_keepalive_and_a_new_claim_is_granted(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, firewall_rules: None, partition: Partition,
    tmp_path: Path,
) -> None:
    config = kubeconfig_for(control_plane.kubeconfig, partition.address, tmp_path / "operator-kubeconfig")
    locks = Locks(admin_api, iso_ns)
    with OperatorProcess(config, tmp_path / "operator.log", namespaces=(iso_ns,)) as op, \
            HolderMonitor(admin_api, iso_ns) as holders:
        locks.claim("a", R, "agent-a", ttl=600)
        locks.wait_phase("a", "Held")
        time.sleep(1)  # the grant's writes are answered; from here the operator writes nothing here
        ports = partition.client_ports()
        assert len(ports) >= 3, ports  # the claim, lock and policy watches at least
        with firewall.DroppedConnections(partition.listen_port, ports):
            dark = time.time()
            locks.claim("c", R2, "agent-c")  # made directly: only the operator is cut off
            locks.wait_phase("c", "Held", timeout=KEEPALIVE_SECONDS + REQUEST_TIMEOUT_SECONDS + SLACK + 30)
            granted = time.time() - dark
        log = op.log_text()
        print(f"c held {granted:.1f} s after the path went dark")
        assert granted < KEEPALIVE_SECONDS + REQUEST_TIMEOUT_SECONDS + SLACK, (granted, log[-4000:])
        assert "lost its connection" in log, log[-4000:]
        assert locks.get("a")["status"]["phase"] == "Held"  # the first holder kept its lock throughout
    assert not holders.violations, holders.violations
