"""The Helm chart against the real control plane: what it renders is accepted by the API server, it
installs, the operator works with exactly the identity and roles the chart creates, and uninstalling
leaves nothing behind but the CRDs.

The test bed already holds the CRDs, roles and policies from crds/ and config/. A release here is
therefore named ``klh-<hex>``: its cluster-scoped objects get release-scoped names
(``klh-<hex>-kubelock-agent``, ...) and can come and go without touching the bed's, and it is
installed with ``crds.install=false``. Only the test of ``crds.keep`` takes the CRDs over (helm
``--take-ownership``) and puts them back if anything goes wrong.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    ApiException,
    CoreV1Api,
    RbacAuthorizationV1Api,
    V1Namespace,
    V1ObjectMeta,
    V1RoleBinding,
    V1RoleRef,
)

from kubelock.api.fencing import lock_token
from kubelock.testbed import ControlPlane, find_binaries
from tests.support.claims import MIN_WAIT_SECONDS, Locks, phase_of, status_of
from tests.support.operator import OperatorProcess

if TYPE_CHECKING:
    from tests.integration.conftest import Cluster, UserApi

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubelock"
PREFIX = "klh-"
CRDS = ("lockclaims.kubelock.dev", "resourcelocks.kubelock.dev", "lockpolicies.kubelock.dev")
# Operator flags the test sets itself: it listens on free local ports, not on the pod's 0.0.0.0:8080.
LOCAL_FLAGS = ("--health-address", "--metrics-port", "--metrics-address")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Tools:
    """helm and kubectl, as the cluster's admin."""

    bin_dir: Path
    kubeconfig: Path

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, None, check)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, stdin, check)

    def _run(
        self, tool: str, args: tuple[str, ...], stdin: str | None, check: bool
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str  # where the release and the operator's namespaced objects live
    locks_namespace: str  # the only namespace the operator watches
    fullname: str  # prefix of every object name


@pytest.fixture(scope="module")
def tools(control_plane: Cluster) -> Tools:
    if isinstance(control_plane, ControlPlane):
        bin_dir = control_plane.bin_dir
    else:
        bin_dir = find_binaries(("helm", "kubectl"), kwok_stages=False)
    return Tools(bin_dir, control_plane.kubeconfig)


def _create_namespace(admin_api: ApiClient, name: str) -> str:
    CoreV1Api(admin_api).create_namespace(
        V1Namespace(metadata=V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "kubelock"}))
    )
    return name


def _delete_namespace(admin_api: ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        CoreV1Api(admin_api).delete_namespace(name)


@pytest.fixture
def scratch_namespace(admin_api: ApiClient) -> Iterator[str]:
    name = _create_namespace(admin_api, f"{PREFIX}{secrets.token_hex(4)}")
    yield name
    _delete_namespace(admin_api, name)


def render(
    tools: Tools, namespace: str, *sets: str, release: str = "kubelock", api_versions: tuple[str, ...] = ()
) -> list[Obj]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += [arg for api in api_versions for arg in ("--api-versions", api)]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(tools.helm(*args).stdout) if d]


def server_dry_run(tools: Tools, docs: list[Obj]) -> str:
    """Applies with --dry-run=server: schema, defaulting, admission and name checks, nothing stored."""
    result = tools.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs), check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def kinds(docs: list[Obj]) -> list[str]:
    return [d["kind"] for d in docs]


def wait_for(check: Callable[[], bool], what: str, timeout: float = MIN_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# ---- rendering, validated by the API server ----------------------------------------------------


def test_lint(tools: Tools) -> None:
    for sets in ([], ["replicaCount=2", "namespaces={a,b-*}", "metrics.serviceMonitor.enabled=true"]):
        args = ["lint", str(CHART), "--strict", *(a for s in sets for a in ("--set", s))]
        result = tools.helm(*args)
        assert "0 chart(s) failed" in result.stdout, result.stdout


def test_default_render_is_accepted_by_the_api_server(tools: Tools, scratch_namespace: str) -> None:
    docs = render(tools, scratch_namespace)
    # prometheus-operator's CRD is not in the cluster, and by default nothing needs it.
    assert "ServiceMonitor" not in kinds(docs)
    assert "ConfigMap" not in kinds(docs)
    out = server_dry_run(tools, docs)
    for expected in (
        "deployment.apps/kubelock-operator",
        "serviceaccount/kubelock-operator",
        "service/kubelock-operator-metrics",
        "clusterrole.rbac.authorization.k8s.io/kubelock-agent",
        "clusterrolebinding.rbac.authorization.k8s.io/kubelock-operator",
        "customresourcedefinition.apiextensions.k8s.io/lockclaims.kubelock.dev",
        "validatingadmissionpolicy.admissionregistration.k8s.io/kubelock-lockclaim-bounds",
    ):
        assert expected in out, out


@pytest.mark.parametrize(
    "sets",
    [
        pytest.param(
            (
                "replicaCount=2",
                "namespaces={agents,ci-*}",
                "crds.install=false",
                "maxTtlSeconds=3600",
                "resourceLockTimeout=600",
                "logFormat=text",
                "grafana.dashboard.enabled=true",
                "podDisruptionBudget.enabled=true",
                "metrics.serviceMonitor.enabled=true",
                "serviceAccount.annotations.example\\.com/role=locks",
            ),
            id="replicas-namespaces-no-crds-monitoring",
        ),
        pytest.param(
            (
                "metrics.enabled=false",
                "rbac.userRoles=false",
                "admission.enabled=false",
                "image.digest=sha256:" + "a" * 64,
            ),
            id="minimal",
        ),
    ],
)
def test_non_default_render_is_accepted_by_the_api_server(
    tools: Tools, scratch_namespace: str, sets: tuple[str, ...]
) -> None:
    # As in a cluster with prometheus-operator: the ServiceMonitor is rendered only where its API is served.
    docs = render(tools, scratch_namespace, *sets, api_versions=("monitoring.coreos.com/v1/ServiceMonitor",))
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == ("metrics.serviceMonitor.enabled=true" in sets)
    if "crds.install=false" in sets:
        assert "CustomResourceDefinition" not in kinds(docs)
    out = server_dry_run(tools, [d for d in docs if d["kind"] != "ServiceMonitor"])
    assert "deployment.apps/kubelock-operator" in out
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    if "replicaCount=2" in sets:
        assert deployment["spec"]["replicas"] == 2
        assert "configmap/kubelock-dashboard" in out
        assert "poddisruptionbudget.policy/kubelock-operator" in out


def test_plain_manifests_are_accepted_by_the_api_server(tools: Tools, admin_api: ApiClient) -> None:
    # The file creates kubelock-system; a dry run creates nothing, so the namespace must exist for
    # the namespaced objects after it to be checked.
    created = not tools.kubectl("get", "namespace", "kubelock-system", "--ignore-not-found", "-o", "name").stdout
    if created:
        _create_namespace(admin_api, "kubelock-system")
    try:
        result = tools.kubectl("apply", "--dry-run=server", "-f", str(REPO / "manifests" / "kubelock.yaml"))
        assert "deployment.apps/kubelock-operator created (server dry run)" in result.stdout
    finally:
        if created:
            _delete_namespace(admin_api, "kubelock-system")


# ---- helm install, the operator as the chart's ServiceAccount, helm uninstall -------------------


@pytest.fixture(scope="module")
def release(tools: Tools, admin_api: ApiClient) -> Iterator[Release]:
    name = f"{PREFIX}{secrets.token_hex(4)}"
    namespace = _create_namespace(admin_api, name)
    locks_namespace = _create_namespace(admin_api, f"{name}-locks")
    tools.helm(
        "install", name, str(CHART), "--namespace", namespace,
        "--set", "crds.install=false",  # the bed's CRDs; see test_crds_are_kept_on_uninstall
        "--set", f"namespaces={{{locks_namespace}}}",
        # Non-default settings, to see them reach the operator and the admission policy.
        "--set", "maxTtlSeconds=600",
        "--set", "resourceLockTimeout=300",
        "--set", "staleAfterPercent=60",
        "--set", "logFormat=text",
    )  # fmt: skip
    try:
        yield Release(name, namespace, locks_namespace, f"{name}-kubelock")
    finally:
        tools.helm("uninstall", name, "--namespace", namespace, "--ignore-not-found", "--wait", check=False)
        _delete_cluster_leftovers(tools, name)
        _delete_namespace(admin_api, locks_namespace)
        _delete_namespace(admin_api, namespace)


def _delete_cluster_leftovers(tools: Tools, release: str) -> None:
    """Deletes what an uninstall that failed (a loaded API server, a helm timeout) left of a release
    cluster-wide. Its admission policies bind every namespace: left behind, its maxTtlSeconds and its
    operator's identity as the only writer of claim status would hold over every later test on this
    control plane, which is shared by the whole run."""
    kinds = "validatingadmissionpolicybindings,validatingadmissionpolicies,clusterrolebindings,clusterroles"
    tools.kubectl("delete", kinds, "-l", f"app.kubernetes.io/instance={release}", "--ignore-not-found", check=False)


def cluster_objects(release: Release) -> list[tuple[str, str]]:
    """(resource, name) of every cluster-scoped object the release owns with default values."""
    return [
        *(("clusterroles", f"{release.fullname}-{r}") for r in ("operator", "agent", "viewer", "admin")),
        ("clusterrolebindings", f"{release.fullname}-operator"),
        *(
            (kind, f"{release.fullname}-{p}")
            for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings")
            for p in ("lockclaim-holder", "lockclaim-bounds", "operator-writes", "break-actor", "lock-token",
                      "lockclaim-priority", "revocation-request", "quota-ledger")
        ),
    ]


def test_install_creates_the_operator_and_its_cluster_objects(tools: Tools, release: Release) -> None:
    status = tools.helm("status", release.name, "--namespace", release.namespace, "-o", "json").stdout
    assert '"status":"deployed"' in status.replace(" ", "")
    operator = f"{release.fullname}-operator"
    for resource, name in (("deployment", operator), ("serviceaccount", operator), ("service", f"{operator}-metrics")):
        tools.kubectl("get", resource, name, "--namespace", release.namespace)
    for resource, name in cluster_objects(release):
        tools.kubectl("get", resource, name)
    # The release notes tell how to make a first claim.
    notes = tools.helm("get", "notes", release.name, "--namespace", release.namespace).stdout
    assert "kind: LockClaim" in notes
    assert "kubectl get locks" in notes
    assert "kubectl delete lockclaim" in notes


def _operator_args(tools: Tools, release: Release) -> list[str]:
    """The operator's flags as the installed Deployment has them."""
    deployment = tools.kubectl(
        "get", "deployment", f"{release.fullname}-operator", "--namespace", release.namespace, "-o", "json"
    ).stdout
    args: list[str] = json.loads(deployment)["spec"]["template"]["spec"]["containers"][0]["args"]
    return [a for a in args if not a.startswith(LOCAL_FLAGS)]


def _service_account_token(tools: Tools, release: Release) -> str:
    """A token of the chart's ServiceAccount (`kubectl create token` is a TokenRequest)."""
    account = f"{release.fullname}-operator"
    return tools.kubectl("create", "token", account, "--namespace", release.namespace, "--duration=1h").stdout.strip()


def _token_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    if isinstance(cluster, ControlPlane):
        return cluster.token_kubeconfig(token, path)
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    server = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [server],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": server["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    return path


def _bind(admin_api: ApiClient, namespace: str, user: str, cluster_role: str) -> None:
    RbacAuthorizationV1Api(admin_api).create_namespaced_role_binding(
        namespace,
        V1RoleBinding(
            metadata=V1ObjectMeta(name=f"{user}-{cluster_role}"),
            role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_role),
            subjects=[{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        ),
    )


ALICE, BOB = "user:alice/w1", "user:bob/w1"  # holders: <identity>/<instance>

def _claim_when_allowed(
    locks: Locks, name: str, resource: str, holder: str, timeout: float = MIN_WAIT_SECONDS
) -> None:
    """Creates a claim, retrying while RBAC has not yet seen a fresh RoleBinding."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            locks.claim(name, resource, holder)
            return
        except ApiException as error:
            if error.status != 403 or "cannot create resource" not in str(error.body) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _denied_by_ttl_bound(locks: Locks, holder: str) -> str:
    """The message of the chart's admission policy refusing a TTL above the release's maxTtlSeconds.

    The bed's copy of the policy allows 86400, so only the chart's (maxTtlSeconds=600) refuses 601.
    A policy takes a moment to load, so a claim that gets through meanwhile is deleted and retried.
    """
    deadline = time.monotonic() + MIN_WAIT_SECONDS  # a loaded API server loads policies late
    while time.monotonic() < deadline:
        try:
            locks.claim("too-long", "deploy://ttl-bound", holder, ttl=601)
        except ApiException as error:
            return str(error.body)
        locks.delete("too-long")
        time.sleep(0.2)
    raise AssertionError(f"a claim with ttlSeconds 601 was accepted for {MIN_WAIT_SECONDS:.0f} s (maxTtlSeconds=600)")


def test_operator_with_the_chart_identity_grants_conflicts_releases_and_breaks(
    tools: Tools, release: Release, control_plane: Cluster, admin_api: ApiClient, user_api: UserApi, tmp_path: Path
) -> None:
    ns = release.locks_namespace
    # People and agents get rights only through the chart's ClusterRoles.
    for user, role in (("alice", "agent"), ("bob", "agent"), ("viewer", "viewer"), ("lockadmin", "admin")):
        _bind(admin_api, ns, user, f"{release.fullname}-{role}")
    alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns)
    viewer, lockadmin = Locks(user_api("viewer"), ns), Locks(user_api("lockadmin"), ns)

    # The operator runs with the flags the chart renders and exactly the chart's ServiceAccount.
    kubeconfig = _token_kubeconfig(
        control_plane, _service_account_token(tools, release), tmp_path / "operator.kubeconfig"
    )
    args = _operator_args(tools, release)
    assert f"--namespace={ns}" in args
    assert "--max-ttl-seconds=600" in args
    with OperatorProcess(kubeconfig, tmp_path / "operator.log", extra_args=tuple(args)) as operator:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5) as health:
            assert health.status == 200  # what the chart's probes ask

        # Grant.
        _claim_when_allowed(alice, "alice-42", "github://acme/app/issues/42", ALICE)
        held = status_of(alice.wait_phase("alice-42", "Held"))
        assert held["holder"] == ALICE
        assert alice.lock(held["lockName"])["spec"]["holder"] == ALICE
        # The default lease is the release's resourceLockTimeout.
        assert alice.lock(held["lockName"])["spec"]["leaseDurationSeconds"] == 300

        # Conflict: a try-lock by another holder is rejected and names the holder.
        _claim_when_allowed(bob, "bob-42", "github://acme/app/issues/42", BOB)
        rejected = status_of(bob.wait_phase("bob-42", "Rejected"))
        assert rejected["holder"] == ALICE

        # Viewers read, and may not claim.
        assert {c["metadata"]["name"] for c in viewer.claims()} == {"alice-42", "bob-42"}
        with pytest.raises(ApiException) as forbidden:
            viewer.claim("viewer-42", "github://acme/app/issues/42", "user:viewer/v1")
        assert forbidden.value.status == 403

        # The chart's admission policy carries the release's maxTtlSeconds.
        assert "exceeds maxTtlSeconds 600" in _denied_by_ttl_bound(alice, ALICE)

        # Release: deleting the claim deletes the lock; the next claim gets a greater token.
        alice.delete("alice-42")
        wait_for(lambda: not alice.locks(), "the lock of alice-42 to be deleted")
        bob.delete("bob-42")
        _claim_when_allowed(bob, "bob-42b", "github://acme/app/issues/42", BOB)
        regranted = status_of(bob.wait_phase("bob-42b", "Held"))
        assert regranted["fencingToken"] > held["fencingToken"]

        # Break: a lock admin records who and why, then deletes the ResourceLock; the holder's claim is
        # revoked.
        # The record carries the lock's token (the chart's kubelock-lock-token policy requires it).
        record = {"kubelock.dev/broken-by": "lockadmin", "kubelock.dev/break-reason": "chart test"}
        token = lock_token(lockadmin.lock(regranted["lockName"]))
        assert token == regranted["fencingToken"]
        lockadmin.api.patch_namespaced_custom_object(
            "kubelock.dev", "v1alpha1", lockadmin.namespace, "resourcelocks", regranted["lockName"],
            {"metadata": {"annotations": record}, "spec": {"fencingToken": token}},
        )
        lockadmin.delete_lock(regranted["lockName"])
        revoked = status_of(bob.wait_phase("bob-42b", "Revoked"))
        assert revoked["reason"] == "LockBroken"
        assert phase_of(bob.get("bob-42b")) == "Revoked"

        log = operator.log_text()
    assert "Forbidden" not in log, "the chart's operator role lacks a permission:\n" + log[-3000:]


def _namespaced_leftovers(tools: Tools, namespace: str) -> list[str]:
    resources = tools.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    # Events are records about objects, not objects a release owns.
    resources = [r for r in resources if r not in ("events", "events.events.k8s.io")]
    out = tools.kubectl("get", ",".join(resources), "--namespace", namespace, "-o", "name", "--ignore-not-found")
    # What Kubernetes itself puts in every namespace.
    expected = {"serviceaccount/default", "configmap/kube-root-ca.crt"}
    return [line for line in out.stdout.split() if line not in expected]


def test_uninstall_leaves_nothing_behind(tools: Tools, release: Release) -> None:
    # Runs after the tests above (file order); the fixture's own uninstall then finds nothing.
    crd_uids = {crd: _crd_uid(tools, crd) for crd in CRDS}
    tools.helm("uninstall", release.name, "--namespace", release.namespace, "--wait")
    assert _namespaced_leftovers(tools, release.namespace) == []
    for resource, name in cluster_objects(release):
        result = tools.kubectl("get", resource, name, "--ignore-not-found", "-o", "name")
        assert result.stdout.strip() == "", f"{resource}/{name} outlived helm uninstall"
    assert tools.helm("list", "--namespace", release.namespace, "-q").stdout.strip() == ""
    # The release did not install the CRDs, so it left them alone; the claims are still records.
    assert {crd: _crd_uid(tools, crd) for crd in CRDS} == crd_uids
    remaining = json.loads(
        tools.kubectl("get", "lockclaims", "--namespace", release.locks_namespace, "-o", "json").stdout
    )
    assert {c["metadata"]["name"] for c in remaining["items"]} == {"bob-42b"}


# ---- crds.keep ----------------------------------------------------------------------------------


def _crd_uid(tools: Tools, name: str) -> str:
    return tools.kubectl("get", "crd", name, "-o", "jsonpath={.metadata.uid}").stdout


def _restore_crds(tools: Tools) -> None:
    """Puts the bed's CRDs back as they were, whatever the test did to them."""
    present = tools.kubectl("get", "crd", *CRDS, "-o", "name", "--ignore-not-found").stdout.split()
    if len(present) < len(CRDS):
        tools.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=kubelock-testbed",
                      "-f", str(REPO / "crds"))  # fmt: skip
        tools.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS))
        return
    for crd in CRDS:  # drop the ownership marks of the uninstalled release
        tools.kubectl("annotate", "crd", crd, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-",
                      "helm.sh/resource-policy-", check=False)  # fmt: skip
        tools.kubectl("label", "crd", crd, "app.kubernetes.io/managed-by-", "helm.sh/chart-",
                      "app.kubernetes.io/instance-", check=False)  # fmt: skip


def test_crds_are_kept_on_uninstall(tools: Tools, admin_api: ApiClient, scratch_namespace: str) -> None:
    name = f"{PREFIX}{secrets.token_hex(4)}"
    namespace = _create_namespace(admin_api, name)
    locks = Locks(admin_api, scratch_namespace)
    locks.claim("survivor", "deploy://keep", "agent-a")
    uids = {crd: _crd_uid(tools, crd) for crd in CRDS}
    try:
        # The CRDs exist already (the bed applied them), so the release takes them over; only the
        # CRDs matter here, the rest of the chart is switched off.
        tools.helm(
            "install", name, str(CHART), "--namespace", namespace, "--take-ownership",
            "--set", "crds.install=true", "--set", "crds.keep=true",
            "--set", "rbac.create=false", "--set", "rbac.userRoles=false", "--set", "admission.enabled=false",
            "--set", "metrics.enabled=false", "--set", "replicaCount=0",
        )  # fmt: skip
        for crd in CRDS:
            owner = tools.kubectl(
                "get", "crd", crd, "-o", "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}"
            )
            assert owner.stdout == name, f"{crd} was not taken into the release"
        tools.helm("uninstall", name, "--namespace", namespace, "--wait")
        assert {crd: _crd_uid(tools, crd) for crd in CRDS} == uids, "the CRDs were deleted despite crds.keep"
        assert locks.get("survivor")["spec"]["resource"] == "deploy://keep"
        assert _namespaced_leftovers(tools, namespace) == []
    finally:
        tools.helm("uninstall", name, "--namespace", namespace, "--ignore-not-found", "--wait", check=False)
        _restore_crds(tools)
        _delete_namespace(admin_api, namespace)
