"""Which kube-controller-manager controllers the test bed runs: a real node gets the node-lifecycle and
taint-eviction controllers (a lost node goes NotReady and its pods are evicted, as in a cluster);
kwok's nodes, which renew no Lease, must not (their pods would be marked not Ready)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelock.testbed.controlplane import REAL_NODE_CONTROLLERS, ControlPlane


@pytest.mark.parametrize(
    ("node", "kwok", "expected"),
    [(True, False, True), (True, True, False), (False, True, False), (False, False, False)],
    ids=["real-node", "real-node-beside-kwok", "kwok", "neither"],
)
def test_node_lifecycle_only_with_a_real_node_alone(tmp_path: Path, node: bool, kwok: bool, expected: bool) -> None:
    controllers = ControlPlane(tmp_path, node=node, kwok=kwok)._controllers()
    assert all((c in controllers) is expected for c in REAL_NODE_CONTROLLERS)
    assert len(set(controllers)) == len(controllers)
