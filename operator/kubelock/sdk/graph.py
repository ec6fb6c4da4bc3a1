"""The wait-for graph of a lock space as data, and its Graphviz DOT rendering (pure functions).

Holders wait for resources (their Pending claims); resources are held by holders (ResourceLocks:
every grant's holder, so Shared holders and a semaphore's permits each have their edge).
A cycle holder → resource → holder → … → holder is a deadlock; the operator refuses the claim that
would close one, so a live cycle is drawn in red because it should never be seen.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass

from kubelock.domain.reasons import Phase
from kubelock.sdk.model import ClaimInfo, LockInfo


@dataclass(frozen=True, slots=True)
class WaitGraph:
    held_by: dict[str, tuple[str, ...]]  # resource -> the holder of every grant, the first grant's first
    waits: tuple[tuple[str, str], ...]  # (waiter, resource), in a stable order

    @property
    def holders(self) -> list[str]:
        return sorted({*(h for hs in self.held_by.values() for h in hs), *(w for w, _ in self.waits)})

    @property
    def resources(self) -> list[str]:
        return sorted({*self.held_by, *(r for _, r in self.waits)})


def build(claims: Iterable[ClaimInfo], locks: Iterable[LockInfo]) -> WaitGraph:
    # Every grant: a waiter blocked by the second of two Shared holders waits for that one too.
    held_by = {lock.resource: tuple(dict.fromkeys(lock.holders or (lock.holder,))) for lock in locks}
    # A waiting claim of several resources waits for each of them.
    waits = sorted({(c.holder, r) for c in claims if c.phase is Phase.PENDING for r in c.resources or (c.resource,)})
    return WaitGraph(held_by=held_by, waits=tuple(waits))


def cycles(graph: WaitGraph) -> list[tuple[str, ...]]:
    """Every elementary cycle as holders and resources alternating, starting and ending with the
    smallest holder in it (so each cycle is listed once)."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for waiter, resource in graph.waits:
        for holder in graph.held_by.get(resource, ()):
            edges.setdefault(waiter, []).append((resource, holder))
    found: list[tuple[str, ...]] = []

    def walk(start: str, node: str, path: list[str], seen: set[str]) -> None:
        for resource, holder in sorted(edges.get(node, ())):
            if holder == start:
                found.append((*path, resource, start))
            elif holder > start and holder not in seen:
                walk(start, holder, [*path, resource, holder], seen | {holder})

    for start in sorted(edges):
        walk(start, start, [start], {start})
    return found


def _quote(text: str) -> str:
    # A JSON string is a valid DOT quoted string (backslash and double quote escaped).
    return json.dumps(text, ensure_ascii=False)


def to_dot(graph: WaitGraph, *, name: str = "waitfor") -> str:
    """DOT text: holders as ellipses, resources as boxes; `waits for` edges dashed, `held by` solid;
    nodes and edges on a cycle in red."""
    on_cycle: set[tuple[str, str]] = set()
    for cycle in cycles(graph):
        on_cycle.update(itertools.pairwise(cycle))
    red_nodes = {n for edge in on_cycle for n in edge}

    def attrs(*pairs: tuple[str, str], red: bool = False) -> str:
        items = [*pairs, *((("color", "red"), ("fontcolor", "red")) if red else ())]
        return "[" + ", ".join(f"{k}={v}" for k, v in items) + "]"

    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;"]
    for holder in graph.holders:
        style = attrs(("label", _quote(holder)), ("shape", "ellipse"), red=holder in red_nodes)
        lines.append(f"  {_quote('holder:' + holder)} {style};")
    for resource in graph.resources:
        style = attrs(("label", _quote(resource)), ("shape", "box"), red=resource in red_nodes)
        lines.append(f"  {_quote('resource:' + resource)} {style};")
    for waiter, resource in graph.waits:
        red = (waiter, resource) in on_cycle
        lines.append(
            f"  {_quote('holder:' + waiter)} -> {_quote('resource:' + resource)} "
            f"{attrs(('label', _quote('waits for')), ('style', 'dashed'), red=red)};"
        )
    for resource, holder in sorted((r, h) for r, hs in graph.held_by.items() for h in hs):
        red = (resource, holder) in on_cycle
        lines.append(
            f"  {_quote('resource:' + resource)} -> {_quote('holder:' + holder)} "
            f"{attrs(('label', _quote('held by')), red=red)};"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"
