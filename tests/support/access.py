"""Who may do what in a test: RoleBindings of kubelock's ClusterRoles to users and ServiceAccounts,
and waiting until the API server's authorizer has learnt them (it learns bindings from a watch)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    AuthenticationV1TokenRequest,
    AuthorizationV1Api,
    CoreV1Api,
    RbacAuthorizationV1Api,
    RbacV1Subject,
    V1BoundObjectReference,
    V1ObjectMeta,
    V1ResourceAttributes,
    V1RoleBinding,
    V1RoleRef,
    V1Secret,
    V1ServiceAccount,
    V1SubjectAccessReview,
    V1SubjectAccessReviewSpec,
    V1TokenRequestSpec,
)
from kubernetes.client.exceptions import ApiException

from kubelock.api.constants import GROUP
from kubelock.testbed import ControlPlane, wait_until
from tests.support.claims import Locks
from tests.support.commands import environment
from tests.support.namespaces import temporary_namespace

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
DEADLINE = 60.0  # generous for 2 shared cores; the wait returns as soon as the binding is known
AGENT = "agent"  # the ServiceAccount of `service_account_agent`
TOKEN_SECONDS = 3600
REVOKED_SECONDS = 60.0  # the API server's token cache, then the renew deadline, on a loaded machine


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


@contextlib.contextmanager
def static_agents_namespace(
    admin_api: ApiClient, control_plane: object, prefix: str, *, lock_admin: bool = False
) -> Iterator[str]:
    """`agents_namespace` for the test bed's static users (alice, bob, lockadmin); a run against a
    cluster of somebody else's, which has none, skips the test."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with agents_namespace(admin_api, prefix, lock_admin=lock_admin) as name:
        yield name


def user_environment(
    control_plane: ControlPlane, user: str, namespace: str, instance: str | None = None
) -> dict[str, str]:
    """A clean environment for a command run as one of the test bed's static users in `namespace`."""
    return environment(control_plane.user_kubeconfig(user), namespace, instance)


def ensure_service_account(core: CoreV1Api, namespace: str, name: str) -> None:
    try:
        core.create_namespaced_service_account(namespace, V1ServiceAccount(metadata=V1ObjectMeta(name=name)))
    except ApiException as error:
        if error.status != 409:  # already there
            raise


def service_account_agent(admin_api: ApiClient, namespace: str) -> str:
    """The ServiceAccount `AGENT` of `namespace`, bound to kubelock-agent there once RBAC lets it
    create claims; its user name."""
    ensure_service_account(CoreV1Api(admin_api), namespace, AGENT)
    user = service_account_user(namespace, AGENT)
    bind(admin_api, namespace, "kubelock-agent", user)
    wait_allowed(admin_api, user, namespace, "create", "lockclaims")
    return user


def token_bound_to_secret(core: CoreV1Api, namespace: str, secret: str) -> str:
    """A token of the agent's ServiceAccount that lives only as long as the Secret `secret`."""
    made = core.create_namespaced_secret(namespace, V1Secret(metadata=V1ObjectMeta(name=secret)))
    assert made.metadata is not None
    spec = V1TokenRequestSpec(
        audiences=[], expiration_seconds=TOKEN_SECONDS,
        bound_object_ref=V1BoundObjectReference(api_version="v1", kind="Secret", name=secret, uid=made.metadata.uid),
    )
    response = core.create_namespaced_service_account_token(AGENT, namespace, AuthenticationV1TokenRequest(spec=spec))
    assert response.status is not None and response.status.token
    return str(response.status.token)


def replace_file(path: Path, text: str) -> None:
    """As a rotation writes a credential: a temporary name renamed into place."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def token_file_kubeconfig(control_plane: ControlPlane, token_path: Path, kubeconfig: Path, namespace: str) -> Path:
    """A kubeconfig for the test bed's server whose user reads its token from `token_path` (`tokenFile`):
    a client reads the file again after a 401, so a rotated token is picked up."""
    config = control_plane.token_kubeconfig("unused", kubeconfig, namespace)
    parsed = yaml.safe_load(config.read_text())
    parsed["users"][0]["user"] = {"tokenFile": str(token_path)}
    replace_file(config, yaml.safe_dump(parsed))
    return config


def bearer_client(kubeconfig: Path, token: str) -> ApiClient:
    """A client for the kubeconfig's server and CA that authenticates with ``token`` only."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    configuration.cert_file = configuration.key_file = None
    configuration.username = configuration.password = None
    configuration.refresh_api_key_hook = None  # an exec plugin's hook would put its own token back
    configuration.api_key = {"BearerToken": f"Bearer {token}"}
    return ApiClient(configuration)


def revoked(kubeconfig: Path, token: str) -> bool:
    """Whether the API server refuses `token` (401): a revocation has reached its token cache."""
    api = bearer_client(kubeconfig, token)
    try:
        CoreV1Api(api).list_namespaced_config_map("default", limit=1)
    except ApiException as error:
        return error.status == 401
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return False


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
