"""Fixtures for tests against a real API server: the control plane, admin and user clients, a
namespace per test, ServiceAccount tokens and a fake (kwok) node.

By default one :class:`~kubelock.testbed.ControlPlane` is started per session in a temporary
directory (binaries from ``make tools``, see :func:`kubelock.testbed.find_binaries`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import kubernetes
import pytest
from kubernetes.client import (
    ApiClient,
    ApiException,
    AuthenticationV1TokenRequest,
    CoreV1Api,
    V1BoundObjectReference,
    V1Namespace,
    V1Node,
    V1ObjectMeta,
    V1Pod,
    V1TokenRequestSpec,
)

from kubelock.testbed import ControlPlane, MissingBinariesError, fake_node_manifest, node_is_ready, wait_until
from tests.support.access import bearer_client, ensure_service_account
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition

KUBECONFIG_ENV = "KUBELOCK_TEST_KUBECONFIG"
MANIFESTS = ("crds", "config/rbac", "config/admission")
FAKE_NODE = "kl-kwok-node"
TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class ExistingCluster:
    """A cluster somebody else runs, named by ``KUBELOCK_TEST_KUBECONFIG``."""

    kubeconfig: Path
    startup_seconds: float | None = None


Cluster = ControlPlane | ExistingCluster


class UserApi(Protocol):
    def __call__(self, name: str) -> ApiClient: ...


class SaToken(Protocol):
    def __call__(self, namespace: str, sa_name: str, pod: V1Pod | str | None = None) -> str: ...


class SaApi(Protocol):
    def __call__(self, namespace: str, sa_name: str, pod: V1Pod | str | None = None) -> ApiClient: ...


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, repo_root: Path
) -> Iterator[Cluster]:
    """The cluster under test, for the whole session.

    If ``KUBELOCK_TEST_KUBECONFIG`` names a kubeconfig, that cluster is used as it is and nothing is
    started. It must already have what the bed would install: the CRDs from ``crds/``, the roles in
    ``config/rbac/`` and the policies in ``config/admission/`` (``kubectl apply --server-side -f`` each),
    a garbage collector and namespace controller (any real cluster has them) and, for tests that run
    pods, kwok managing nodes annotated ``kwok.x-k8s.io/node=fake``. The kubeconfig's user must be
    allowed to impersonate, since the static test users only exist in the bed.
    """
    existing = os.environ.get(KUBECONFIG_ENV)
    if existing:
        yield ExistingCluster(kubeconfig=Path(existing))
        return
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), manifests=[repo_root / m for m in MANIFESTS])
    try:
        plane.start()
    except MissingBinariesError as error:
        pytest.fail(str(error), pytrace=False)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in plane.phase_seconds.items())
    _report(request.config, f"control plane started in {plane.startup_seconds:.1f} s ({phases}); {plane.workdir}")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(autouse=True)
def _control_plane_outlives_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test during which the session's control plane lost a process, naming the process and
    quoting its log: the tests after it would otherwise fail with "connection refused" and no cause."""
    yield
    if "control_plane" not in request.fixturenames:
        return
    plane = request.getfixturevalue("control_plane")
    if isinstance(plane, ControlPlane) and (exited := plane.exited()):
        pytest.fail("the session's control plane lost a process during this test: " + "\n".join(exited))


@pytest.fixture(scope="session")
def admin_api(control_plane: Cluster) -> Iterator[ApiClient]:
    """An API client with the admin's credentials (member of system:masters in the bed)."""
    api = client_from_kubeconfig(control_plane.kubeconfig)
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(admin_api: ApiClient) -> Iterator[str]:
    """A fresh namespace ``kl-<random>``, deleted after the test (without waiting for it to go)."""
    name = f"kl-{secrets.token_hex(4)}"
    core = CoreV1Api(admin_api)
    core.create_namespace(
        V1Namespace(metadata=V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "kubelock"}))
    )
    yield name
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)


@pytest.fixture
def iso_ns(admin_api: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace no shared operator watches (it has no kubelock label): the test runs its own
    operator there, and may count its requests. Named after the test module: `kl-hot-path-<random>`."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    with temporary_namespace(admin_api, f"kl-{module}-") as name:
        yield name


@pytest.fixture(scope="module")
def prefix_operator(
    request: pytest.FixtureRequest, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator of the test module's own, serving only the namespaces whose names begin with the
    module's ``PREFIX`` (made by ``temporary_namespace(admin_api, PREFIX)``): a test may stop it or
    measure its process without touching another module's claims."""
    prefix: str = request.module.PREFIX
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{prefix}*",)) as op:
        yield op


@pytest.fixture
def user_api(control_plane: Cluster) -> Iterator[UserApi]:
    """``user_api(name)``: a client acting as a static user (alice, bob, carol, viewer, lockadmin).

    The users have no rights until a test binds a role to them. In the bed they authenticate with
    their bearer token; on an existing cluster the admin impersonates them.
    """
    clients: list[ApiClient] = []

    def make(name: str) -> ApiClient:
        if isinstance(control_plane, ControlPlane):
            api = client_from_kubeconfig(control_plane.user_kubeconfig(name))
        else:
            api = client_from_kubeconfig(control_plane.kubeconfig)
            api.default_headers["Impersonate-User"] = name
            api.default_headers["Impersonate-Group"] = "system:authenticated"
        clients.append(api)
        return api

    yield make
    for api in clients:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def sa_token(admin_api: ApiClient) -> SaToken:
    """``sa_token(namespace, sa_name, pod=None)``: a real ServiceAccount token from TokenRequest.

    The ServiceAccount is created if missing. With ``pod`` (a V1Pod or a pod name) the token is bound
    to that pod, which must run as the ServiceAccount, and carries its name and uid.
    """

    def make(namespace: str, sa_name: str, pod: V1Pod | str | None = None) -> str:
        core = CoreV1Api(admin_api)
        ensure_service_account(core, namespace, sa_name)
        if isinstance(pod, str):
            pod = core.read_namespaced_pod(pod, namespace)
        spec = V1TokenRequestSpec(
            audiences=[],  # the API server's own
            expiration_seconds=TOKEN_SECONDS,
            bound_object_ref=None if pod is None else _pod_reference(pod),
        )
        response = core.create_namespaced_service_account_token(
            sa_name, namespace, AuthenticationV1TokenRequest(spec=spec)
        )
        assert response.status is not None
        assert response.status.token
        return response.status.token

    return make


@pytest.fixture
def sa_api(control_plane: Cluster, sa_token: SaToken) -> Iterator[SaApi]:
    """``sa_api(namespace, sa_name, pod=None)``: a client authenticating with :func:`sa_token`'s token."""
    clients: list[ApiClient] = []

    def make(namespace: str, sa_name: str, pod: V1Pod | str | None = None) -> ApiClient:
        api = bearer_client(control_plane.kubeconfig, sa_token(namespace, sa_name, pod))
        clients.append(api)
        return api

    yield make
    for api in clients:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def fake_node(control_plane: Cluster, admin_api: ApiClient) -> str:
    """The name of a Ready kwok node: pods with ``spec.nodeName`` set to it reach Running."""
    if isinstance(control_plane, ControlPlane):
        return control_plane.create_fake_node(FAKE_NODE)
    core = CoreV1Api(admin_api)
    with contextlib.suppress(ApiException):  # left over from an earlier session: reuse it
        core.create_node(V1Node.model_validate(fake_node_manifest(FAKE_NODE)))
    wait_until(
        lambda: node_is_ready(core.read_node(FAKE_NODE).to_dict()),
        what=f"node {FAKE_NODE} to become Ready (is kwok running?)",
        timeout=30,
    )
    return FAKE_NODE


def _pod_reference(pod: V1Pod) -> V1BoundObjectReference:
    assert pod.metadata is not None
    return V1BoundObjectReference(kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid)


def client_from_kubeconfig(kubeconfig: Path) -> ApiClient:
    api: ApiClient = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return api


def _report(config: pytest.Config, message: str) -> None:
    # Around output capturing, which is active while fixtures are set up.
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{message}", flush=True)


@pytest.fixture
def partition(control_plane: Cluster) -> Iterator[Partition]:
    """A forwarder to the test bed's API server (tests.support.partition) that the test silences or
    cuts; whoever should be cut off is given a kubeconfig pointing at it (`kubeconfig_for`)."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's API server address")
    forwarder = Partition(control_plane.server)
    yield forwarder
    forwarder.cut()
