"""When a queued claim begins to age: never before a claim that arrived ahead of it in the same queue.

A claim's own start (`arbiter.aging_since`) is a whole second of the API server's: the second of its
`creationTimestamp`, or of its last requeue. The API server stamps that second before the create
commits, while a claim's place in arrival (its sequence) is the revision the create commits at; so
of two creates a few milliseconds apart across a second's boundary, the later one can carry the
earlier second. Aged by that second alone, it would be a point ahead of the earlier claim of its own
priority for up to a second and overtake it.

So a queue's starts are clamped in arrival order to a running maximum: a claim ages from its own
start or from the latest start of the waits of the queue that arrived before it, whichever is later.
Among claims of one priority an earlier one has then always aged at least as much as a later one, and
with every priority equal the queue is first come, first served at every `now`. A claim of a lower
priority still ages past newcomers of a higher one: it is held back only to the starts of those that
arrived before it, which are later than its own by at most the second of jitter (a requeued claim
takes a new sequence with its new start, so it is behind every claim already queued, never before).

The starts are computed from the queue's waits only: the claims that `Claim.waiting` says wait, which
is exactly what the wait-for graph holds of the queue. The grant decision (`arbiter.queue_order`) and
the graph's ranking (`waitfor.Place`) build the same `QueueAging` from the same waits, so they agree
on who is ahead, which the deadlock detection rests on. A claim that is not such a wait (an undecided
try-lock, a holder) is itself held back to the waits before it, but holds back nobody: the graph
holds no try-locks, so a try-lock stamped a second late cannot hold back a waiter behind it without
the two rankings parting. Such a waiter can rank ahead of the try-lock for up to a second, which
matters only if the try-lock's first decision (its only one: it is granted or refused there) falls
in that second.

The start of a wait whose start is not known (`None`: not answered yet, it ages from now) counts as
later than every second: it does not age, and neither does anything behind it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate


class QueueAging:
    """The aging starts of one resource's queue. Built in O(n log n) from the waits' (sequence,
    start); each `start` is a binary search, so ranking a queue stays O(n log n)."""

    __slots__ = ("_latest", "_sequences")

    def __init__(self, waits: Iterable[tuple[int, float | None]]) -> None:
        ordered = sorted((sequence, math.inf if since is None else since) for sequence, since in waits)
        self._sequences = [sequence for sequence, _ in ordered]
        # _latest[i]: the latest start among the first i + 1 waits in arrival order
        self._latest = list(accumulate((since for _, since in ordered), max))

    def start(self, sequence: int, since: float | None) -> float:
        """When a claim of `sequence` whose own start is `since` (None: now) ages from in this queue:
        the latest of `since` and the starts of the waits of an earlier sequence (`math.inf`: it
        does not age)."""
        own = math.inf if since is None else since
        before = bisect_left(self._sequences, sequence)  # the waits of an earlier sequence
        return own if before == 0 else max(own, self._latest[before - 1])


UNQUEUED = QueueAging(())  # no wait ahead of anyone: every claim ages from its own start
