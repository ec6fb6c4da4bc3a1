"""Who may do what in a test: RoleBindings of kubelock's ClusterRoles to users and ServiceAccounts,
and waiting until the API server's authorizer has learnt them (it learns bindings from a watch)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client import (
    ApiClient,
    AuthorizationV1Api,
    RbacAuthorizationV1Api,
    RbacV1Subject,
    V1ObjectMeta,
    V1ResourceAttributes,
    V1RoleBinding,
    V1RoleRef,
    V1SubjectAccessReview,
    V1SubjectAccessReviewSpec,
)
from kubernetes.client.exceptions import ApiException

from kubelock.api.constants import GROUP
from kubelock.testbed import wait_until
from tests.support.claims import Locks
from tests.support.namespaces import temporary_namespace

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
DEADLINE = 60.0  # generous for 2 shared cores; the wait returns as soon as the binding is known


def service_account_user(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def subject(user: str) -> RbacV1Subject:
    """A user, or a ServiceAccount named by its user name (`system:serviceaccount:<ns>:<name>`)."""
    if user.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace, name = user[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
        return RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)
    return RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")


def cluster_role(name: str) -> V1RoleRef:
    return V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name)


def bind(admin_api: ApiClient, namespace: str, role: str, user: str) -> None:
    """A RoleBinding of a ClusterRole to one user (or ServiceAccount) in one namespace."""
    binding = V1RoleBinding(
        metadata=V1ObjectMeta(generate_name=f"{role}-"), role_ref=cluster_role(role), subjects=[subject(user)]
    )
    RbacAuthorizationV1Api(admin_api).create_namespaced_role_binding(namespace, binding)


def bind_agents(admin_api: ApiClient, namespace: str, users: tuple[str, ...] = ("alice", "bob")) -> None:
    """Bind kubelock-agent to each of `users` in `namespace`, and wait until RBAC lets each create claims
    there (the authorizer learns bindings from a watch)."""
    for user in users:
        bind(admin_api, namespace, "kubelock-agent", user)
        wait_allowed(admin_api, user, namespace, "create", "lockclaims")


@contextlib.contextmanager
def agents_namespace(admin_api: ApiClient, prefix: str, *, lock_admin: bool = False) -> Iterator[str]:
    """A fresh namespace (deleted afterwards) where alice and bob are agents and, with `lock_admin`,
    lockadmin is kubelock-admin; RBAC lets each act there before it is yielded."""
    with temporary_namespace(admin_api, prefix) as name:
        bind_agents(admin_api, name)
        if lock_admin:
            bind(admin_api, name, "kubelock-admin", "lockadmin")
            wait_allowed(admin_api, "lockadmin", name, "delete", "resourcelocks")
        yield name


def allowed(
    admin_api: ApiClient, user: str, namespace: str | None, verb: str, resource: str, group: str = GROUP,
    groups: tuple[str, ...] = ("system:authenticated",),
) -> bool:
    """Whether RBAC lets `user`, a member of `groups`, do `verb` on `resource` (a SubjectAccessReview)."""
    review = V1SubjectAccessReview(
        spec=V1SubjectAccessReviewSpec(
            user=user,
            groups=list(groups),
            resource_attributes=V1ResourceAttributes(group=group, resource=resource, verb=verb, namespace=namespace),
        )
    )
    status = AuthorizationV1Api(admin_api).create_subject_access_review(review).status
    return bool(status and status.allowed)


def wait_allowed(
    admin_api: ApiClient, user: str, namespace: str | None, verb: str, resource: str, group: str = GROUP,
    groups: tuple[str, ...] = ("system:authenticated",),
) -> None:
    """Wait for the authorizer to learn a new binding instead of racing it."""
    wait_until(
        lambda: allowed(admin_api, user, namespace, verb, resource, group, groups),
        what=f"{user} to be allowed to {verb} {resource} in {namespace}",
        timeout=DEADLINE,
    )


def can_claim(kubeconfig: Path, namespace: str) -> bool:
    """True once RBAC lets this identity list claims here (the authorizer learns bindings from a watch)."""
    api: ApiClient = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        Locks(api, namespace).claims()
    except ApiException:
        return False
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return True


def refusal(call: Callable[[], object]) -> tuple[int, str]:
    """The HTTP status and the Status message of a request the API server refuses."""
    with pytest.raises(ApiException) as caught:
        call()
    body = json.loads(caught.value.body or "{}")
    return int(caught.value.status), str(body.get("message", ""))
