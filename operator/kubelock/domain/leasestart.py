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
"""

from __future__ import annotations

from dataclasses import replace

from kubelock.domain.model import ClaimStatus
from kubelock.domain.reasons import Phase


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
