"""A control plane of a test module's own (a bed with quotas, etcd members, workloads ...)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient

from kubelock.testbed import ControlPlane, MissingBinariesError
from kubelock.testbed.__main__ import MANIFESTS
from tests.support.namespaces import temporary_namespace
from tests.support.operator import REPO, OperatorProcess


@contextmanager
def started(plane: ControlPlane) -> Iterator[ControlPlane]:
    """Start `plane` for a fixture and stop it afterwards. Missing binaries fail the test with their
    message alone (it says how to install them); a traceback would only hide it."""
    try:
        plane.start()
    except MissingBinariesError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@contextmanager
def own_plane(directory: Path, needs: str, **options: Any) -> Iterator[ControlPlane]:
    """A module's own control plane with kubelock's CRDs, RBAC and admission, started in `directory`
    with `options` (`ControlPlane`'s). A run against a cluster of somebody else's
    (`KUBELOCK_TEST_KUBECONFIG`) skips the module: it cannot give `needs`."""
    if os.environ.get("KUBELOCK_TEST_KUBECONFIG"):
        pytest.skip(f"needs {needs}")
    with started(ControlPlane(directory, manifests=[REPO / m for m in MANIFESTS], **options)) as plane:
        yield plane


def own_plane_fixtures(prefix: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The fixtures `admin` (the module's admin client), `ns` (a fresh namespace named `prefix`...,
    deleted afterwards) and `operator` (an operator of this tree watching `ns`, its log in the test's
    temporary directory) of a module whose fixture `plane` is its own control plane:
    `admin, ns, operator = own_plane_fixtures(PREFIX)`."""

    @pytest.fixture(scope="module", name="admin")
    def admin(plane: ControlPlane) -> Iterator[ApiClient]:
        api: ApiClient = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        yield api
        api.close()  # type: ignore[no-untyped-call]

    @pytest.fixture(name="ns")
    def ns(admin: ApiClient) -> Iterator[str]:
        with temporary_namespace(admin, prefix) as name:
            yield name

    @pytest.fixture(name="operator")
    def operator(plane: ControlPlane, ns: str, tmp_path: Path) -> Iterator[OperatorProcess]:
        with OperatorProcess(plane.kubeconfig, tmp_path / "operator.log", namespaces=(ns,)) as op:
            yield op

    return admin, ns, operator
