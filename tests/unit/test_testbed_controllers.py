"""Which kube-controller-manager controllers the test bed runs: a real node gets the node-lifecycle and
taint-eviction controllers (a lost node goes NotReady and its pods are evicted, as in a cluster);
kwok's nodes, which renew no Lease by default, must not (their pods would be marked not Ready); with
``node_lifecycle=True`` kwok renews their Leases and they get those controllers and the pod garbage
collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelock.testbed.controlplane import KWOK_LIFECYCLE_CONTROLLERS, REAL_NODE_CONTROLLERS, ControlPlane


@pytest.mark.parametrize(
    ("node", "kwok", "expected"),
    [(True, False, True), (True, True, False), (False, True, False), (False, False, False)],
    ids=["real-node", "real-node-beside-kwok", "kwok", "neither"],
)
def test_node_lifecycle_only_with_a_real_node_alone(tmp_path: Path, node: bool, kwok: bool, expected: bool) -> None:
    controllers = ControlPlane(tmp_path, node=node, kwok=kwok)._controllers()
    assert all((c in controllers) is expected for c in REAL_NODE_CONTROLLERS)
    assert len(set(controllers)) == len(controllers)


@pytest.mark.parametrize("workloads", [False, True], ids=["alone", "with-workloads"])
def test_kwok_nodes_with_leases_get_the_node_lifecycle_and_the_pod_garbage_collector(
    tmp_path: Path, workloads: bool
) -> None:
    controllers = ControlPlane(tmp_path, node_lifecycle=True, workloads=workloads)._controllers()
    assert all(c in controllers for c in KWOK_LIFECYCLE_CONTROLLERS)
    assert len(set(controllers)) == len(controllers)  # the pod garbage collector named once


def test_node_lifecycle_is_for_kwok_and_needs_the_controller_manager(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kwok"):
        ControlPlane(tmp_path, node_lifecycle=True, kwok=False)
    with pytest.raises(ValueError, match="controller manager"):
        ControlPlane(tmp_path, node_lifecycle=True, controller_manager=False)
