"""Holder names: `<identity>/<instance>`, derived from who the API server says the caller is.

The identity names the authenticated caller and cannot collide across kinds or namespaces:

    user:<user name>                 a person or any client that is not a ServiceAccount
    sa:<namespace>/<name>            a ServiceAccount token not bound to a pod
    pod:<namespace>/<pod name>       a token bound to a pod (what a kubelet mounts)

The instance names one process (or group of processes) of that identity: two instances conflict like
any two holders, the same instance asking again finds its own claim. For a pod the instance begins
with the first 8 characters of the pod's uid, so a pod recreated under the same name is a new holder;
by default the SDK follows it with the container's name (`container_instance`), so that two containers
of one pod are two holders.

The admission policy `kubelock-lockclaim-holder` derives the identity the same way (in CEL), and lets
a caller create, renew and release only claims whose holder is its identity followed by `/` and an
instance.
"""

from __future__ import annotations

import hashlib
import re

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
INSTANCE_MAX = 63
INSTANCE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
UID_PREFIX = 8

_INSTANCE = re.compile(INSTANCE_PATTERN)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
KINDS = ("user:", "sa:", "pod:")


class InvalidInstance(ValueError):
    """An instance name that breaks the rules; the message says which."""


def identity_of(username: str, pod_name: str | None = None) -> str:
    """The identity for an authenticated user name (and the pod a ServiceAccount token is bound to)."""
    service_account = _service_account(username)
    if service_account is not None:
        namespace, name = service_account
        return f"pod:{namespace}/{pod_name}" if pod_name else f"sa:{namespace}/{name}"
    return f"user:{username}"


def service_account_namespace(username: str) -> str | None:
    found = _service_account(username)
    return found[0] if found else None


def _service_account(username: str) -> tuple[str, str] | None:
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def validate_instance(instance: object) -> str:
    if not isinstance(instance, str) or not _INSTANCE.fullmatch(instance):
        raise InvalidInstance(
            f"instance {instance!r} is invalid: 1-{INSTANCE_MAX} letters, digits, '.', '_' or '-', starting and "
            "ending with a letter or digit (for example worker-1)"
        )
    return instance


def holder_of(identity: str, instance: str) -> str:
    return f"{identity}/{validate_instance(instance)}"


def split(holder: str) -> tuple[str, str] | None:
    """(identity, instance) of a holder in this form, else None (an older holder name)."""
    identity, sep, instance = holder.rpartition("/")
    if not sep or not identity.startswith(KINDS) or not _INSTANCE.fullmatch(instance):
        return None
    return identity, instance


def identity_in(holder: str) -> str:
    """The identity a holder belongs to, which LockPolicy quotas count by (`maxHeldPerHolder`,
    `maxWaitingPerHolder`). The instance is the caller's own choice (any name for a user or a
    ServiceAccount, any suffix after a pod's uid prefix), so limits counted per instance would let one
    identity take a limit again under every name it makes up. A holder of an older form counts alone."""
    parts = split(holder)
    return parts[0] if parts else holder


def pod_instance(pod_uid: str, suffix: str | None = None) -> str:
    """A pod's instance: its uid's first characters, then `.suffix` for one of several processes."""
    base = pod_uid[:UID_PREFIX]
    return validate_instance(f"{base}.{suffix}" if suffix else base)


# What may follow `<uid prefix>.` in an instance of at most INSTANCE_MAX characters.
POD_SUFFIX_MAX = INSTANCE_MAX - UID_PREFIX - 1


def container_instance(pod_uid: str, container: str) -> str:
    """The instance of a container of a pod: `<uid prefix>.<container name>`. A name too long for the
    instance (a container's name may have 63 characters) keeps its start plus a hash of the whole."""
    return pod_instance(pod_uid, _fit(container, POD_SUFFIX_MAX, container))


def instance_from(text: str) -> str:
    """A valid instance made from free text (a host name, a pod name): unsafe characters become '-',
    and text too long keeps its start plus a hash of the whole."""
    cleaned = _UNSAFE.sub("-", text).strip("-._") or "instance"
    return validate_instance(_fit(cleaned, INSTANCE_MAX, text))


def _fit(value: str, limit: int, whole: str) -> str:
    """`value` if it has at most `limit` characters, else its start and a hash of `whole` (what it was
    made from), so that two long values sharing a start stay apart."""
    if len(value) <= limit:
        return value
    return f"{value[: limit - 11].rstrip('-._')}-{hashlib.sha256(whole.encode()).hexdigest()[:10]}"


def readable(holder: str) -> str:
    """The part of a holder worth showing in a short name: without the kind, and without the namespace
    of a ServiceAccount or pod (`pod:agents/worker-0/3f2a1b4c` -> `worker-0/3f2a1b4c`)."""
    for kind in KINDS:
        if holder.startswith(kind):
            rest = holder[len(kind) :]
            return rest.split("/", 1)[1] if kind != "user:" and "/" in rest else rest
    return holder
