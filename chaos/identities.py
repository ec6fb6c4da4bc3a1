"""Who the chaos agents are: real, unprivileged identities, so the admission policies are exercised too.

Without pods, every agent of a run is one instance of one identity, the ServiceAccount
`chaos-agents` (holder `sa:<namespace>/chaos-agents/<agent>`): instances of one identity must
conflict like any two holders. With `--holders` (the `quotas` part) each holder is a ServiceAccount
of its own, `chaos-agents-h<n>` (holder `sa:<namespace>/chaos-agents-h<n>/h<n>`): quotas count an
identity's instances together. With pods, each agent authenticates with a token bound to its own pod
(holder `pod:<namespace>/<pod>/<uid prefix>`), as a kubelet-mounted token would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from kubelock.domain import holder as holders
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials

SERVICE_ACCOUNT = "chaos-agents"
ROLE = "kubelock-agent"
MIN_TOKEN_SECONDS = 3600
SETUP_PATIENCE = 90.0  # longer than any outage a part injects (an API server restart under load: ~25 s)

T = TypeVar("T")


def passing(error: Exception) -> bool:
    """An error an outage gives (no connection, a 5xx or 429 while the API server or etcd restarts)."""
    return isinstance(error, kube_errors.Unreachable) or (
        isinstance(error, kube_errors.ApiError) and (error.status >= 500 or error.status == 429))


async def through_outages(step: Callable[[], Awaitable[T]], patience: float = SETUP_PATIENCE) -> T:
    """`step` again until it succeeds: an agent process's set-up can start while a part's fault has the
    API server down, and a set-up that gave up would end the process (an `agent-crash`) for a fault
    the agents are there to live through."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await step()
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            if not passing(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def bind_account(kube: KubeClient, namespace: str, name: str, role: str, *,
                       bind_in: Collection[str] | None = None, cluster: bool = False) -> None:
    """The ServiceAccount `namespace/name` bound to the ClusterRole `role`: cluster-wide if `cluster`,
    else by a RoleBinding `name` in each namespace of `bind_in` (its own namespace when not given).
    Each object may already exist (several processes may race to it)."""
    subjects = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    writes: list[tuple[str, dict[str, object]]] = [(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})]
    if cluster:
        writes.append((f"{rbac}/clusterrolebindings",
                       {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                        "metadata": {"name": f"{name}-{namespace}"}, "roleRef": ref, "subjects": subjects}))
    else:
        writes.extend((f"{rbac}/namespaces/{ns}/rolebindings",
                       {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": name}, "roleRef": ref, "subjects": subjects})
                      for ns in (bind_in if bind_in is not None else [namespace]))
    for path, body in writes:
        with contextlib.suppress(kube_errors.Conflict):
            await kube.create(path, body)


async def ensure_agent_account(kube: KubeClient, namespace: str, name: str = SERVICE_ACCOUNT) -> None:
    """The ServiceAccount and its RoleBinding to kubelock-agent."""
    await bind_account(kube, namespace, name, ROLE)


async def token(kube: KubeClient, namespace: str, *, account: str = SERVICE_ACCOUNT, pod: tuple[str, str] | None = None,
                seconds: float = MIN_TOKEN_SECONDS) -> str:
    """A token of the ServiceAccount from TokenRequest, bound to `pod` (name, uid) when given."""
    spec: dict[str, object] = {"audiences": [], "expirationSeconds": int(max(MIN_TOKEN_SECONDS, seconds))}
    if pod is not None:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod[0], "uid": pod[1]}
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    response = await kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body)
    return str(response["status"]["token"])


def as_token(credentials: Credentials, bearer: str) -> Credentials:
    """The same server and CA, authenticating with `bearer` only (no client certificate)."""
    return dataclasses.replace(credentials, token=bearer, token_file=None, exec=None, cert_file=None, key_file=None,
                               username=None, password=None)


async def wait_until_allowed(kube: KubeClient, namespace: str, patience: float = 30.0) -> None:
    """The authorizer learns new RoleBindings from a watch: wait until these credentials may claim."""
    deadline = time.monotonic() + patience
    while True:
        try:
            await kube.list(paths.claims(namespace), limit=1)
            return
        except kube_errors.Forbidden:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def holder_matches(holder: str, names: Collection[str]) -> bool:
    """Whether a holder is one of `names`: an agent (the instance) or a pod (by its name)."""
    if holder in names:
        return True
    split = holders.split(holder)
    if split is None:
        return False
    identity, instance = split
    pod = identity.rpartition("/")[2] if identity.startswith("pod:") else None
    return instance in names or pod in names
