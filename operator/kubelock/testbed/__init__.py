"""A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kwok) for tests
and ``make run``; envtest-style, with binaries built by ``hack/install-binaries.sh``.

Independent of kopf and of the Kubernetes client, so it can start a cluster before either is used.
"""

from kubelock.testbed.binaries import MissingBinariesError, find_binaries
from kubelock.testbed.controlplane import (
    DEFAULT_USERS,
    KWOK_NODE_ANNOTATION,
    ControlPlane,
    fake_node_manifest,
    node_is_ready,
)
from kubelock.testbed.processes import ProcessError, wait_until

__all__ = [
    "DEFAULT_USERS",
    "KWOK_NODE_ANNOTATION",
    "ControlPlane",
    "MissingBinariesError",
    "ProcessError",
    "fake_node_manifest",
    "find_binaries",
    "node_is_ready",
    "wait_until",
]
