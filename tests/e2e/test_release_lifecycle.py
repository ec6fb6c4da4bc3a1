"""The installed operator as users see it, then its release's end: metrics through the Service, the
pod's own ServiceAccount token, `helm upgrade` of a value, `helm uninstall` (nothing left but the
CRDs, which the chart keeps), and the plain-manifest install (`kubectl apply -f manifests/`).

Runs after the other end-to-end modules that use the tier's release (file order): it uninstalls it.
(The token test runs after it, on a cluster of its own.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.agents import SLEEP, Agents, agents_namespace, poll, run
from tests.e2e.conftest import RELEASE, RELEASE_NAMESPACE, E2ECluster, helm_install_args
from tests.e2e.tools import REPO, Tools

OPERATOR = "kubelock-operator"
CRDS = ("lockclaims.kubelock.dev", "resourcelocks.kubelock.dev", "lockpolicies.kubelock.dev")
MANIFEST = REPO / "manifests" / "kubelock.yaml"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
CLUSTER_KINDS = "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings"


def _operator_pod(tools: Tools) -> dict[str, Any]:
    pods = json.loads(tools.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-l",
                                    "app.kubernetes.io/component=operator", "-o", "json"))["items"]  # fmt: skip
    return next(p for p in pods if not p["metadata"].get("deletionTimestamp"))


def test_operator_runs_from_the_image_with_its_service_account_token(cluster: E2ECluster, kubelock: str) -> None:
    pod = _operator_pod(cluster.tools)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"] == cluster.operator_image
    assert spec["serviceAccountName"] == OPERATOR
    # In-cluster credentials only: the projected ServiceAccount token, no kubeconfig anywhere.
    assert not any(e["name"] == "KUBECONFIG" for e in container.get("env", []))
    assert any(m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" for m in container["volumeMounts"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    log = cluster.tools.kubectl("logs", pod["metadata"]["name"], "-n", RELEASE_NAMESPACE)
    assert "Forbidden" not in log and "Unauthorized" not in log, log[-2000:]
    # The image: non-root, and no build tools left in it.
    probe = "import os, shutil; print(os.getuid(), [t for t in ('gcc', 'cc', 'make', 'apt-get') if shutil.which(t)])"
    out = cluster.tools.kubectl("exec", pod["metadata"]["name"], "-n", RELEASE_NAMESPACE, "--", "python", "-c", probe)
    assert out.strip() == "10001 []", out


def test_metrics_answer_through_the_service(cluster: E2ECluster, kubelock: str, tmp_path: Path) -> None:
    tools = cluster.tools
    # Through the API server's service proxy...
    proxy = f"/api/v1/namespaces/{RELEASE_NAMESPACE}/services/http:{OPERATOR}-metrics:metrics/proxy/metrics"
    raw = tools.kubectl("get", "--raw", proxy)
    assert "kubelock_" in raw
    # ...and from a pod, to the Service's ClusterIP (kube-proxy's rules on the node).
    ip = tools.kubectl("get", "service", f"{OPERATOR}-metrics", "-n", RELEASE_NAMESPACE, "-o",
                       "jsonpath={.spec.clusterIP}")  # fmt: skip
    with agents_namespace(tools, cluster.agent_image, "metrics") as agents:
        url = f"http://{ip}:9090/metrics"
        fetch = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).read().decode())"
        pod = agents.start("scrape", f"python -c \"{fetch}\"")
        poll(lambda a=agents, p=pod: a.phase(p) in ("Succeeded", "Failed"), "the scrape pod to finish", 60)
        out = tools.kubectl("logs", pod, "-n", agents.namespace)
        assert agents.phase(pod) == "Succeeded", out
        assert "kubelock_" in out


def _release_objects(tools: Tools) -> set[str]:
    namespaced = tools.kubectl("get", "deployments,services,serviceaccounts,configmaps,poddisruptionbudgets",
                               "-n", RELEASE_NAMESPACE, "-l", INSTANCE, "-o", "name")  # fmt: skip
    cluster_scoped = tools.kubectl("get", CLUSTER_KINDS, "-l", INSTANCE, "-o", "name")
    return set(namespaced.split()) | set(cluster_scoped.split())


def test_helm_upgrade_of_a_value_rolls_the_operator_and_leaves_no_stray_objects(
    cluster: E2ECluster, kubelock: str
) -> None:
    tools = cluster.tools
    before = _release_objects(tools)
    tools.helm(*helm_install_args(cluster, "replicaCount=1", "staleAfterPercent=60"))
    tools.kubectl("rollout", "status", f"deployment/{OPERATOR}", "-n", RELEASE_NAMESPACE, "--timeout=180s")
    args = json.loads(tools.kubectl("get", "deployment", OPERATOR, "-n", RELEASE_NAMESPACE, "-o", "json"))["spec"][
        "template"
    ]["spec"]["containers"][0]["args"]
    assert "--stale-after-percent=60" in args, args
    poll(lambda: "--stale-after-percent=60" in " ".join(_operator_pod(tools)["spec"]["containers"][0]["args"]),
         "the operator pod with the new value", 120)  # fmt: skip
    assert _release_objects(tools) == before


def test_helm_uninstall_leaves_nothing_but_the_kept_crds(cluster: E2ECluster, kubelock: str) -> None:
    tools = cluster.tools
    tools.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "3m")
    assert _release_objects(tools) == set()

    def stray() -> list[str]:
        left = tools.kubectl("get", "all,serviceaccounts,configmaps,secrets,roles,rolebindings",
                             "-n", RELEASE_NAMESPACE, "-o", "name")  # fmt: skip
        # What Kubernetes itself keeps in every namespace.
        return [o for o in left.split() if o not in ("serviceaccount/default", "configmap/kube-root-ca.crt")]

    # `helm uninstall --wait` waits for the Deployment; its pod may still be terminating.
    poll(lambda: not stray(), "the release's pods to be gone", 60)
    # The chart's CRD policy (crds.keep, default true): CRDs stay, so the claims in the cluster survive.
    for crd in CRDS:
        annotations = json.loads(tools.kubectl("get", "crd", crd, "-o", "json"))["metadata"]["annotations"]
        assert annotations.get("helm.sh/resource-policy") == "keep"


def test_plain_manifests_install_the_same_operator(cluster: E2ECluster) -> None:
    tools = cluster.tools
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    cluster.tag_image(cluster.operator_image, deployment["spec"]["template"]["spec"]["containers"][0]["image"])
    if _namespace_exists(tools):  # a server-side dry run checks namespaced objects in existing namespaces only
        tools.kubectl("apply", "--dry-run=server", "-f", str(MANIFEST))
    try:
        tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(MANIFEST))
        tools.kubectl("rollout", "status", f"deployment/{OPERATOR}", "-n", RELEASE_NAMESPACE, "--timeout=180s")
        with agents_namespace(tools, cluster.agent_image, "manifests") as agents:
            _take_and_refuse(agents, "github://acme/app/pr/17")
    finally:
        tools.run("kubectl", "delete", "-f", str(MANIFEST), "--ignore-not-found", "--wait=false")


def _namespace_exists(tools: Tools) -> bool:
    return bool(tools.kubectl("get", "namespace", RELEASE_NAMESPACE, "--ignore-not-found", "-o", "name").strip())


def _take_and_refuse(agents: Agents, uri: str) -> None:
    holder = agents.start("agent-a", run(f'rlock "{uri}"'), SLEEP)
    assert agents.wait_outputs(holder, 1, timeout=90)[0][1] == 0
    other = agents.start("agent-b", run(f'rlock "{uri}"'))
    [(refused, code)] = agents.wait_outputs(other, 1)
    assert code == 1 and refused["holder"] == agents.holder(holder), refused
