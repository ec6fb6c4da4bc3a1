"""Who the caller is, and in which lock space (namespace) it works.

The holder is `<identity>/<instance>` (see `kubelock.domain.holder`). The identity comes from the API
server (SelfSubjectReview), never from configuration: `pod:<namespace>/<pod>` for a pod's token,
`sa:<namespace>/<name>` for another ServiceAccount token, `user:<name>` for everyone else. The instance:

- `instance=` or `KUBELOCK_INSTANCE`, if given;
- in a pod, the first 8 characters of the pod's uid followed by `.<KUBELOCK_INSTANCE>` when that is
  set (so several processes of one pod can be separate holders), else by `.<container name>` when the
  process can see which container of the pod it runs in (`kubelock.sdk.container`), else alone: two
  containers of one pod are two holders, and a restarted container is the same one;
- elsewhere the SDK makes one per process (`<host>-<pid>-<random>`): a process is one instance. The
  CLI instead requires `--instance` or `KUBELOCK_INSTANCE`, because `rlock`, `rlock-heartbeat` and
  `runlock` are separate processes that must find the same claim.

An explicit holder (`holder=`, `KUBELOCK_HOLDER`) is used as it is: lock admins may act for anyone.

In a pod, claims also name the pod (`spec.podRef`, with its uid) so that the pod's end releases them.
The namespace is `KUBELOCK_NAMESPACE`, `POD_NAMESPACE` or the kubeconfig's / ServiceAccount's.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from kubelock.domain import holder as holders
from kubelock.domain.resource import MAX_HOLDER_LENGTH, utf8_length
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.sdk import container as containers
from kubelock.sdk import validation
from kubelock.sdk.errors import InvalidInput, from_api

HOLDER_ENV = "KUBELOCK_HOLDER"
INSTANCE_ENV = "KUBELOCK_INSTANCE"
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
    identity: str | None = None  # the holder without its instance (None for an explicit holder)
    instance: str | None = None


class InstanceRequired(InvalidInput):
    """Outside a pod the CLI needs to be told which instance it is."""

    default_reason = "InstanceRequired"


def namespace_from(explicit: str | None, default: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    chosen = explicit or env.get(NAMESPACE_ENV) or env.get(POD_NAMESPACE_ENV) or default
    return validation.namespace(chosen)


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str
    pod_name: str | None = None  # set for a ServiceAccount token bound to a pod (every mounted token)
    pod_uid: str | None = None

    @property
    def identity(self) -> str:
        return holders.identity_of(self.username, self.pod_name)


async def user_info(kube: KubeClient) -> UserInfo:
    """Who the API server says the caller is (SelfSubjectReview)."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        review = await kube.create(paths.self_subject_review(), body)
    except (kube_errors.ApiError, kube_errors.Unreachable) as error:
        raise from_api(error, "ask the API server who you are (SelfSubjectReview)", kubelock_api=False) from error
    info = (review.get("status") or {}).get("userInfo") or {}
    name = info.get("username")
    if not name:
        raise InvalidInput("the API server did not say who you are; pass a holder explicitly")
    extra = info.get("extra") or {}

    def first(key: str) -> str | None:
        values = extra.get(key) or []
        return str(values[0]) if values else None

    pod_name = first("authentication.kubernetes.io/pod-name")
    pod_uid = first("authentication.kubernetes.io/pod-uid")
    if holders.service_account_namespace(str(name)) is None:
        pod_name = pod_uid = None  # only the ServiceAccount authenticator says which pod a token is bound to
    return UserInfo(username=str(name), pod_name=pod_name, pod_uid=pod_uid)


async def whoami(kube: KubeClient) -> str:
    """The authenticated user name."""
    return (await user_info(kube)).username


_process_instance: str | None = None


def process_instance() -> str:
    """This process's own instance, made once per process (again in a forked child)."""
    global _process_instance
    if _process_instance is None:
        host = socket.gethostname().split(".")[0] or "host"
        _process_instance = holders.instance_from(f"{host[:40]}-{os.getpid()}-{secrets.token_hex(2)}")
    return _process_instance


def _forget_process_instance() -> None:
    global _process_instance
    _process_instance = None


os.register_at_fork(after_in_child=_forget_process_instance)


def instance_for(
    who: UserInfo, given: str | None, env: Mapping[str, str], *, generate: bool, container: str | None = None
) -> str:
    """The instance part of the holder (see the module docstring). `container`: the name of the
    container of the caller's pod this process runs in, where it could be seen."""
    if given is not None:
        _check_instance(given)
    if who.pod_name and who.pod_uid:
        if given is None and container:
            return holders.container_instance(who.pod_uid, container)
        try:
            return holders.pod_instance(who.pod_uid, given)
        except holders.InvalidInstance as error:  # the suffix made it too long
            raise InvalidInput(
                f"{error}; in a pod, {INSTANCE_ENV} may have at most {holders.POD_SUFFIX_MAX} characters"
            ) from None
    if given:
        return given
    pod_name = env.get(POD_NAME_ENV)
    if pod_name:  # a pod whose token is not bound to it (a legacy token Secret)
        uid = env.get(POD_UID_ENV, "")
        return holders.instance_from(f"{pod_name}.{uid[: holders.UID_PREFIX]}" if uid else pod_name)
    if generate:
        return process_instance()
    raise InstanceRequired(
        f"say which instance of {who.identity} this is: export {INSTANCE_ENV}=<name> (for example "
        f"{INSTANCE_ENV}=worker-1; use the same value for rlock, rlock-heartbeat and runlock, and a different "
        "one for every agent process that must not share your locks) or pass --instance"
    )


def _check_instance(value: str) -> None:
    try:
        holders.validate_instance(value)
    except holders.InvalidInstance as error:
        raise InvalidInput(str(error)) from None


async def resolve(
    kube: KubeClient,
    *,
    holder: str | None,
    namespace: str,
    instance: str | None = None,
    generate_instance: bool = True,
    env: Mapping[str, str] | None = None,
) -> Identity:
    env = os.environ if env is None else env
    explicit = holder or env.get(HOLDER_ENV) or None
    given = instance if instance is not None else (env.get(INSTANCE_ENV) or None)
    if explicit is not None:
        pod_name, pod_uid = env.get(POD_NAME_ENV) or None, env.get(POD_UID_ENV) or None
        if (env.get(POD_NAMESPACE_ENV) or namespace) != namespace:
            pod_name = pod_uid = None
        return Identity(holder=validation.holder(explicit), namespace=namespace, pod_name=pod_name,
                        pod_uid=pod_uid if pod_name else None)
    who = await user_info(kube)
    # Which container of its pod this process is, only where it decides the instance.
    container = containers.of_pod(who.pod_uid) if who.pod_name and who.pod_uid and given is None else None
    chosen = instance_for(who, given, env, generate=generate_instance, container=container)
    pod_name = who.pod_name or env.get(POD_NAME_ENV) or None
    pod_uid = who.pod_uid if who.pod_name else env.get(POD_UID_ENV) or None
    pod_namespace = holders.service_account_namespace(who.username) if who.pod_name else env.get(POD_NAMESPACE_ENV)
    if (pod_namespace or namespace) != namespace:
        # podRef and ownerReferences can only name a pod in the claim's own namespace.
        pod_name = pod_uid = None
    return Identity(
        holder=holder_within_bounds(who.identity, chosen),
        namespace=namespace,
        pod_name=pod_name,
        pod_uid=pod_uid if pod_name else None,
        identity=who.identity,
        instance=chosen,
    )


def holder_within_bounds(identity: str, instance: str) -> str:
    """`<identity>/<instance>`, refused with what to shorten when it passes the CRD's bound: an
    identity is not kubelock's to choose (a ServiceAccount's name may itself be 253 characters), so
    "the holder is too long" alone leaves its agent guessing which part is."""
    holder = holders.holder_of(identity, instance)
    length = utf8_length(holder)
    if length <= MAX_HOLDER_LENGTH:
        return validation.holder(holder)
    room = MAX_HOLDER_LENGTH - utf8_length(identity) - 1
    instead = f"an instance of at most {room} characters ({INSTANCE_ENV} or --instance), or " if room >= 1 else ""
    raise InvalidInput(
        f"the holder {identity}/{instance} is {length} bytes long in UTF-8, and a holder may have at most "
        f"{MAX_HOLDER_LENGTH}: identity {identity} is {utf8_length(identity)} bytes of it; use {instead}a "
        "shorter ServiceAccount name (or user name)"
    )
