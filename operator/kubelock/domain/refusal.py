"""A claim told that the API server refused to store its grant (`LockRefused`).

The operator's create of a ResourceLock can be refused for reasons no decision can see: a used-up
ResourceQuota on `count/resourcelocks.kubelock.dev`, an admission webhook, RBAC the operator lacks.
Nothing is granted then (fail closed), and the claim's own status says why (`arbiter.lock_refused`):
a try-lock ends `Rejected`, a waiter stays `Pending` with reason `LockRefused`. A waiter is told once
per refusal episode: while its status says `LockRefused` a refusal again is no news. The episode ends
when anything else is written (Held, another reason to wait, its end); a wait that runs out while
refused says so (`refusal_note`), so the client learns why it was never granted.
"""

from __future__ import annotations

from kubelock.domain.model import Claim
from kubelock.domain.reasons import Phase, Reason

# How the waiter's message says when the grant is tried again; left out when its end quotes it.
RETRY_CLAUSE = "; trying again every"


def told_refused(claim: Claim) -> bool:
    """The claim's status already says its grant was refused (this refusal episode is told)."""
    status = claim.status
    return status is not None and status.phase is Phase.PENDING and status.reason is Reason.LOCK_REFUSED


def refusal_note(claim: Claim) -> str:
    """For the message of a waiter's end (its wait ran out): why it was not granted, when the last
    thing it was told is that the API server refused its grant; "" otherwise."""
    if claim.status is None or not told_refused(claim):
        return ""
    return f"; not granted because {claim.status.message.split(RETRY_CLAUSE)[0]}"
