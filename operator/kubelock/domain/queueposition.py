"""How fresh a waiter's written status is kept while it only moves in its queue.

Every grant moves every waiter behind it up one place. Writing each waiter's exact position on every
grant costs a write per waiter per grant — O(waiters) writes for each grant, which at a few dozen
waiters a resource is most of what a contended lock costs the API server. What a waiter needs is to
know when it is next, and roughly how far back it is otherwise. So a waiter whose status would change
only in its position (and the holder and message that go with it) is rewritten when:

- it becomes first in the queue, or stops being first (position 1 is always exact), or, while first,
  the grant it waits on changes hands (the holder it names is the one it waits for);
- its position has halved or doubled since it was last written: a written position p means the
  actual one lies strictly between p/2 and 2p.

A waiter that moves from position p to the front is so written about log2(p) times, not p times.
Anything else that changes (the phase, the reason, when the resource becomes available, requeues) is
written at once.
"""

from __future__ import annotations

from dataclasses import replace

from kubelock.domain.model import ClaimStatus


def worth_writing(current: ClaimStatus | None, pending: ClaimStatus) -> bool:
    """Whether a waiter whose status is `current` must be told `pending` now."""
    if current is None:
        return True
    if current == pending:
        return False
    moved_only = replace(current, queue_position=pending.queue_position, holder=pending.holder, message=pending.message)
    if moved_only != pending:
        return True
    if pending.queue_position == 1 and current.holder != pending.holder:
        return True
    return out_of_band(current.queue_position, pending.queue_position)


def out_of_band(written: int | None, actual: int | None) -> bool:
    """Whether `actual` is no longer strictly between half and twice the `written` position."""
    if written is None or actual is None:
        return written != actual
    return 2 * actual <= written or actual >= 2 * written
