"""The SDK's errors: one type per outcome a caller handles differently.

Every error has `reason` (the domain `Reason` string when the operator gave one, else a fixed
CamelCase word) and `message` (a sentence for humans). The CLI maps the types to exit codes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kubelock.domain.reasons import Reason
from kubelock.domain.waitfor import describe
from kubelock.kube import errors as kube_errors


class LockError(Exception):
    """Base of every error the SDK raises."""

    default_reason = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


class InvalidInput(LockError, ValueError):
    """The input was refused before any request was sent (or by the API server's validation)."""

    default_reason = "InvalidInput"


class NotFound(LockError):
    """No such claim, or nothing held to release or renew."""

    default_reason = "NotFound"


class Forbidden(LockError):
    """The API server refused the request for this identity (RBAC or admission), or refused its
    credentials (401: an expired or revoked token)."""

    default_reason = "Forbidden"


class Unreachable(LockError):
    """The API server (or the operator behind it) could not be reached: never treated as success."""

    default_reason = "Unreachable"


class Rejected(LockError):
    """A try-lock found the resource held by another holder (or the operator refused the claim)."""

    default_reason = Reason.HELD_BY_ANOTHER.value

    def __init__(
        self, message: str, *, holder: str | None = None, held_since: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.holder = holder
        self.held_since = held_since


class HeldByAnotherProcess(Rejected):
    """The claim of this holder is held or awaited by another live process of the same instance
    (on this machine or in this container): adopting it would make two processes hold one lock.
    Each process needs its own instance (`KUBELOCK_INSTANCE` or `instance=`)."""

    default_reason = "HeldByAnotherProcess"


class TimedOut(LockError):
    """Waiting for the lock took longer than the timeout; the claim left the queue."""

    default_reason = Reason.WAIT_TIMED_OUT.value

    def __init__(self, message: str, *, holder: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.holder = holder


class Deadlock(LockError):
    """Waiting would close a wait-for cycle. Release every lock you hold, back off, and retry."""

    default_reason = Reason.DEADLOCK.value

    def __init__(self, cycle: Sequence[str], *, reason: str | None = None, message: str | None = None) -> None:
        self.cycle = tuple(cycle)
        super().__init__(message or f"deadlock: {describe(self.cycle)}", reason=reason)


class Lost(LockError):
    """A lock that was held is held no more (base of Expired and Revoked)."""

    default_reason = "Lost"


class Expired(Lost):
    """The lease ran out before it was renewed."""

    default_reason = Reason.LEASE_EXPIRED.value


class Revoked(Lost):
    """An administrator broke the lock, the holder's pod terminated, or the claim was deleted."""

    default_reason = Reason.LOCK_BROKEN.value


# Unreachable's reason when the cluster has no kubelock CRDs: nothing there can ever answer a claim.
NOT_INSTALLED = "NotInstalled"

# The RBAC authorizer's refusal: `User "alice" cannot create resource "lockclaims" in API group
# "kubelock.dev" in the namespace "agents"`. Admission and ResourceQuota refusals say otherwise and
# carry their own advice.
_RBAC_REFUSAL = re.compile(
    r'User "(?P<user>[^"]+)" cannot (?P<verb>[a-z]+) resource "(?P<resource>[a-z/]+)" '
    r'in API group "kubelock\.dev" in the namespace "(?P<namespace>[^"]+)"'
)
_READ_VERBS = frozenset({"get", "list", "watch"})
# The RBAC authorizer's note when a binding names a ClusterRole that does not exist (kubelock
# uninstalled while the bindings made to its roles stay): binding it again would not help.
_ROLE_MISSING = re.compile(r'clusterrole\.rbac\.authorization\.k8s\.io "(?P<role>[^"]+)" not found')


def rbac_hint(detail: str) -> str:
    """What to do about an RBAC refusal of a kubelock request in a namespace: name the ClusterRole to
    bind there and the command that binds it ("" for any other refusal). Without it a newcomer told
    only "cannot create resource lockclaims" has to find docs/install.md alone."""
    found = _RBAC_REFUSAL.search(detail)
    if found is None:
        return ""
    missing = _ROLE_MISSING.search(detail)
    if missing is not None:
        return (f"; the ClusterRole {missing['role']} your binding names does not exist: kubelock's roles are "
                "not installed in this cluster (uninstalled, or never installed); install kubelock "
                "(docs/install.md) or use the kubeconfig of the cluster that has it")
    user, namespace = found["user"], found["namespace"]
    if found["verb"] in _READ_VERBS:
        role = "kubelock-viewer"
    elif found["resource"].startswith("lockclaims"):
        role = "kubelock-agent"
    else:  # writing locks or policies: a lock admin's right
        role = "kubelock-admin"
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        subject = f"--serviceaccount={parts[2]}:{parts[3]}"
    else:
        subject = f"--user={user}"
    return (f"; a cluster or namespace admin grants it by binding the ClusterRole {role} in namespace "
            f"{namespace}: kubectl -n {namespace} create rolebinding <name> --clusterrole={role} {subject} "
            f"(installed by Helm as a release not named kubelock, the role is <release>-{role}; docs/install.md, "
            "\"Giving people and agents access\")")


def not_installed(doing: str) -> Unreachable:
    """An unserved path of kubelock's own API ("404 page not found"): not an object missing but no
    kubelock API on this cluster, or not yet (an API server just restarted). "Not found" would read
    as "you hold no lock" (exit 2): this is Unreachable (exit 6), reason NotInstalled."""
    return Unreachable(
        f"cannot {doing}: this cluster does not serve kubelock's API (kubelock.dev/v1alpha1): the "
        "LockClaim, ResourceLock and LockPolicy CRDs are not installed, or not served yet (an API server "
        "that has just restarted serves them seconds later; kubectl get crd lockclaims.kubelock.dev). "
        "Install kubelock (docs/install.md), or use the kubeconfig "
        "or --context of the cluster that has it",
        reason=NOT_INSTALLED,
    )


def from_api(
    error: kube_errors.ApiError | kube_errors.Unreachable, doing: str, *, kubelock_api: bool = True
) -> LockError:
    """The SDK error for a failed Kubernetes request; `doing` says what was attempted, `kubelock_api`
    whether the request was to kubelock's own resources (an unserved path then means no CRDs)."""
    if isinstance(error, kube_errors.Unreachable):
        if error.connect_failed:
            # The usual cause for a newcomer: a test bed stopped, or the kubeconfig of another cluster.
            return Unreachable(f"cannot {doing}: {error}; is that cluster running, and is it the one meant? "
                               "The address is the server of the kubeconfig's current context "
                               "(KUBECONFIG, --kubeconfig, --context)")
        return Unreachable(f"cannot {doing}: {error}")
    detail = error.message or str(error)
    if isinstance(error, kube_errors.Unauthorized):
        # A 401 is about the credentials, not the rights: "not allowed to" would send the caller to
        # look at RBAC when the token expired or was revoked (a rotated ServiceAccount token).
        return Forbidden(f"cannot {doing}: the API server did not accept the credentials ({error.status} "
                         f"{error.reason or 'Unauthorized'}: an expired or revoked token, or a wrong kubeconfig)")
    if isinstance(error, kube_errors.Forbidden):
        return Forbidden(f"not allowed to {doing}: {detail}{rbac_hint(detail)}")
    if isinstance(error, kube_errors.NotFound):
        details = error.body.get("details") or {}
        if details.get("kind") == "namespaces":
            # A claim in a namespace that does not exist: a typo, or a namespace picked up from the
            # environment or the kubeconfig without the caller noticing. Say where it came from.
            return NotFound(f"cannot {doing}: namespace {details.get('name') or '?'} does not exist; choose an "
                            "existing one (namespace=, -n/--namespace, KUBELOCK_NAMESPACE, POD_NAMESPACE or the "
                            "kubeconfig context's namespace, in that order)")
        return NotFound(f"cannot {doing}: {detail}")
    if isinstance(error, kube_errors.Unserved):
        if kubelock_api:
            return not_installed(doing)
        # Another API's path unserved (an API server too old for SelfSubjectReview): no kubelock
        # resource is concerned, and nothing is said of its CRDs.
        return NotFound(f"cannot {doing}: {detail}")
    if isinstance(error, kube_errors.Invalid):
        return InvalidInput(f"the API server refused to {doing}: {detail}")
    # Throttling or server trouble that outlasted the retries, or an unexpected status: fail closed.
    return Unreachable(f"cannot {doing}: the API server answered {error.status} {error.reason}: {detail}")
