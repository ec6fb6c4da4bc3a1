"""The wait-for graph of one lock space (namespace) and cycle detection over it.

Nodes are holders. A holder H that waits (a real pending claim, never a rejected try-lock) for a
resource R has an edge H -R-> G to every holder G that blocks it there:

- every G with a grant on R that alone keeps H's request out (`grants.blocks`): an exclusive grant
  blocks everything, a shared grant blocks an exclusive request, and a semaphore grant blocks a
  request whose permits do not fit beside its own. A wait that any one of several releases would
  end (permits) is no edge, so every edge is a release the waiter needs and a cycle is a deadlock;
- when R has grants but none of them blocks the request, every other G with a request queued ahead
  of it on R that keeps it out: the queue serves requests in order, so the waiter needs that one
  granted and released first (a shared request behind a queued exclusive one, a small permit
  request behind a large one). A free resource gives no edge: its head is granted next; except when a
  claim of several resources queued ahead keeps the waiter out (`reserves`): it holds nothing, but
  waits for another of its resources, and the waiter needs it granted and released first.

"Ahead" is the order in which the grant decision serves the queue (`grants.Request.order`):
effective priority at `now` (priority aged by the time waited, `grants.effective_priority`), then
arrival. Each wait keeps its `Place` (priority, when it began waiting, sequence), and each queue's
aging starts are clamped in arrival order as the grant decision clamps them (`aging.QueueAging`, built
from the same waits), so the graph ranks waits exactly as `decide` does, and a cycle through the queue
is reported exactly when that order closes one: a later waiter of higher priority is ahead of an
earlier one, and a waiter that has aged past a newcomer is ahead of it again.

A claim closes a cycle when a holder it waits for can reach the claim's own holder. The search starts
at those holders and only follows edges out of what it reaches, so its cost grows with the path, not
with the number of claims.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from kubelock.domain.aging import UNQUEUED, QueueAging
from kubelock.domain.grants import EXCLUSIVE, Mode, Need, blocks, effective_priority

# A cycle is reported with at most this many of its waits: the first half of them from the claim that
# closed it (what it waits for, and on) and the second half leading back to it (who waits for what it
# holds). A report grows with the cycle, and a claim's status is written, stored, watched and parsed
# whole: a chain of 1 000 holders made each Deadlocked status ~170 kB (path, message and condition),
# and long names put a cycle of a few hundred past the API server's request limit.
CYCLE_SHOWN = 16


@dataclass(frozen=True, slots=True)
class Edge:
    waiter: str
    resource: str
    sequence: int  # of the newest claim with which `waiter` waits for `resource`


@dataclass(frozen=True, slots=True)
class Cycle:
    edges: tuple[Edge, ...]  # starts with the edge of the claim the search was asked about

    @property
    def path(self) -> tuple[str, ...]:
        """Holders and resources alternating, starting and ending with the first waiter."""
        out: list[str] = []
        for edge in self.edges:
            out += [edge.waiter, edge.resource]
        out.append(self.edges[0].waiter)
        return tuple(out)

    @property
    def shown(self) -> tuple[str, ...]:
        """`path`, of a cycle longer than CYCLE_SHOWN waits only its first and last CYCLE_SHOWN / 2
        waits: still holders and resources alternating, from and back to the first waiter. The waits
        left out follow the first half (`describe` says how many)."""
        if len(self.edges) <= CYCLE_SHOWN:
            return self.path
        half = CYCLE_SHOWN // 2
        return Cycle((*self.edges[:half], *self.edges[-half:])).path

    @property
    def victim(self) -> Edge:
        """The newest wait in the cycle. Deterministic from the cycle alone, so every replica and
        every order of processing picks the same claim."""
        return max(self.edges, key=lambda e: e.sequence)

    @classmethod
    def self_wait(cls, holder: str, resource: str, sequence: int) -> Cycle:
        """A holder waiting for a resource it already holds through another claim."""
        return cls((Edge(holder, resource, sequence),))


@dataclass(frozen=True, slots=True)
class Place:
    """Where a wait stands in its resource's queue: what `grants.Request.order` ranks it by."""

    sequence: int
    priority: int = 0
    since: float | None = None  # its own aging start (`arbiter.aging_since`); None: now

    def rank(self, order: Order, queue: QueueAging) -> tuple[int, int]:
        """Its key in the queue at `order.now`: lower is served first. `queue`: the aging of the
        queue it stands in, which holds its start back to the starts of the waits ahead of it in
        arrival (`aging.QueueAging`), as `arbiter.queue_order` does."""
        waited = order.now - queue.start(self.sequence, self.since)
        return (-effective_priority(self.priority, waited, order.aging_seconds), self.sequence)


@dataclass(frozen=True, slots=True)
class Order:
    """The moment and the aging rate the queue is ranked at (the decision's `now` and policy)."""

    now: float = 0.0
    aging_seconds: float = 0.0


ARRIVAL = Order()  # every wait at the priority it asked: with no priorities, plain arrival order


def describe(path: tuple[str, ...], length: int | None = None) -> str:
    """A cycle's path as text. `length`: the number of waits in the whole cycle, when `path` may be a
    `Cycle.shown` one that leaves some out."""
    shown = len(path) // 2
    if length is None or length <= shown or shown < 2:
        return " → ".join(path)
    half = shown // 2
    left_out = length - shown
    gap = f"… {left_out} more holder{'s' if left_out > 1 else ''} …"
    return " → ".join((*path[: 2 * half], gap, *path[2 * half :]))


class WaitForGraph:
    def __init__(self) -> None:
        # holder -> resource -> sequence -> what the claim asks of the resource
        self._waits: dict[str, dict[str, dict[int, Need]]] = defaultdict(dict)
        # resource -> holder -> what its grants hold (one entry per grant); a resource held by one
        # exclusive grant, as nearly every held resource is, keeps just its holder's name: the graph
        # has an entry per held lock, and a dict of one tuple cost 130 B more each (`_held`).
        self._grants: dict[str, str | dict[str, tuple[Need, ...]]] = {}
        # resource -> (sequence, holder) -> need and place of every wait on it, for the queue's order
        self._queues: dict[str, dict[tuple[int, str], tuple[Need, Place]]] = defaultdict(dict)
        self._capacity: dict[str, int] = {}
        # resource -> (sequence, holder) -> need and place of the waits of claims of several resources
        self._reserved: dict[str, dict[tuple[int, str], tuple[Need, Place]]] = defaultdict(dict)
        # resource -> the aging starts of its queue, built when it is first ranked after a change
        self._aging: dict[str, QueueAging] = {}

    def __len__(self) -> int:
        return sum(len(seqs) for res in self._waits.values() for seqs in res.values())

    def holders_of(self, resource: str) -> frozenset[str]:
        return frozenset(self._held(resource))

    def _held(self, resource: str) -> dict[str, tuple[Need, ...]]:
        """The resource's grants by holder (empty: nobody holds it)."""
        held = self._grants.get(resource)
        if held is None:
            return {}
        return {held: (EXCLUSIVE,)} if isinstance(held, str) else held

    def set_holder(self, resource: str, holder: str | None) -> None:
        """The resource is held exclusively by `holder` (None: by nobody)."""
        self.set_grants(resource, () if holder is None else ((holder, EXCLUSIVE),))

    def set_grants(self, resource: str, grants: tuple[tuple[str, Need], ...]) -> None:
        """The resource's grants, as (holder, need) pairs; it replaces what was known of them."""
        held: dict[str, tuple[Need, ...]] = {}
        for holder, need in grants:
            held[holder] = (*held.get(holder, ()), need)
        if len(grants) == 1 and grants[0][1] == EXCLUSIVE:
            self._grants[resource] = grants[0][0]
        elif held:
            self._grants[resource] = held
        else:
            self._grants.pop(resource, None)

    def set_capacity(self, resource: str, capacity: int) -> None:
        if capacity == 1:
            self._capacity.pop(resource, None)
        else:
            self._capacity[resource] = capacity

    def forget(self, resource: str) -> None:
        """Nothing is left of `resource` (no claim, no lock): drop its capacity and its queue's aging
        starts, kept otherwise for every resource a policy of capacity above 1 ever governed."""
        self._capacity.pop(resource, None)
        self._aging.pop(resource, None)

    @property
    def empty(self) -> bool:
        """Nothing is known: no wait, grant, capacity or queue."""
        return not (self._waits or self._grants or self._queues or self._capacity or self._reserved or self._aging)

    def add_wait(
        self,
        holder: str,
        resource: str,
        sequence: int,
        need: Need = EXCLUSIVE,
        place: Place | None = None,
        *,
        reserves: bool = False,
    ) -> None:
        """`place`: the wait's priority and start, for the queue's order (default: priority 0).
        `reserves`: the wait of a claim of several resources, which keeps later waiters out of the
        resource even while nobody holds it (see the module's docstring)."""
        entry = (need, place if place is not None else Place(sequence))
        self._waits[holder].setdefault(resource, {})[sequence] = need
        self._queues[resource][(sequence, holder)] = entry
        self._aging.pop(resource, None)
        if reserves:
            self._reserved[resource][(sequence, holder)] = entry

    def remove_wait(self, holder: str, resource: str, sequence: int) -> None:
        self._aging.pop(resource, None)
        for index in (self._queues, self._reserved):
            queue = index.get(resource)
            if queue is not None:
                queue.pop((sequence, holder), None)
                if not queue:
                    del index[resource]
        resources = self._waits.get(holder)
        if not resources or resource not in resources:
            return
        resources[resource].pop(sequence, None)
        if not resources[resource]:
            del resources[resource]
        if not resources:
            del self._waits[holder]

    def waits_of(self, holder: str) -> dict[str, int]:
        return {r: max(s) for r, s in self._waits.get(holder, {}).items()}

    def blockers(
        self, waiter: str, resource: str, sequence: int, need: Need = EXCLUSIVE, order: Order = ARRIVAL
    ) -> list[str]:
        """The holders that `waiter`, asking `need` of `resource` with a claim of `sequence`, waits
        for: the edges out of it (see the module's docstring), in a stable order. The queue is ranked
        by `order`."""
        held = self._held(resource)
        capacity = self._capacity.get(resource, 1)
        if not held:
            return self._ahead(self._reserved.get(resource, {}), waiter, resource, sequence, need, order, capacity)
        if capacity == 1 and need.mode is Mode.EXCLUSIVE:
            return list(held)  # every grant keeps out an exclusive request for the only permit
        hard = [h for h, needs in held.items() if any(blocks(n, need, capacity) for n in needs)]
        if hard:
            return hard
        return self._ahead(self._queues.get(resource, {}), waiter, resource, sequence, need, order, capacity)

    def _ahead(
        self,
        waits: dict[tuple[int, str], tuple[Need, Place]],
        waiter: str,
        resource: str,
        sequence: int,
        need: Need,
        order: Order,
        capacity: int,
    ) -> list[str]:
        """The holders of `waits` ranked ahead of the waiter in the resource's queue that keep it out."""
        if not waits:
            return []
        own = self._queues.get(resource, {}).get((sequence, waiter))
        # Without aging the starts do not matter: the queue is not built (nor rebuilt after a change).
        queue = self._queue_aging(resource) if order.aging_seconds > 0 else UNQUEUED
        mine = (own[1] if own is not None else Place(sequence)).rank(order, queue)
        return sorted(
            {
                h
                for (_, h), (n, place) in waits.items()
                if h != waiter and blocks(n, need, capacity) and place.rank(order, queue) < mine
            }
        )

    def _queue_aging(self, resource: str) -> QueueAging:
        """The aging starts of the resource's queue: of every wait on it (the reserving ones are
        among them), as the grant decision builds them from the resource's waiting claims."""
        aging = self._aging.get(resource)
        if aging is None:
            waits = self._queues.get(resource, {})
            aging = self._aging[resource] = QueueAging((p.sequence, p.since) for _, p in waits.values())
        return aging

    def find_cycle(
        self, waiter: str, resource: str, sequence: int, need: Need = EXCLUSIVE, order: Order = ARRIVAL
    ) -> Cycle | None:
        """The cycle closed by `waiter` waiting for `resource` (with a claim of `sequence` asking
        `need`), if any, with every queue ranked by `order`.

        A cycle of which this wait is the victim (every other wait in it older) is preferred to any
        other: the wait ends exactly when some cycle through it has it as its newest wait, whichever
        cycle a search happens to meet first. A search that met another cycle first would leave
        this one to a victim that is busy with that other cycle, and nobody would end it."""
        first = Edge(waiter, resource, sequence)
        starts = self.blockers(waiter, resource, sequence, need, order)
        if waiter in starts:
            return Cycle((first,))
        mine, passed_newer = self._search(first, starts, order, below=sequence)
        if mine is not None or not passed_newer:
            return mine  # with no newer wait left out, the search for any cycle would be this one again
        return self._search(first, starts, order)[0]

    def reaches(self, waiter: str, starts: Iterable[str], order: Order = ARRIVAL) -> bool:
        """Whether any path of waits from `starts` leads back to `waiter`: one pass over what it
        reaches, each holder once. A claim of several resources asks `find_cycle` once per resource,
        and each search walks what the last one walked: 16 resources whose holders wait on each other
        (no cycle) cost the operator 42 s of CPU for 200 such claims, and another namespace's
        try-lock waited up to 88 s. When no path from all of them together comes back, none of the
        searches can find a cycle."""
        seen = set(starts)
        if waiter in seen:
            return True
        stack = list(seen)
        while stack:
            node = stack.pop()
            for res, seqs in self._waits.get(node, {}).items():
                for seq, asked in seqs.items():
                    for nxt in self.blockers(node, res, seq, asked, order):
                        if nxt == waiter:
                            return True
                        if nxt not in seen:
                            seen.add(nxt)
                            stack.append(nxt)
        return False

    def _search(
        self, first: Edge, starts: list[str], order: Order, below: int | None = None
    ) -> tuple[Cycle | None, bool]:
        """A cycle from `first.waiter` through `starts` back to it, following only waits older than
        `below` when it is given; with whether a newer wait was left out."""
        waiter = first.waiter
        passed_newer = False
        # Iterative DFS from the holders waited for; parent links rebuild the path when found.
        parent: dict[str, Edge | None] = dict.fromkeys(starts)
        stack = list(reversed(starts))
        while stack:
            node = stack.pop()
            for res, seqs in self._waits.get(node, {}).items():
                edge = Edge(node, res, max(seqs))
                if below is not None and edge.sequence >= below:
                    passed_newer = True
                    continue
                for seq, asked in seqs.items():
                    for nxt in self.blockers(node, res, seq, asked, order):
                        if nxt == waiter:
                            edges = [edge]
                            cur = node
                            while (back := parent[cur]) is not None:
                                edges.append(back)
                                cur = back.waiter
                            return Cycle((first, *reversed(edges))), passed_newer
                        if nxt not in parent:
                            parent[nxt] = edge
                            stack.append(nxt)
        return None, passed_newer

