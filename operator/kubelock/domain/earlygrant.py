"""Whether a restarted operator may grant a new claim from a small view, before its whole priming.

A restarted operator decides nothing until it has listed every claim and lock (the freshness gate),
and with 10 000 of each that LIST is seconds of the API server's time. A new claim's decision needs
far less: the claims of its resource, the claims of several resources (one may name it), the
resource's lock and policy. The operator lists those alone (selectable fields, docs/api.md) and feeds
them to the same `arbiter.decide`. What it then applies must be what the whole view would decide, so
this module says no whenever the small view may lack something the decision rests on:

- the claim is not a new claim of one resource (answered already, or of several resources);
- a claim of several resources names the resource (its decision spans resources the view lacks);
- the resource's LockPolicy counts quotas (they count claims across the namespace) or sets a
  lock-delay (a rest is carried by finished claims, and one spelled differently is not listed);
- the decision does anything but grant this claim and tell it so, beside Pending answers to other
  claims: an ending of another claim, a revocation, a preemption, a lock deleted or renewed for
  another, a Pending or Rejected answer to this claim (those follow from the queue, the holders'
  liveness and the wait-for graph, which the normal path sees whole).

Cleanup of finished claims (`DeleteClaim`) is left out of what is applied: it rests on nothing the
grant does, and the normal path does it.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubelock.domain.lockpolicy import LockPolicy
from kubelock.domain.model import Action, Claim, CreateLock, Decision, DeleteClaim, RenewLock, SetStatus
from kubelock.domain.reasons import Phase


def refusal(claim: Claim | None, resource: str, others: Iterable[Claim], lock_policy: LockPolicy) -> str | None:
    """Why the small view of `resource` cannot decide `claim` (None: it can). `others`: every other
    claim the view holds (the resource's claims and the claims of several resources)."""
    if claim is None:
        return "the claim is gone"
    if claim.multi:
        return "a claim of several resources"
    if claim.status is not None:
        return "answered already"
    if claim.resource != resource:
        return "a claim of another resource"
    if any(other.multi and other.active and resource in other.resources for other in others):
        return "a claim of several resources names the resource"
    if lock_policy.quotas.any:
        return f"LockPolicy {lock_policy.name} counts quotas"
    if lock_policy.lock_delay_seconds > 0:
        return f"LockPolicy {lock_policy.name} sets a lock-delay"
    return None


def _subject_uid(action: Action) -> str | None:
    if isinstance(action, SetStatus | CreateLock):
        return action.claim.uid
    if isinstance(action, RenewLock):
        return action.lock.claim_uid
    return None  # a lock deleted, a finished claim removed


def grant_actions(uid: str, decision: Decision) -> tuple[Action, ...] | None:
    """The actions of `decision` to apply early: those of the claim `uid` — its grant (its lock
    created or its grant added), then its Held status (with the lock's renewal, if the decision
    renews it). Pending answers to other claims may come with them and are left out: they rest on the
    queue's order and the wait-for graph, which the normal path sees whole, and no grant rests on
    them. None when the decision is anything else: the normal path decides then."""
    actions = [
        a for a in decision.actions if not isinstance(a, DeleteClaim) and not _overdue_answer_beside(a, decision)
    ]
    mine = tuple(a for a in actions if _subject_uid(a) == uid)
    if not mine:
        return None
    if any(isinstance(a, SetStatus) and a.status.phase is not Phase.HELD for a in mine):
        return None
    others = (a for a in actions if _subject_uid(a) != uid)
    if any(not (isinstance(a, SetStatus) and a.status.phase is Phase.PENDING) for a in others):
        return None
    return mine


def _overdue_answer_beside(action: Action, decision: Decision) -> bool:
    """The Pending first answer the arbiter gives an overdue claim beside its own grant
    (`arbiter.due_answers`): left out, like other Pending answers; the early path tells it Held."""
    if not isinstance(action, SetStatus) or action.status.phase is not Phase.PENDING or action.claim.status is not None:
        return False
    return any(isinstance(a, CreateLock) and a.claim.uid == action.claim.uid for a in decision.actions)
