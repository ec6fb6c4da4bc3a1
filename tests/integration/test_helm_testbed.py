"""Helm against the local test bed, as docs/install.md ("Against the local test bed") tells users:
the bed has applied the CRDs, roles and admission policies itself, a release named `dev` installs
beside them with `crds.install=false`, `kubectl rollout status` completes (kube-scheduler and the
workload controllers run; the pod lands on the kwok node), enabling the ServiceMonitor in a cluster
without prometheus-operator does not break the install, and `helm uninstall` removes the release's
objects only: the bed's CRDs, roles and policies stay as they were.

Starts its own control plane the way `make up` does (`python -m kubelock.testbed`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelock.testbed import ControlPlane
from kubelock.testbed.__main__ import FAKE_NODE, MANIFESTS
from tests.support.planes import started

REPO = Path(__file__).resolve().parents[2]
RELEASE, NAMESPACE = "dev", "kubelock-system"
BED_OBJECTS = (
    "customresourcedefinitions/lockclaims.kubelock.dev",
    "customresourcedefinitions/resourcelocks.kubelock.dev",
    "clusterroles/kubelock-agent",
    "clusterroles/kubelock-admin",
    "clusterroles/kubelock-viewer",
    "clusterroles/kubelock-operator",
    "validatingadmissionpolicies/kubelock-lockclaim-holder",
    "validatingadmissionpolicies/kubelock-operator-writes",
)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        tmp_path_factory.mktemp("helm-bed"), manifests=[REPO / m for m in MANIFESTS], workloads=True
    )
    with started(plane):
        plane.create_fake_node(FAKE_NODE)
        yield plane


def helm(bed: ControlPlane, *args: str) -> str:
    result = subprocess.run([str(bed.bin_dir / "helm"), "--kubeconfig", str(bed.kubeconfig), *args],
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def uids(bed: ControlPlane) -> dict[str, str]:
    return {
        name: bed.kubectl("get", name, "-o", "jsonpath={.metadata.uid}").stdout for name in BED_OBJECTS
    }


def test_a_release_beside_the_beds_objects_installs_rolls_out_and_uninstalls_cleanly(bed: ControlPlane) -> None:
    before = uids(bed)
    helm(bed, "install", RELEASE, str(REPO / "charts" / "kubelock"), "--namespace", NAMESPACE, "--create-namespace",
         "--set", "crds.install=false", "--set", "metrics.serviceMonitor.enabled=true")  # fmt: skip
    rollout = bed.kubectl("rollout", "status", "deployment/dev-kubelock-operator", "-n", NAMESPACE, "--timeout=120s")
    assert "successfully rolled out" in rollout.stdout
    pods = json.loads(bed.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [FAKE_NODE]
    # No ServiceMonitor without prometheus-operator's API, and no error for asking for one.
    manifest = helm(bed, "get", "manifest", RELEASE, "--namespace", NAMESPACE)
    assert "kind: ServiceMonitor" not in manifest
    assert "name: dev-kubelock-agent" in manifest and "name: kubelock-agent\n" not in manifest
    # docs/install.md, "Upgrade", on the bed: the release is `dev`, and `--reuse-values` keeps its values.
    helm(bed, "upgrade", RELEASE, str(REPO / "charts" / "kubelock"), "--namespace", NAMESPACE, "--reuse-values")
    rollout = bed.kubectl("rollout", "status", "deployment/dev-kubelock-operator", "-n", NAMESPACE, "--timeout=120s")
    assert "successfully rolled out" in rollout.stdout
    values = json.loads(helm(bed, "get", "values", RELEASE, "--namespace", NAMESPACE, "-o", "json"))
    assert values["crds"] == {"install": False} and values["metrics"]["serviceMonitor"]["enabled"] is True, values

    helm(bed, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    assert bed.kubectl("get", "clusterroles,validatingadmissionpolicies", "-l", "app.kubernetes.io/instance=dev",
                       "-o", "name").stdout.strip() == ""  # fmt: skip
    assert uids(bed) == before, "the bed's CRDs, roles or policies were replaced or deleted"


# A sample of what a newcomer reads with `kubectl explain` (served by the API server from the bed's CRDs):
# each field's description says its unit, its bounds and its default, which kubectl does not print itself.
EXPLAINED = {
    "lockclaim.spec.ttlSeconds": ("At least 1", "86400", "Default"),
    "lockclaim.spec.waitTimeoutSeconds": ("1-86400",),
    "lockclaim.spec.priority": ("-1000..1000", "default 0"),
    "lockclaim.spec.permits": ("default 1", "at most 1000"),
    "resourcelock.spec.leaseDurationSeconds": ("in seconds", "At least 1", "maxTtlSeconds"),
    "resourcelock.spec.permits": ("1-1000", "default 1"),
    "resourcelock.spec.mode": ("default Exclusive",),
    "lockpolicy.spec.capacity": ("1-10000", "default 1"),
    "lockpolicy.spec.lockDelaySeconds": ("0-60", "default 0"),
}


@pytest.mark.parametrize("field", sorted(EXPLAINED))
def test_kubectl_explain_states_the_bounds_and_default_of_a_field(bed: ControlPlane, field: str) -> None:
    explained = bed.kubectl("explain", field).stdout
    description = " ".join(explained.split("DESCRIPTION:", 1)[-1].split())
    missing = [words for words in EXPLAINED[field] if words not in description]
    assert not missing, f"kubectl explain {field} does not say {missing}:\n{explained}"
