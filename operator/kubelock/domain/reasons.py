"""Phases and reasons shared by conditions, Events, logs, metrics and SDK errors."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "Pending"
    HELD = "Held"
    REJECTED = "Rejected"
    TIMED_OUT = "TimedOut"
    EXPIRED = "Expired"
    DEADLOCKED = "Deadlocked"
    REVOKED = "Revoked"

    @property
    def terminal(self) -> bool:
        return self not in (Phase.PENDING, Phase.HELD)


TERMINAL_PHASES = frozenset(p for p in Phase if p.terminal)

# How a try-lock's refusal ends: the advice for a claim written as YAML. A refused claim is never
# tried again and its `wait` cannot change (an edit is refused), so both ways on need the claim made
# anew, and the advice names the command that does it. The CLI swaps the advice for its own command's
# way to queue and keeps the rest of the operator's sentence (who holds it, with how many).
_ANEW = ("; either way create the claim anew, which `kubectl replace --force -f FILE` does (a refused claim "
         "is not tried again, and its wait cannot change)")
QUEUE_ADVICE = "try again later, or queue for it with wait: true" + _ANEW
# The same for a try-lock refused while its resource rests (lock-delay): it may be tried again at a
# known time.
REST_ADVICE = "try again then, or queue for it with wait: true" + _ANEW


class Reason(StrEnum):
    GRANTED = "Granted"
    QUEUED = "Queued"
    HELD_BY_ANOTHER = "HeldByAnotherHolder"
    WAIT_TIMED_OUT = "WaitTimedOut"
    LEASE_EXPIRED = "LeaseExpired"
    LOCK_BROKEN = "LockBroken"
    HOLDER_POD_TERMINATED = "HolderPodTerminated"
    POD_NOT_FOUND = "PodNotFound"
    DEADLOCK = "DeadlockDetected"
    SELF_DEADLOCK = "SelfDeadlock"
    INVALID_SPEC = "InvalidSpec"
    RENEWED = "Renewed"
    STALE = "Stale"
    RELEASED = "Released"
    NAMESPACE_DELETED = "NamespaceDeleted"
    LOCK_DELAY = "LockDelay"  # the resource rests after a grant ended abnormally
    QUOTA_EXCEEDED = "QuotaExceeded"
    REVOCATION_REQUESTED = "RevocationRequested"
    REVOCATION_GRACE_EXPIRED = "RevocationGraceExpired"
    REQUEUED = "Requeued"
    # A claim of several resources gives back the grants it had taken when the rest of its set was
    # taken meanwhile; then it waits again (Pending). It is never Held with part of its set.
    GIVING_BACK = "GivingBack"
    # The API server refused to store a grant (a ResourceQuota on `count/resourcelocks.kubelock.dev`,
    # an admission webhook, the operator's RBAC): nothing is granted, the claim waits, and the grant
    # is tried again later.
    LOCK_REFUSED = "LockRefused"


# A try-lock refused for these may succeed later without any change to the claim: the resource is
# busy (held, or resting after a lost grant). Clients report them as "held", not as bad input.
BUSY_REASONS = frozenset({Reason.HELD_BY_ANOTHER.value, Reason.LOCK_DELAY.value})

# Condition types written on LockClaims.
CONDITION_HELD = "Held"
CONDITION_STALE = "Stale"

# The Event reason for each phase a claim can enter.
PHASE_EVENT_REASON: dict[Phase, Reason] = {
    Phase.HELD: Reason.GRANTED,
    Phase.PENDING: Reason.QUEUED,
}

# The reasons whose Events are Warnings (docs/api.md lists them; tests/unit/test_api_documented.py
# holds the domain's Notices and ended claims to it). A wait that timed out is a Normal Event: the
# claim asked for a bounded wait and got one.
WARNING_REASONS = frozenset(
    {
        Reason.LEASE_EXPIRED,
        Reason.LOCK_BROKEN,
        Reason.HOLDER_POD_TERMINATED,
        Reason.POD_NOT_FOUND,
        Reason.DEADLOCK,
        Reason.SELF_DEADLOCK,
        Reason.INVALID_SPEC,
        Reason.STALE,
        Reason.NAMESPACE_DELETED,
        Reason.QUOTA_EXCEEDED,
        Reason.REVOCATION_REQUESTED,
        Reason.REVOCATION_GRACE_EXPIRED,
        Reason.LOCK_REFUSED,
    }
)
