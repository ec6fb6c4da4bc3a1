"""`list()` with an instance (`kubelock list`) against the real API server: the holder's claims are
selected by the API server on `spec.holder` (a selectable field of the LockClaim CRD), so the answer
holds them alone, claims written as YAML included; and a CRD without that field (a cluster whose
CRDs predate it) refuses the selector, after which the SDK lists every claim and filters them itself.
"""

from __future__ import annotations

import asyncio
import builtins
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi, RbacAuthorizationV1Api

from kubelock.api.constants import HOLDER_HASH_LABEL
from kubelock.domain.resource import digest
from kubelock.kube.client import Body
from kubelock.kube.errors import ApiError
from kubelock.sdk import AsyncLockClient
from kubelock.testbed import ControlPlane, wait_until
from tests.support.claims import GROUP, VERSION, Locks

ALICE = "user:alice/w1"
CRD = "lockclaims.kubelock.dev"
DEADLINE = 60.0
Calls = list[tuple[dict[str, Any], int]]


@pytest.fixture
def bed(control_plane: Any, admin_api: ApiClient, namespace: str) -> ControlPlane:
    """The test bed, with alice allowed to list claims in the namespace (kubelock-agent)."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static user alice")
    binding: dict[str, Any] = {
        "metadata": {"name": "alice-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubelock-agent"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    RbacAuthorizationV1Api(admin_api).create_namespaced_role_binding(namespace, binding)  # type: ignore[arg-type]
    wait_until(lambda: _lists(control_plane, namespace), what="alice to be allowed to list claims",
               timeout=DEADLINE)
    return control_plane


def _lists(plane: ControlPlane, namespace: str) -> bool:
    answer = plane.kubectl("auth", "can-i", "list", CRD, "--as", "alice", "-n", namespace, check=False)
    return answer.stdout.strip() == "yes"


def _claims(admin_api: ApiClient, namespace: str) -> set[str]:
    """Two claims of alice/w1 (one as the SDK labels it, one as YAML: no label) and two of others."""
    locks = Locks(admin_api, namespace)
    locks.claim("alice-yaml", "github://acme/app/issues/1", ALICE, ttl=600)
    labelled = locks.claim("alice-sdk", "github://acme/app/issues/2", ALICE, ttl=600)
    labelled["metadata"]["labels"] = {HOLDER_HASH_LABEL: digest(ALICE)}
    CustomObjectsApi(admin_api).replace_namespaced_custom_object(GROUP, VERSION, namespace, "lockclaims",
                                                                 "alice-sdk", labelled)
    locks.claim("alice-other-instance", "github://acme/app/issues/3", "user:alice/w2", ttl=600)
    locks.claim("bob", "github://acme/app/issues/4", "user:bob/w1", ttl=600)
    return {"alice-yaml", "alice-sdk"}


def _spied(client: AsyncLockClient, monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Each LIST of the client: its parameters and how many claims the API server answered (or the
    HTTP status it refused it with)."""
    calls: Calls = []
    real = client.kube.list_all

    async def list_all(path: str, **params: Any) -> tuple[builtins.list[Body], str]:
        try:
            items, version = await real(path, **params)
        except ApiError as error:
            calls.append((params, error.status))
            raise
        calls.append((params, len(items)))
        return items, version

    monkeypatch.setattr(client.kube, "list_all", list_all)
    return calls


def _selects_holder(admin_api: ApiClient, namespace: str) -> bool:
    try:
        CustomObjectsApi(admin_api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "lockclaims", field_selector=f"spec.holder={ALICE}")
    except ApiException as error:
        if error.status == 400:
            return False
        raise
    return True


async def _listed(plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], Calls]:
    client = AsyncLockClient(kubeconfig=str(plane.user_kubeconfig("alice")), namespace=namespace, instance="w1")
    try:
        calls = _spied(client, monkeypatch)
        return {c.name for c in await client.list()}, calls
    finally:
        await client.close()


def test_list_asks_the_api_server_for_the_holders_claims_alone(
    bed: ControlPlane, admin_api: ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = _claims(admin_api, namespace)
    listed, calls = asyncio.run(_listed(bed, namespace, monkeypatch))
    assert listed == mine
    # One LIST, selected on spec.holder: the server answered alice/w1's two claims of the four.
    assert calls == [({"fieldSelector": f"spec.holder={ALICE}"}, 2)], calls


def test_list_falls_back_to_every_claim_where_the_crd_does_not_select_spec_holder(
    bed: ControlPlane, admin_api: ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    mine = _claims(admin_api, namespace)
    # The CRD as it was before `.spec.holder` was selectable.
    older = '[{"op": "replace", "path": "/spec/versions/0/selectableFields", "value": ' \
            '[{"jsonPath": ".spec.resource"}, {"jsonPath": ".status.phase"}]}]'
    bed.kubectl("patch", "crd", CRD, "--type=json", "-p", older)
    try:
        wait_until(lambda: not _selects_holder(admin_api, namespace), what="spec.holder to be refused",
                   timeout=DEADLINE)
        listed, calls = asyncio.run(_listed(bed, namespace, monkeypatch))
        assert listed == mine
        assert calls == [({"fieldSelector": f"spec.holder={ALICE}"}, 400), ({}, 4)], calls
    finally:
        bed.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(repo_root / "crds" / "kubelock.dev_lockclaims.yaml"))
        wait_until(lambda: _selects_holder(admin_api, namespace), what="spec.holder to be selectable again",
                   timeout=DEADLINE)
