"""What the operator saw and decided, claim by claim, at debug level on the logger `kubelock.view`
(`--debug kubelock.view`): when a claim entered the operator's view (a watch event or a LIST) and
left it, every decision on a resource with the claims it was taken on, which grants waited for a
fresher view and why, and which writes failed on a stale view.

A claim that goes unanswered for seconds is then taken apart from the log alone: late into the view
(the watch behind), in the view but not decided (the work queue), decided but held back (the
freshness gate), or decided and its write late or failed. Off by default: a line per decision.
Every function returns at once when the logger is not enabled for debug.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from kubelock.domain.model import Action, Claim, CreateLock, DeleteClaim, DeleteLock, Lock, RenewLock, SetStatus

log = logging.getLogger("kubelock.view")
Body = dict[str, Any]


def enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def entered(body: Body, via: str) -> None:
    """A claim the cache did not hold came in through `via` (a watch event's type, or "LIST")."""
    if not enabled():
        return
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    log.debug(
        "claim %s/%s entered the view (%s): uid %s, resource %s, version %s, created %s, phase %s",
        meta.get("namespace"), meta.get("name"), via, meta.get("uid"), spec.get("resource") or spec.get("resources"),
        meta.get("resourceVersion"), meta.get("creationTimestamp"), status.get("phase"),
    )


def resumed(noun: str, scope: str | None, seconds: float) -> None:
    """A watch that broke delivers again, `seconds` after it broke (its reconnect and the replay of
    what it missed): claims created meanwhile enter the view now."""
    if enabled():
        log.debug("%s watch of %s delivers again, %.2f s after it broke", noun,
                  f"namespace {scope}" if scope else "all namespaces", seconds)


def left(body: Body, known: bool) -> None:
    """A claim's deletion event (`known`: the cache held it until now)."""
    if not enabled():
        return
    meta = body.get("metadata") or {}
    log.debug(
        "claim %s/%s left the view (DELETED%s): uid %s, version %s",
        meta.get("namespace"), meta.get("name"), "" if known else ", never seen before", meta.get("uid"),
        meta.get("resourceVersion"),
    )


def listed(namespace_names: Iterable[tuple[str, str]], version: int) -> None:
    """Claims a LIST at `version` brought into the view (they were not in the cache)."""
    if not enabled():
        return
    names = sorted(f"{ns}/{name}" for ns, name in namespace_names)
    if names:
        log.debug("LIST at version %d brought %d claims into the view: %s", version, len(names), " ".join(names))


def decided(
    key: tuple[str, str], claims: Sequence[Claim], grants: Sequence[Lock], actions: Sequence[Action],
    held_back: Sequence[Action] = (), why: str = "",
) -> None:
    """One round of a resource's reconcile: the claims and grants it was taken on, what it does now,
    and the grants that wait for a fresher view (with why)."""
    if not enabled():
        return
    namespace, resource = key
    log.debug(
        "decided %s in %s on claims [%s] grants [%s]: %s%s",
        resource, namespace,
        _claims(claims),
        " ".join(g.claim_name for g in grants),
        " ".join(describe(a) for a in actions) or "nothing",
        f"; held back for a fresh view ({why}): {' '.join(describe(a) for a in held_back)}" if held_back else "",
    )


def _claims(claims: Sequence[Claim]) -> str:
    """Each claim a decision was taken on: name, phase ('-': none yet) and arrival sequence."""
    return " ".join(f"{c.name}:{c.phase.value if c.phase else '-'}:{c.sequence}" for c in claims)


def beside_run(key: tuple[str, str], claims: Sequence[Claim], actions: Sequence[Action]) -> None:
    """First answers decided beside a resource's run under way (`operator/busyanswers.py`)."""
    if not enabled():
        return
    namespace, resource = key
    log.debug(
        "decided %s in %s beside its run on claims [%s]: %s",
        resource, namespace,
        _claims(claims),
        " ".join(describe(a) for a in actions),
    )


def failed(namespace: str, action: Action, why: str) -> None:
    """A write of a decision failed on a stale view (the key is decided again)."""
    if enabled():
        log.debug("write %s in %s failed on a stale view: %s", describe(action), namespace, why)


def moved(namespace: str, action: Action) -> None:
    """The write that failed is already followed by a later version in the cache: no re-read."""
    if enabled():
        log.debug("write %s in %s: the watch has brought a later version: decided again without a re-read",
                  describe(action), namespace)


def gone(namespace: str, action: Action) -> None:
    """A status write of a decision found its claim deleted: nobody to tell, the rest goes ahead."""
    if enabled():
        log.debug("write %s in %s found its claim gone: the rest of the decision goes ahead",
                  describe(action), namespace)


def describe(action: Action) -> str:
    if isinstance(action, SetStatus):
        return f"status({action.claim.name}={action.status.phase.value})"
    if isinstance(action, CreateLock):
        return f"grant({action.claim.name})"
    if isinstance(action, RenewLock):
        return f"renew({action.lock.claim_name})"
    if isinstance(action, DeleteLock):
        return f"ungrant({action.lock.claim_name},{action.reason.value})"
    assert isinstance(action, DeleteClaim)
    return f"remove({action.claim.name})"
