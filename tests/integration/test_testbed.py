"""The test bed is a real cluster: CRDs served, pods run on kwok nodes, tokens authenticate,
garbage collection and namespace deletion happen, and the built kubectl talks to it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    ApiException,
    ApiextensionsV1Api,
    AuthenticationV1Api,
    CoreV1Api,
    V1ConfigMap,
    V1Container,
    V1ObjectMeta,
    V1OwnerReference,
    V1Pod,
    V1PodSpec,
    V1SelfSubjectReview,
    V1UserInfo,
)

from kubelock.testbed import DEFAULT_USERS, ControlPlane, find_binaries, wait_until

# The fixtures' types (their Protocols live in conftest.py, which tests do not import).
Cluster = Any  # ControlPlane, or conftest.ExistingCluster for KUBELOCK_TEST_KUBECONFIG
SaApi = Callable[..., ApiClient]
SaToken = Callable[..., str]
UserApi = Callable[[str], ApiClient]

# Generous for 2 loaded cores (kwok's pod phases, the namespace controller's deletion of every
# resource kind); every wait polls and returns as soon as the state is reached.
DEADLINE = 120.0
# The garbage collector learns the resources it tracks from discovery after it starts.
GC_DEADLINE = 120.0
POD_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok only pretends to run it


def whoami(api: ApiClient) -> V1UserInfo:
    """The requester's identity as the API server sees it (SelfSubjectReview)."""
    status = AuthenticationV1Api(api).create_self_subject_review(V1SelfSubjectReview()).status
    assert status is not None
    assert status.user_info is not None
    return status.user_info


def gone(read: Callable[..., object], *args: str) -> bool:
    try:
        read(*args)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def new_pod(name: str, **spec: str) -> V1Pod:
    containers = [V1Container(name="main", image=POD_IMAGE)]
    return V1Pod(metadata=V1ObjectMeta(name=name), spec=V1PodSpec(containers=containers, **spec))


def pod_phase(core: CoreV1Api, name: str, namespace: str) -> str | None:
    status = core.read_namespaced_pod(name, namespace).status
    return status.phase if status else None


def config_map(name: str, *owners: V1OwnerReference) -> V1ConfigMap:
    return V1ConfigMap(metadata=V1ObjectMeta(name=name, owner_references=list(owners) or None))


@pytest.mark.parametrize(
    "crd", ["lockclaims.kubelock.dev", "resourcelocks.kubelock.dev", "lockpolicies.kubelock.dev"]
)
def test_crd_is_established(admin_api: ApiClient, crd: str) -> None:
    status = ApiextensionsV1Api(admin_api).read_custom_resource_definition(crd).status
    conditions = status.conditions if status and status.conditions else []
    assert {c.type: c.status for c in conditions}.get("Established") == "True"


def test_pod_on_fake_node_runs_and_is_deleted(admin_api: ApiClient, namespace: str, fake_node: str) -> None:
    core = CoreV1Api(admin_api)
    core.create_namespaced_pod(namespace, new_pod("worker", node_name=fake_node))

    wait_until(
        lambda: pod_phase(core, "worker", namespace) == "Running",
        what="pod worker to be Running",
        timeout=DEADLINE,
    )
    core.delete_namespaced_pod("worker", namespace)
    wait_until(lambda: gone(core.read_namespaced_pod, "worker", namespace), what="pod worker gone", timeout=DEADLINE)


def test_service_account_token_authenticates(namespace: str, sa_api: SaApi) -> None:
    user = whoami(sa_api(namespace, "agent"))

    assert user.username == f"system:serviceaccount:{namespace}:agent"
    assert f"system:serviceaccounts:{namespace}" in (user.groups or [])


def test_pod_bound_token_names_its_pod(admin_api: ApiClient, namespace: str, sa_api: SaApi, sa_token: SaToken) -> None:
    sa_token(namespace, "agent")  # creates the ServiceAccount the pod runs as
    pod = CoreV1Api(admin_api).create_namespaced_pod(namespace, new_pod("agent-0", service_account_name="agent"))
    assert pod.metadata is not None

    extra = whoami(sa_api(namespace, "agent", pod=pod)).extra or {}

    assert extra["authentication.kubernetes.io/pod-name"] == ["agent-0"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]


@pytest.mark.parametrize("name", DEFAULT_USERS)
def test_static_user_authenticates_without_rights(user_api: UserApi, name: str) -> None:
    api = user_api(name)

    user = whoami(api)
    assert user.username == name
    assert "system:authenticated" in (user.groups or [])
    with pytest.raises(ApiException) as denied:
        CoreV1Api(api).list_namespace()
    assert denied.value.status == 403


def test_garbage_collector_deletes_dependents(admin_api: ApiClient, namespace: str) -> None:
    core = CoreV1Api(admin_api)
    owner = core.create_namespaced_config_map(namespace, config_map("owner"))
    assert owner.metadata is not None
    assert owner.metadata.uid is not None
    owned_by = V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(namespace, config_map("dependent", owned_by))

    core.delete_namespaced_config_map("owner", namespace)

    wait_until(
        lambda: gone(core.read_namespaced_config_map, "dependent", namespace),
        what="the dependent ConfigMap to be collected",
        timeout=GC_DEADLINE,
    )


def test_namespace_deletion_completes(admin_api: ApiClient, namespace: str) -> None:
    core = CoreV1Api(admin_api)
    core.create_namespaced_config_map(namespace, config_map("content"))

    core.delete_namespace(namespace)

    wait_until(lambda: gone(core.read_namespace, namespace), what=f"namespace {namespace} gone", timeout=DEADLINE)


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    executable = find_binaries(["kubectl"]) / "kubectl"
    return subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=60, check=True)


def test_admin_kubeconfig_works_with_built_kubectl(control_plane: Cluster) -> None:
    version = json.loads(kubectl("--kubeconfig", str(control_plane.kubeconfig), "version", "-o", "json").stdout)

    assert version["serverVersion"]["gitVersion"].startswith("v1.36.")


def test_token_kubeconfig_works_with_built_kubectl(
    control_plane: Cluster, namespace: str, sa_token: SaToken, tmp_path: Path
) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("token kubeconfigs are written by the local control plane only")
    kubeconfig = control_plane.token_kubeconfig(sa_token(namespace, "agent"), tmp_path / "kubeconfig", namespace)

    review = json.loads(kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json").stdout)

    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:agent"
