"""The wait-for graph of one lock space (namespace) and cycle detection over it.

Nodes are holders. A holder H that waits (a real pending claim, never a rejected try-lock) for a
resource R held by G gives the edge H -R-> G. A claim closes a cycle when the holder of the
resource it waits for can reach the claim's own holder. The search starts at that holder and only
follows edges out of what it reaches, so its cost grows with the path, not with the number of claims.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


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
    def victim(self) -> Edge:
        """The newest wait in the cycle. Deterministic from the cycle alone, so every replica and
        every order of processing picks the same claim."""
        return max(self.edges, key=lambda e: e.sequence)

    @classmethod
    def self_wait(cls, holder: str, resource: str, sequence: int) -> Cycle:
        """A holder waiting for a resource it already holds through another claim."""
        return cls((Edge(holder, resource, sequence),))


def describe(path: tuple[str, ...]) -> str:
    return " → ".join(path)


class WaitForGraph:
    def __init__(self) -> None:
        self._waits: dict[str, dict[str, set[int]]] = defaultdict(dict)  # holder -> resource -> seqs
        self._holder_of: dict[str, str] = {}

    def __len__(self) -> int:
        return sum(len(seqs) for res in self._waits.values() for seqs in res.values())

    def holder_of(self, resource: str) -> str | None:
        return self._holder_of.get(resource)

    def set_holder(self, resource: str, holder: str | None) -> None:
        if holder is None:
            self._holder_of.pop(resource, None)
        else:
            self._holder_of[resource] = holder

    def add_wait(self, holder: str, resource: str, sequence: int) -> None:
        self._waits[holder].setdefault(resource, set()).add(sequence)

    def remove_wait(self, holder: str, resource: str, sequence: int) -> None:
        resources = self._waits.get(holder)
        if not resources or resource not in resources:
            return
        resources[resource].discard(sequence)
        if not resources[resource]:
            del resources[resource]
        if not resources:
            del self._waits[holder]

    def waits_of(self, holder: str) -> dict[str, int]:
        return {r: max(s) for r, s in self._waits.get(holder, {}).items()}

    def find_cycle(self, waiter: str, resource: str, sequence: int) -> Cycle | None:
        """The cycle closed by `waiter` waiting for `resource` (with a claim of `sequence`), if any."""
        first = Edge(waiter, resource, sequence)
        start = self._holder_of.get(resource)
        if start is None:
            return None
        if start == waiter:
            return Cycle((first,))
        # Iterative DFS from the resource's holder; parent links rebuild the path when found.
        parent: dict[str, Edge | None] = {start: None}
        stack = [start]
        while stack:
            node = stack.pop()
            for res, seqs in self._waits.get(node, {}).items():
                nxt = self._holder_of.get(res)
                if nxt is None:
                    continue
                edge = Edge(node, res, max(seqs))
                if nxt == waiter:
                    edges = [edge]
                    cur = node
                    while (back := parent[cur]) is not None:
                        edges.append(back)
                        cur = back.waiter
                    return Cycle((first, *reversed(edges)))
                if nxt not in parent:
                    parent[nxt] = edge
                    stack.append(nxt)
        return None
