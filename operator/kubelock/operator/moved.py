"""Whether the cache already holds a newer version of what a failed write rested on.

A conditional write fails (409, or 404 for a lock gone) when its object changed after the decision
read it: another replica's write, the holder's renewal, a release. The watch carries that change too,
and under load it often arrives before the failed write's own response (they travel on different
connections), so the cache has moved past the decision's version by the time the failure is read.
A GET then adds nothing the next decision needs, and costs a request of the busy API server on the
key's path: the next round waits for it. Re-reading only when the cache has not moved keeps every
write as conditional as before (the next decision's writes rest on the cache's version, and fail
again if that is not the latest), while two replicas writing one resource pay one request, not two,
per write that lost.
"""

from __future__ import annotations

from kubelock.api.objects import revision_of
from kubelock.kube.codec import ClaimRecord
from kubelock.operator.cache import LockRecord


def claim_moved(written_on: ClaimRecord | None, current: ClaimRecord | None) -> bool:
    """A status write rested on `written_on`; the cache now holds `current` (None: the claim's
    deletion was seen). True when the cache has seen a later write of it, or its deletion."""
    if written_on is None:
        return False
    if current is None:
        return True
    return revision_of(current.resource_version) > revision_of(written_on.resource_version)


def lock_moved(written_on: LockRecord | None, current: LockRecord | None) -> bool:
    """A lock write rested on `written_on` (None: no lock was seen, the write was a create); the
    cache now holds `current`. True when the cache shows a lock write after it: a lock where none
    was, none where one was (its deletion seen), another lock object, or a later version of it."""
    if written_on is None or current is None:
        return (written_on is None) != (current is None)
    if current.uid != written_on.uid:
        return True
    return revision_of(current.version) > revision_of(written_on.version)
