"""The grant-set model: what a resource's grants are, which requests fit beside them, and which
waiting requests are granted next.

A resource has a capacity (1 unless a policy says otherwise) and a set of grants; each grant holds
the resource in a mode with a number of permits:

- Exclusive grants take their permits from the capacity: they coexist while the permits of all of
  them fit in it. With capacity 1 that is one holder excluding everyone (a mutex); with capacity N,
  a counted semaphore of N permits.
- Shared grants take no permits and coexist with every other shared grant, never with an exclusive
  one (a read-write lock: readers together, a writer alone).

A request asks for one or more resources, each with a `Need` (mode and permits). It is granted on all
of them at once or on none: while it waits it holds nothing, so it is never half-held and never part
of a deadlock through what it waits for.

Waiting requests are served in queue order with one rule: a request is granted
when, on each of its resources, it fits beside the grants *and beside every request queued ahead of
it there*, granted or not. Those ahead keep their place without holding anything:

- FIFO: a request never takes what an earlier one is waiting for;
- a queued exclusive request is not starved by a stream of shared ones, nor a large permit request by
  small ones: what comes after either does not fit beside it;
- consecutive shared requests at the head are granted together (they fit beside each other);
- a multi-resource request that waits for one resource delays later requests on its other resources
  only if they do not fit beside it: exactly as long as FIFO requires, no longer.

Queue order: effective priority first (higher first), then arrival (sequence, then uid). A
request's effective priority is its priority plus one point per `aging_seconds` since it arrived
(`effective_priority`), so a low-priority request overtaken by a stream of higher ones moves up until
it is ahead of every newcomer: nothing starves. Points are whole, so requests of equal standing keep
their arrival order and every replica computes the same order from the same inputs.

Fencing: every grant carries a token, assigned by the grant store when the grant is written (the
ResourceLock's creation revision), never chosen here. The rule the store must keep, and the arbiter
and the tests rely on, is `tokens_increase`: each grant's token exceeds the token of every grant made
earlier on that resource, shared and semaphore grants included. A protected system that accepts
shared grants must therefore remember the highest token it has seen per resource and refuse writes
below it, exactly as for an exclusive grant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    EXCLUSIVE = "Exclusive"
    SHARED = "Shared"


@dataclass(frozen=True, slots=True)
class Need:
    """What a request asks of one resource, or what a grant holds of it."""

    mode: Mode = Mode.EXCLUSIVE
    permits: int = 1

    def __post_init__(self) -> None:
        if self.permits < 1:
            raise ValueError(f"permits must be at least 1, not {self.permits}")
        if self.mode is Mode.SHARED and self.permits != 1:
            raise ValueError("a shared grant takes no permits: permits must be 1 in Shared mode")


EXCLUSIVE = Need()


def compatible(needs: Iterable[Need], capacity: int) -> bool:
    """Whether grants with these needs may all hold one resource of `capacity` at the same time."""
    needs = list(needs)
    if all(n.mode is Mode.SHARED for n in needs):
        return True
    return all(n.mode is Mode.EXCLUSIVE for n in needs) and sum(n.permits for n in needs) <= capacity


def fits(beside: Iterable[Need], need: Need, capacity: int) -> bool:
    return compatible([*beside, need], capacity)


def blocks(held: Need, need: Need, capacity: int) -> bool:
    """`held` alone keeps `need` out: the request cannot be granted while that grant lasts, whatever
    every other grant does. Only such a grant is an edge of the wait-for graph, so a cycle is a
    deadlock; a wait that any one of several releases would end is no edge (none of them is needed).
    (`not fits([held], need, capacity)`, spelt out: the wait-for search calls it on every step.)"""
    if held.mode is not need.mode:
        return True
    return need.mode is Mode.EXCLUSIVE and held.permits + need.permits > capacity


def within(need: Need, capacity: int) -> bool:
    """A request that could ever be granted on a resource of `capacity` (alone on it)."""
    return fits((), need, capacity)


@dataclass(frozen=True, slots=True)
class Request:
    """A waiting request: `needs` names each resource it asks for (all or nothing)."""

    id: str
    sequence: int
    needs: tuple[tuple[str, Need], ...]
    priority: int = 0  # effective priority (`effective_priority`): higher goes first

    @property
    def order(self) -> tuple[int, int, str]:
        return (-self.priority, self.sequence, self.id)


def effective_priority(priority: int, waited: float, aging_seconds: float) -> int:
    """`priority` plus one whole point per `aging_seconds` of waiting (`waited` seconds so far)."""
    if aging_seconds <= 0 or waited <= 0:
        return priority
    return priority + int(waited // aging_seconds)


def admit(
    queue: Iterable[Request],
    grants: Mapping[str, Sequence[Need]],
    capacity: Callable[[str], int] = lambda resource: 1,
) -> list[Request]:
    """The requests of `queue` to grant now, in queue order, given the current grants per resource.

    A request is granted when, on every resource it names, it fits beside that resource's grants and
    beside every request ahead of it on the resource; a request that is not granted still stands
    in front of those behind it (see the module's docstring)."""
    ahead: dict[str, list[Need]] = {r: list(g) for r, g in grants.items()}
    admitted: list[Request] = []
    for request in sorted(queue, key=lambda q: q.order):
        if all(fits(ahead.get(r, ()), need, capacity(r)) for r, need in request.needs):
            admitted.append(request)
        for resource, need in request.needs:
            ahead.setdefault(resource, []).append(need)
    return admitted


@dataclass(frozen=True, slots=True)
class Granted:
    """One grant as the fencing rule sees it: on which resource, with which token, made when (in the
    order in which grants were made; any increasing number)."""

    resource: str
    token: int
    made: int


def tokens_increase(history: Iterable[Granted]) -> list[tuple[Granted, Granted]]:
    """Violations of the fencing rule in a history of grants: pairs (earlier, later) of grants of one
    resource where the later one's token is not above the earlier one's. Empty when the rule holds."""
    highest: dict[str, Granted] = {}
    bad: list[tuple[Granted, Granted]] = []
    for grant in sorted(history, key=lambda g: g.made):
        top = highest.get(grant.resource)
        if top is not None and grant.token <= top.token:
            bad.append((top, grant))
        if top is None or grant.token > top.token:
            highest[grant.resource] = grant
    return bad
