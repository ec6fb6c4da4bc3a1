"""Who the caller is, and in which lock space (namespace) it works.

In a pod nothing needs configuring: the holder is the pod's name (`POD_NAME` from the downward API,
else the pod its ServiceAccount token is bound to, as SelfSubjectReview reports), claims name the pod
(`spec.podRef`, with `POD_UID` when known) so that the pod's death releases its locks, and the
namespace is `KUBELOCK_NAMESPACE`, `POD_NAMESPACE` or the ServiceAccount's. Elsewhere the holder is
an explicit argument, `KUBELOCK_HOLDER`, or the authenticated user name (SelfSubjectReview). These
defaults are what the admission policies require: a claim in the requester's own name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.sdk import validation
from kubelock.sdk.errors import InvalidInput, from_api

HOLDER_ENV = "KUBELOCK_HOLDER"
NAMESPACE_ENV = "KUBELOCK_NAMESPACE"
POD_NAME_ENV = "POD_NAME"
POD_UID_ENV = "POD_UID"
POD_NAMESPACE_ENV = "POD_NAMESPACE"


@dataclass(frozen=True, slots=True)
class Identity:
    holder: str
    namespace: str
    pod_name: str | None = None
    pod_uid: str | None = None


def namespace_from(explicit: str | None, default: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    chosen = explicit or env.get(NAMESPACE_ENV) or env.get(POD_NAMESPACE_ENV) or default
    return validation.namespace(chosen)


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str
    pod_name: str | None = None  # set for a ServiceAccount token bound to a pod (every mounted token)
    pod_uid: str | None = None


async def user_info(kube: KubeClient) -> UserInfo:
    """Who the API server says the caller is (SelfSubjectReview)."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        review = await kube.create(paths.self_subject_review(), body)
    except (kube_errors.ApiError, kube_errors.Unreachable) as error:
        raise from_api(error, "ask the API server who you are (SelfSubjectReview)") from error
    info = (review.get("status") or {}).get("userInfo") or {}
    name = info.get("username")
    if not name:
        raise InvalidInput("the API server did not say who you are; pass a holder explicitly")
    extra = info.get("extra") or {}

    def first(key: str) -> str | None:
        values = extra.get(key) or []
        return str(values[0]) if values else None

    return UserInfo(
        username=str(name),
        pod_name=first("authentication.kubernetes.io/pod-name"),
        pod_uid=first("authentication.kubernetes.io/pod-uid"),
    )


async def whoami(kube: KubeClient) -> str:
    """The authenticated user name."""
    return (await user_info(kube)).username


async def resolve(
    kube: KubeClient,
    *,
    holder: str | None,
    namespace: str,
    in_cluster: bool,
    env: Mapping[str, str] | None = None,
) -> Identity:
    env = os.environ if env is None else env
    pod_name = env.get(POD_NAME_ENV) or None
    pod_uid = env.get(POD_UID_ENV) or None
    pod_namespace = env.get(POD_NAMESPACE_ENV) or None
    chosen = holder or env.get(HOLDER_ENV) or pod_name
    if chosen is None or (in_cluster and pod_name is None):
        # A pod's token says which pod it belongs to, so even without the downward API variables
        # the holder is the pod and its claims name the pod (as the admission policy requires).
        who = await user_info(kube)
        if who.pod_name and pod_name is None:
            pod_name, pod_uid = who.pod_name, who.pod_uid
            pod_namespace = pod_namespace or _service_account_namespace(who.username)
        chosen = chosen or pod_name or who.username
    if pod_namespace and pod_namespace != namespace:
        # podRef and ownerReferences can only name a pod in the claim's own namespace.
        pod_name = pod_uid = None
    return Identity(
        holder=validation.holder(chosen),
        namespace=namespace,
        pod_name=pod_name,
        pod_uid=pod_uid if pod_name else None,
    )


def _service_account_namespace(username: str) -> str | None:
    prefix = "system:serviceaccount:"
    parts = username[len(prefix):].split(":") if username.startswith(prefix) else []
    return parts[0] if len(parts) == 2 else None
