"""One heap of deadlines for every lease, wait timeout and stale check in the operator.

Instead of a timer task per object (10 000 locks would be 10 000 tasks), keys are scheduled here
and a single sleeper wakes at the earliest one. Only the earliest deadline per key is kept: the
reconcile that runs when it fires computes and schedules the next one.

An entry superseded (by an earlier deadline of its key) or cancelled stays in the heap until it comes
to the top; when such entries outnumber the live ones the heap is rebuilt from the live ones, so a
key forgotten (its object deleted) costs nothing until its old deadline, however far off.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

COMPACT_SLACK = 64  # dead entries tolerated beyond the live ones before a rebuild (small heaps: never)


class DeadlineHeap(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._when: dict[K, float] = {}
        self._counter = 0  # keeps heap entries comparable without comparing keys

    def __len__(self) -> int:
        return len(self._when)

    def schedule(self, key: K, when: float) -> bool:
        """Schedule `key` at `when` unless it is already due earlier. True if the earliest
        deadline of the whole heap moved earlier (the sleeper must wake and re-arm)."""
        current = self._when.get(key)
        if current is not None and current <= when:
            return False
        head = self.next_deadline()
        self._when[key] = when
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, key))
        self._compact()
        return head is None or when < head

    def scheduled(self, key: K) -> bool:
        return key in self._when

    def cancel(self, key: K) -> None:
        self._when.pop(key, None)
        self._compact()

    def _compact(self) -> None:
        """Rebuild the heap from the live deadlines once the dead entries are more than half of it
        (amortised: each rebuild follows at least as many schedules or cancels as it keeps)."""
        if len(self._heap) > 2 * len(self._when) + COMPACT_SLACK:
            self._heap = [entry for entry in self._heap if self._when.get(entry[2]) == entry[0]]
            heapq.heapify(self._heap)

    def next_deadline(self) -> float | None:
        self._drop_superseded()
        return self._heap[0][0] if self._heap else None

    def pop_all(self) -> list[K]:
        """Every key, earliest deadline first, and the heap emptied."""
        keys = sorted(self._when, key=self._when.__getitem__)
        self._when.clear()
        self._heap.clear()
        return keys

    def pop_due(self, now: float) -> list[K]:
        due: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._when.get(key) == when:
                del self._when[key]
                due.append(key)
        return due

    def _drop_superseded(self) -> None:
        while self._heap and self._when.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
