"""End-to-end tests on a kind cluster (pytest-kind). They need a Docker engine: where `docker info`
fails, every test here is skipped at collection time, with the reason, before pytest-kind downloads
anything.

pytest-kind's own options apply: `--cluster-name` (default here: kubelock-e2e), `--keep-cluster`,
`--kubeconfig`, `--kind-image`, `--kind-bin`. helm and kubectl come from `make tools`
(hack/install-binaries.sh), not from pytest-kind's downloads.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_kind.cluster
from pytest_kind import KindCluster

from kubelock.testbed import MissingBinariesError, find_binaries
from tests.e2e.kind import E2E_DIR, REPO, Tools

# pytest-kind 22.11 defaults to kind v0.17 (Kubernetes 1.25); the chart needs 1.30 or newer.
KIND_VERSION = "v0.29.0"
DEFAULT_CLUSTER_NAME = "kubelock-e2e"
IMAGE = os.environ.get("KUBELOCK_E2E_IMAGE", "kubelock:e2e")


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs Docker and creates a kind cluster (tests/e2e)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if E2E_DIR in item.path.parents]
    if not ours:
        return
    problem = docker_problem()
    for item in ours:
        item.add_marker(pytest.mark.e2e)
        if problem:
            item.add_marker(pytest.mark.skip(reason=f"end-to-end tests need a Docker engine: {problem}"))


@pytest.fixture(scope="session")
def kind_cluster(request: pytest.FixtureRequest) -> Iterator[KindCluster]:
    """pytest-kind's cluster, with a kind recent enough for the chart's kubeVersion."""
    if not os.environ.get("KIND_VERSION"):
        pytest_kind.cluster.KIND_VERSION = KIND_VERSION  # read when the kind binary is named and fetched
    name = request.config.getoption("cluster_name")
    kubeconfig = request.config.getoption("kubeconfig")
    kind_bin = request.config.getoption("kind_bin")
    cluster = KindCluster(
        DEFAULT_CLUSTER_NAME if name == "pytest-kind" else name,
        Path(kubeconfig) if kubeconfig else None,
        image=request.config.getoption("kind_image"),
        kind_path=Path(kind_bin) if kind_bin else None,
    )
    cluster.create()
    yield cluster
    if not request.config.getoption("keep_cluster"):
        cluster.delete()


@pytest.fixture(scope="session")
def tools(kind_cluster: KindCluster) -> Tools:
    try:
        bin_dir = find_binaries(("helm", "kubectl"), kwok_stages=False)
    except MissingBinariesError as error:
        pytest.fail(str(error), pytrace=False)
    return Tools(bin_dir, Path(kind_cluster.kubeconfig_path).resolve())


@pytest.fixture(scope="session")
def image(kind_cluster: KindCluster) -> str:
    """The operator image, built from the repository's Dockerfile and loaded into the kind nodes."""
    subprocess.run(["docker", "build", "--tag", IMAGE, str(REPO)], check=True, timeout=1800)
    kind_cluster.load_docker_image(IMAGE)
    return IMAGE


@pytest.fixture(scope="session")
def kubelock(tools: Tools, image: str) -> Iterator[str]:
    """The chart installed as release `kubelock` in kubelock-system, its operator ready."""
    repository, _, tag = image.rpartition(":")
    namespace = "kubelock-system"
    tools.helm(
        "upgrade", "--install", "kubelock", str(REPO / "charts" / "kubelock"),
        "--namespace", namespace, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never",  # loaded into the nodes, in no registry
        "--set", "replicaCount=2",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    yield namespace
    tools.helm("uninstall", "kubelock", "--namespace", namespace, "--wait")
