"""An agent whose ServiceAccount token is revoked while it holds a lock (a credential rotated in a
kubeconfig, the old token invalidated): the lease is declared lost before it runs out, and what the
agent is told names the refused credentials, not missing RBAC rights nor an unreachable API server.

The token is bound to a Secret (TokenRequest `boundObjectRef`), so deleting the Secret revokes it:
the API server answers 401 from then on (once its token cache lets go, seconds later)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import (
    ApiClient,
    CoreV1Api,
)

from kubelock.sdk import Expired, Forbidden, LockClient
from kubelock.testbed import ControlPlane, wait_until
from tests.integration.conftest import Cluster
from tests.support.access import AGENT, REVOKED_SECONDS, service_account_agent, token_bound_to_secret
from tests.support.operator import OperatorProcess


@pytest.fixture
def operator(control_plane: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as op:
        yield op


def test_a_revoked_token_loses_the_lease_and_names_the_credentials(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("writes kubeconfigs for the test bed's server and CA")
    core = CoreV1Api(admin_api)
    service_account_agent(admin_api, namespace)
    token = token_bound_to_secret(core, namespace, "agent-credential")
    config = control_plane.token_kubeconfig(token, tmp_path / "agent.kubeconfig", namespace)
    agent = LockClient(kubeconfig=str(config), namespace=namespace, instance="w1", retries=1, request_timeout=5)
    try:
        with agent.lock("deploy://api-prod", ttl=30, renew_deadline=10) as lease:
            assert lease.claim.holder == f"sa:{namespace}/{AGENT}/w1"
            core.delete_namespaced_secret("agent-credential", namespace)  # the token is revoked
            assert lease.lost.wait(REVOKED_SECONDS)
            error = lease.error
            assert isinstance(error, Expired), error
            assert "renew deadline" in error.message, error.message
            assert "the last renewal failed" in error.message, error.message
            assert "did not accept the credentials (401 Unauthorized" in error.message, error.message
            assert "is the API server reachable" not in error.message, error.message

        # A request with the revoked token: refused as Forbidden (exit code 3), naming the credentials.
        refusals: list[Forbidden] = []

        def refused() -> bool:
            try:
                agent.list()
            except Forbidden as failure:
                refusals.append(failure)
            return bool(refusals)

        wait_until(refused, what="the revoked token to be refused", timeout=REVOKED_SECONDS, interval=0.5)
        assert "did not accept the credentials" in refusals[0].message, refusals[0].message
        assert "not allowed to" not in refusals[0].message, refusals[0].message
    finally:
        agent.close()
