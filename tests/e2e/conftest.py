"""End-to-end tests: kubelock installed the way users install it, with agents in real containers.

They run on one of two clusters, chosen at collection time:

* **a real test-bed node** (``ControlPlane(node=True)``: kubelet, containerd, kube-proxy on this
  machine, see :mod:`kubelock.testbed.node`), where the machine allows it (Linux, root, ``make
  node-tools``); the operator and agent images are built without a container engine
  (:mod:`kubelock.testbed.images`) and imported into the node;
* **kind** (pytest-kind) where a Docker engine answers; the images are built from the Dockerfile.

Set ``KUBELOCK_E2E_BACKEND=kind`` or ``=node`` to choose. Where neither can run, the tests are
skipped with the reason — except under CI (``CI`` set), where that is a failure: the tier must run.

The cluster is shared by every test of the tier but the token test (test_operator_token.py): its
scenario waits 11 minutes for the operator's token to expire, so it runs on a second cluster, started
with the tier's first test, and the token test runs last (see tests/e2e/token_rotation.py). Both
clusters are torn down after the tier's last test, before the tiers that follow it in the session.

pytest-kind's own options apply to the kind path: `--cluster-name` (default here: kubelock-e2e),
`--keep-cluster`, `--kubeconfig`, `--kind-image`, `--kind-bin`; the token test's cluster is named
after the first with `-token` appended (and so is its `--kubeconfig` path).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import pytest
import pytest_kind.cluster
from kubernetes.client import ApiClient
from pytest_kind import KindCluster

from kubelock.testbed import ControlPlane, MissingBinariesError, find_binaries
from kubelock.testbed import images as image_builder
from kubelock.testbed.node import RealNode, node_problem
from tests.e2e.agents import agents_namespace
from tests.e2e.token_rotation import LIFETIME, TokenRotation
from tests.e2e.tools import E2E_DIR, RELEASE, RELEASE_NAMESPACE, REPO, REPORT, Tools

# pytest-kind 22.11 defaults to kind v0.17 (Kubernetes 1.25); the chart needs 1.30 or newer.
KIND_VERSION = "v0.29.0"
DEFAULT_CLUSTER_NAME = "kubelock-e2e"
OPERATOR_IMAGE = os.environ.get("KUBELOCK_E2E_IMAGE", "localhost/kubelock:dev")
AGENT_IMAGE = os.environ.get("KUBELOCK_E2E_AGENT_IMAGE", "localhost/kubelock-agent:dev")
SETUP_TIMEOUT = 1800
#: Checks a scenario started on a cluster of its own when the tier begins (tests/e2e/token_rotation.py),
#: so it runs last, when the other tests have taken up most of the scenario's wait.
TOKEN_TEST = E2E_DIR / "test_operator_token.py"


@functools.cache
def docker_problem() -> str | None:
    """Why Docker cannot be used here, or None when it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker command is not installed"
    try:
        result = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return f"`docker info` failed: {lines[-1] if lines else f'exit code {result.returncode}'}"
    return None


@functools.cache
def backend() -> tuple[str | None, str]:
    """("node" | "kind" | None, why)."""
    chosen = os.environ.get("KUBELOCK_E2E_BACKEND", "")
    node = node_problem()
    docker = docker_problem()
    if chosen == "kind" or (not chosen and docker is None and node is not None):
        return ("kind", "") if docker is None else (None, f"kind needs a Docker engine: {docker}")
    if node is None:
        return "node", ""
    return None, f"no real node ({node}) and no Docker engine ({docker})"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tests on a real node or kind (tests/e2e)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if E2E_DIR in item.path.parents]
    if not ours:
        return
    # The token test last among the end-to-end tests (which stay where they were in the session).
    places = [i for i, item in enumerate(items) if E2E_DIR in item.path.parents]
    for i, item in zip(places, sorted(ours, key=lambda item: item.path == TOKEN_TEST), strict=True):
        items[i] = item
    name, why = backend()
    for item in ours:
        item.add_marker(pytest.mark.e2e)
        # The first test's setup builds the images and starts the clusters and the token scenario
        # (minutes on a cold cache and a busy machine).
        item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))
        if name is None and not os.environ.get("CI"):
            item.add_marker(pytest.mark.skip(reason=f"end-to-end tests cannot run here: {why}"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("end-to-end cluster")
        for line in REPORT:
            terminalreporter.write_line(line)


@dataclass
class E2ECluster:
    """The cluster the end-to-end tests run on, with the operator and agent images loaded."""

    backend: str
    tools: Tools
    operator_image: str
    agent_image: str
    #: Gives an image already in the cluster another name, as `docker tag` + `kind load` would.
    tag_image: Callable[[str, str], None]
    #: The test bed's real node (the node backend only): what a test powers off and boots.
    node: RealNode | None = None
    apis: list[ApiClient] = field(default_factory=list)

    def api(self) -> ApiClient:
        client: ApiClient = kubernetes.config.new_client_from_config(config_file=str(self.tools.kubeconfig))  # type: ignore[no-untyped-call]
        self.apis.append(client)
        return client


def _timed(what: str, action: Callable[[], Path]) -> Path:
    began = time.monotonic()
    result = action()
    REPORT.append(f"{what}: {result.name}, {result.stat().st_size / 1e6:.0f} MB, {time.monotonic() - began:.0f} s")
    return result


@functools.cache
def _node_images() -> tuple[Path, Path]:
    """The operator and agent image archives, built once for every cluster of the tier."""
    build = REPO / "build" / "images"
    operator = _timed(
        f"operator image {OPERATOR_IMAGE} (built or reused)",
        lambda: image_builder.app_image(image_builder.OPERATOR, source=REPO, out_dir=build, tag=OPERATOR_IMAGE),
    )
    agent = _timed(
        f"agent image {AGENT_IMAGE} (built or reused)",
        lambda: image_builder.app_image(image_builder.AGENT, source=REPO, out_dir=build, tag=AGENT_IMAGE),
    )
    return operator, agent


@contextlib.contextmanager
def _node_cluster(workdir: Path, purpose: str) -> Iterator[E2ECluster]:
    images = _node_images()
    # An empty cluster, as a user's would be: the chart brings the CRDs, roles and policies.
    with ControlPlane(workdir, kwok=False, node=True) as plane:
        REPORT.append(
            f"{purpose}: test-bed node {plane.node.name} ({plane.node.network.pod_cidr}) ready in "
            f"{plane.startup_seconds:.1f} s"
        )
        began = time.monotonic()
        for archive in images:
            plane.node.import_image(archive)
        REPORT.append(f"{purpose}: images imported into the node's containerd in {time.monotonic() - began:.0f} s")
        cluster = E2ECluster("node", Tools(plane.bin_dir, plane.kubeconfig), OPERATOR_IMAGE, AGENT_IMAGE,
                             plane.node.tag_image, plane.node)  # fmt: skip
        try:
            yield cluster
        finally:
            for api in cluster.apis:
                api.close()  # type: ignore[no-untyped-call]


@functools.cache
def _docker_images() -> None:
    """The operator and agent images in the Docker engine, built once for every kind cluster of the tier."""
    for tag, requirement in ((OPERATOR_IMAGE, ".[operator]"), (AGENT_IMAGE, ".")):
        subprocess.run(["docker", "build", "--build-arg", f"REQUIREMENT={requirement}", "--tag", tag, str(REPO)],
                       check=True, timeout=1800)  # fmt: skip


@contextlib.contextmanager
def _kind_cluster(request: pytest.FixtureRequest, suffix: str) -> Iterator[E2ECluster]:
    if not os.environ.get("KIND_VERSION"):
        pytest_kind.cluster.KIND_VERSION = KIND_VERSION  # read when the kind binary is named and fetched
    name = request.config.getoption("cluster_name")
    kubeconfig = request.config.getoption("kubeconfig")
    kind_bin = request.config.getoption("kind_bin")
    kind = KindCluster(
        (DEFAULT_CLUSTER_NAME if name == "pytest-kind" else name) + suffix,
        Path(f"{kubeconfig}{suffix}") if kubeconfig else None,
        image=request.config.getoption("kind_image"),
        kind_path=Path(kind_bin) if kind_bin else None,
    )
    kind.create()
    try:
        try:
            bin_dir = find_binaries(("helm", "kubectl"), kwok_stages=False)
        except MissingBinariesError as error:
            pytest.fail(str(error), pytrace=False)
        _docker_images()
        for tag in (OPERATOR_IMAGE, AGENT_IMAGE):
            kind.load_docker_image(tag)

        def tag_image(source: str, target: str) -> None:
            subprocess.run(["docker", "tag", source, target], check=True)
            kind.load_docker_image(target)

        yield E2ECluster("kind", Tools(bin_dir, Path(kind.kubeconfig_path).resolve()), OPERATOR_IMAGE, AGENT_IMAGE,
                         tag_image)  # fmt: skip
    finally:
        if not request.config.getoption("keep_cluster"):
            kind.delete()


def _cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, purpose: str
) -> contextlib.AbstractContextManager[E2ECluster]:
    """A new cluster; `purpose` names it ("" for the tier's own)."""
    name, why = backend()
    if name is None:
        pytest.fail(f"end-to-end tests must run under CI, but cannot here: {why}", pytrace=False)
    if name == "node":
        return _node_cluster(tmp_path_factory.mktemp(f"e2e{purpose}"), purpose or "cluster")
    return _kind_cluster(request, f"-{purpose}" if purpose else "")


# The fixtures holding a cluster are package-scoped: torn down after the last end-to-end test, not at
# the end of the session (pytest runs tests/e2e before tests/integration and tests/unit).
@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    with _cluster(request, tmp_path_factory, "") as found:
        yield found


@pytest.fixture(scope="package")
def token_rotation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRotation]:
    """The token-rotation scenario, on a cluster of its own (see tests/e2e/token_rotation.py)."""
    rotation = TokenRotation()
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(_cluster(request, tmp_path_factory, "token"))
            agents = stack.enter_context(agents_namespace(cluster.tools, cluster.agent_image, "token"))
            rotation.start(agents, helm_install_args(cluster, f"serviceAccount.tokenExpirationSeconds={LIFETIME}"))
        except (Exception, pytest.fail.Exception) as error:
            rotation.failure = error  # raised by the token test, not by the test that started the scenario
        yield rotation


@pytest.fixture(scope="package", autouse=True)
def _token_rotation_started_early(request: pytest.FixtureRequest) -> None:
    """Starts the token-rotation scenario with the tier's first test, when the token test is to run."""
    if any(item.path == TOKEN_TEST for item in request.session.items):
        request.getfixturevalue("token_rotation")


@pytest.fixture
def cluster_of_its_own(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[E2ECluster]:
    """A node cluster for one test that harms its node (powers it off): the tier's others keep theirs."""
    if backend()[0] != "node":
        pytest.skip("powering a node off needs the test bed's real node (KUBELOCK_E2E_BACKEND=node)")
    with _cluster(request, tmp_path_factory, "own") as found:
        yield found


@pytest.fixture(scope="package")
def tools(cluster: E2ECluster) -> Tools:
    return cluster.tools


@pytest.fixture(scope="package")
def image(cluster: E2ECluster) -> str:
    """The agent image: the SDK and the CLI."""
    return cluster.agent_image


def helm_install_args(cluster: E2ECluster, *sets: str) -> list[str]:
    repository, _, tag = cluster.operator_image.rpartition(":")
    args = [
        "upgrade", "--install", RELEASE, str(REPO / "charts" / "kubelock"),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never",  # loaded into the node, in no registry
        "--wait", "--timeout", "5m",
    ]  # fmt: skip
    for value in sets:
        args += ["--set", value]
    return args


@pytest.fixture(scope="package")
def kubelock(cluster: E2ECluster) -> Iterator[str]:
    """The chart installed as release `kubelock` in kubelock-system, its operator Ready."""
    tools = cluster.tools
    began = time.monotonic()
    tools.helm(*helm_install_args(cluster))
    pods = json.loads(tools.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "json"))["items"]
    for pod in pods:
        ready = [c["ready"] for c in pod["status"].get("containerStatuses", [])]
        REPORT.append(
            f"operator pod {pod['metadata']['name']}: phase {pod['status']['phase']}, ready {ready}, "
            f"image {pod['spec']['containers'][0]['image']}, node {pod['spec'].get('nodeName')} "
            f"(helm install --wait took {time.monotonic() - began:.0f} s)"
        )
    yield RELEASE_NAMESPACE
    tools.run("helm", "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--ignore-not-found", "--wait")
