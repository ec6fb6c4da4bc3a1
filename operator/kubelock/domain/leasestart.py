"""When a holder's lease starts: at the write that tells it `Held`, not at the decision to grant.

A grant is decided at one moment, stored by a write of its lock (the create, an add, a hand-over) and
told by a second write, the claim's `Held` status; only the second lets the holder know it holds. On
a busy API server each write takes a second or more (1.0-2.1 s at load 10 in the loaded chaos run of
docs/reliability.md), so a lease counted from the decision reaches its holder with those seconds
gone: a 3 s lease was told with 0.7 s left, or after its end. The lock keeps the decision's
timestamps (what the lock's write said; rewriting them would cost a write); the `Held` status is
stamped at the moment its write is sent, with the whole lease from there. The expiry in force is the
later of the two, as it is for a renewal (`arbiter._grant_step`, `multiclaim`), so it moves only later,
and a replica that starts, or restarts, reads it back from the claim: API state alone.

What is left between the stamp and the holder's knowing is that one write's way to the API server
and the watch that brings it back: a holder renews at once when it is told with less than its renew
interval's worth already gone (`kubelock.sdk.renewal.first_renewal_in`).

The lock's `spec.expireTime` is written before the `Held` status and never rewritten for it (that
would be one more write per grant), so counted from the decision alone it showed a lease ending
before the one its holder was told, until the first renewal: an admin reading `kubectl get
resourcelocks` saw "expired" a lock its holder still held, and a tool reading the lock misjudged it.
The lock therefore shows the latest end the holder is told when its `Held` write is sent in
time (`shown_expiry`): never before `acquireTime + lease + allowance`, where the allowance (the
lease, at most 30 s) covers how late that write may be sent. It is later than the holder's by what
the allowance left unused until a renewal passes `acquireTime + allowance`, and from then on the two
are the same. A `Held` write sent later than the allowance (a short lease on a loaded API server)
still gives the holder its whole lease from the write, and the lock shows the earlier end until the
first renewal: capping the holder at what the lock shows told holders of a 3 s lease, written 6 s
after their grant, a lease that had already run out (the loaded chaos run's `agent-freeze`: waiters
that ended `Expired` the moment they were told). The holder's lease comes first; the lock's
`expireTime` is what an admin reads, and the lock is deleted when the lease in force ends. The
expiry in force is the claim's (the later of the two above, as before): a holder that ends before
its first renewal is expired when its own lease ends, not when the lock's does.
"""

from __future__ import annotations

from dataclasses import replace

from kubelock.domain.model import ClaimStatus, Lock
from kubelock.domain.reasons import Phase

ALLOWANCE_MAX_SECONDS = 30.0


def allowance(lease_seconds: float) -> float:
    """How late after its grant the `Held` write may be sent and still give the whole lease: the
    lease itself (a holder told later than that was told after its grant's lease would have ended;
    the loaded chaos run's worst was 1.6 s of a 3 s lease), at most 30 s, so that a long lease's lock
    does not show an end much later than its holder's."""
    return min(float(lease_seconds), ALLOWANCE_MAX_SECONDS)


def shown_expiry(acquired_at: float, renewed_at: float, lease_seconds: float) -> float:
    """A grant's `spec.expireTime`: the end of the lease from its last renewal, never before the
    latest end its first `Held` can be told (`acquired_at + lease + allowance`). It only moves later
    as renewals do, and is the same as the holder's once a renewal passes that point."""
    return max(renewed_at + lease_seconds, acquired_at + lease_seconds + allowance(lease_seconds))


def lock_shows(lock: Lock) -> float:
    """`shown_expiry` of a grant as the domain sees it."""
    return shown_expiry(lock.acquired_at, lock.renewed_at, lock.lease_seconds)


def told_at(status: ClaimStatus, now: float) -> ClaimStatus:
    """`status`, a claim's first `Held`, as written at `now`: its lease (from `renewed_at` to
    `expires_at`) moved to start at `now`, never earlier than it was. Any other status is written as
    it is."""
    if status.phase is not Phase.HELD or status.renewed_at is None or status.expires_at is None:
        return status
    if now <= status.renewed_at:
        return status
    moved = now - status.renewed_at
    return replace(status, renewed_at=now, expires_at=status.expires_at + moved)
