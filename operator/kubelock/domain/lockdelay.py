"""Lock-delay: after a grant ends abnormally (its lease expired, its holder's pod terminated, or an
admin broke the lock) its resource rests for the governing LockPolicy's `lockDelaySeconds`, so that a
holder which has not noticed its loss cannot overlap the next one. A release (the holder deleting its
claim) has no delay.

Where the fact lives: the grant's claim ends with a status that records `availableAt` (the end of the
rest) beside `finishedAt` (when the grant ended). That claim stays in the API as its holder's record
(the operator does not remove it before `availableAt`), so the rest survives an operator restart: the
operator's memory of it is rebuilt from the claims it lists. The rest ends early when the ended claim
is deleted (its holder acknowledged the loss) or when the policy's delay is lowered or the policy is
deleted (`until` is capped by the delay the policy sets now).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubelock.domain.lockpolicy import LockPolicy
from kubelock.domain.model import FinishedClaim
from kubelock.domain.reasons import Reason
from kubelock.domain.timefmt import to_rfc3339

# The ends of a grant after which its resource rests (a namespace being deleted grants nothing more).
ABNORMAL = frozenset(
    {Reason.LEASE_EXPIRED, Reason.LOCK_BROKEN, Reason.HOLDER_POD_TERMINATED, Reason.REVOCATION_GRACE_EXPIRED}
)


@dataclass(frozen=True, slots=True)
class Rest:
    """The resource may not be granted before `until`; `cause` says why, for the waiters."""

    until: float
    cause: str


def available_at(policy: LockPolicy, now: float) -> float | None:
    """When a resource whose grant ends abnormally `now` may be granted again (None: no delay)."""
    return now + policy.lock_delay_seconds if policy.lock_delay_seconds > 0 else None


def rest(records: Iterable[FinishedClaim], policy: LockPolicy, now: float) -> Rest | None:
    """The rest a resource is in at `now`, from the records of its ended claims: the latest end of a
    lock-delay still to come, never later than the delay the governing policy sets now."""
    latest: tuple[float, FinishedClaim] | None = None
    for record in records:
        if record.available_at is None or record.reason not in ABNORMAL:
            continue
        until = min(record.available_at, record.finished_at + policy.lock_delay_seconds)
        if until > now and (latest is None or until > latest[0]):
            latest = (until, record)
    if latest is None:
        return None
    until, record = latest
    return Rest(until, f"{_what(record)} at {to_rfc3339(record.finished_at)} (lock-delay of {policy.describe()})")


def _what(record: FinishedClaim) -> str:
    if record.reason is Reason.LEASE_EXPIRED:
        return f"the lease of {record.holder} expired"
    if record.reason is Reason.HOLDER_POD_TERMINATED:
        return f"the pod of {record.holder} terminated"
    if record.reason is Reason.REVOCATION_GRACE_EXPIRED:
        return f"the lock of {record.holder} was broken when its revocation grace ran out"
    return f"the lock of {record.holder} was broken"
