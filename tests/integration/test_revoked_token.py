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
    AuthenticationV1TokenRequest,
    CoreV1Api,
    V1BoundObjectReference,
    V1ObjectMeta,
    V1Secret,
    V1TokenRequestSpec,
)

from kubelock.sdk import Expired, Forbidden, LockClient
from kubelock.testbed import ControlPlane, wait_until
from tests.integration.conftest import Cluster, ensure_service_account
from tests.support.access import bind, service_account_user, wait_allowed
from tests.support.operator import OperatorProcess

AGENT = "agent"
TOKEN_SECONDS = 3600
REVOKED_SECONDS = 60.0  # the API server's token cache, then the renew deadline, on a loaded machine


@pytest.fixture
def operator(control_plane: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as op:
        yield op


def token_bound_to_secret(core: CoreV1Api, namespace: str, secret: str) -> str:
    """A token of the agent's ServiceAccount that lives only as long as the Secret `secret`."""
    made = core.create_namespaced_secret(namespace, V1Secret(metadata=V1ObjectMeta(name=secret)))
    assert made.metadata is not None
    spec = V1TokenRequestSpec(
        audiences=[],
        expiration_seconds=TOKEN_SECONDS,
        bound_object_ref=V1BoundObjectReference(api_version="v1", kind="Secret", name=secret, uid=made.metadata.uid),
    )
    response = core.create_namespaced_service_account_token(AGENT, namespace, AuthenticationV1TokenRequest(spec=spec))
    assert response.status is not None and response.status.token
    return str(response.status.token)


def test_a_revoked_token_loses_the_lease_and_names_the_credentials(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("writes kubeconfigs for the test bed's server and CA")
    core = CoreV1Api(admin_api)
    ensure_service_account(core, namespace, AGENT)
    user = service_account_user(namespace, AGENT)
    bind(admin_api, namespace, "kubelock-agent", user)
    wait_allowed(admin_api, user, namespace, "create", "lockclaims")
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
