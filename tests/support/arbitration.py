"""Builders for arbitration tests: claims, grants, the wait-for graph, and `Space`, a namespace
whose actions are applied the way the operator applies them (a grant's token is the revision of its
creation, as the API server assigns it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from kubelock.domain.arbiter import decide, held_status, queue_place
from kubelock.domain.grants import Granted, Need, tokens_increase
from kubelock.domain.holder import identity_in
from kubelock.domain.lockpolicy import DEFAULT, LockPolicy, Usage
from kubelock.domain.model import (
    Action,
    Claim,
    ClaimStatus,
    CreateLock,
    Decision,
    DeleteClaim,
    DeleteLock,
    Lock,
    Policy,
    RenewLock,
    SetStatus,
)
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name
from kubelock.domain.waitfor import WaitForGraph

T0 = 1_800_000_000.0
RES = "deploy://api-prod"
POLICY = Policy()  # default ttl 1800, max 86400, stale after 50% of the lease, finished claims kept 3600 s


# ---- builders --------------------------------------------------------------------------------


def claim(
    name: str,
    seq: int,
    holder: str | None = None,
    *,
    resource: str = RES,
    created: float = T0,
    status: ClaimStatus | None = None,
    **spec: object,
) -> Claim:
    """A claim named `name` whose holder is `name` unless told otherwise."""
    return Claim(
        name=name,
        uid=f"uid-{name}",
        resource=resource,
        holder=holder or name,
        sequence=seq,
        created_at=created,
        status=status,
        **spec,  # type: ignore[arg-type]
    )


def lock_for(
    c: Claim, *, acquired: float = T0, renewed: float | None = None, lease: int = 1800, token: int = 1000
) -> Lock:
    """The grant of `c`; its token stands for the lock's creation revision (any positive number)."""
    return Lock(
        name=lock_name(c.resource),
        uid=f"lock-uid-{c.name}",
        resource=c.resource,
        holder=c.holder,
        claim_name=c.name,
        claim_uid=c.uid,
        fencing_token=token,
        acquired_at=acquired,
        renewed_at=acquired if renewed is None else renewed,
        lease_seconds=lease,
        mode=c.mode,
        permits=c.permits,
    )


def holding(c: Claim, lock: Lock, **changes: object) -> Claim:
    """`c` with the status it has once its grant is complete."""
    return replace(c, status=replace(held_status(c, lock, c.renew_request), **changes))


def with_phase(
    c: Claim,
    phase: Phase,
    reason: Reason,
    *,
    holder: str | None = None,
    position: int | None = None,
    stale: bool = False,
    since: float | None = None,
) -> Claim:
    status = ClaimStatus(
        phase=phase,
        reason=reason,
        message="",
        sequence=c.sequence,
        holder=holder,
        queue_position=position,
        stale=stale,
        waiting_since=since,
    )
    return replace(c, status=status)


def graph_for(claims: Iterable[Claim], locks: Iterable[Lock], capacity: dict[str, int] | None = None) -> WaitForGraph:
    """The namespace's wait-for graph as the operator's cache keeps it: the grants of every resource,
    and a wait for every claim that is `waiting`."""
    graph = WaitForGraph()
    held: dict[str, list[tuple[str, Need]]] = {}
    for lk in locks:
        held.setdefault(lk.resource, []).append((lk.holder, lk.need))
    for resource, grants in held.items():
        graph.set_grants(resource, tuple(grants))
    for resource, n in (capacity or {}).items():
        graph.set_capacity(resource, n)
    for c in claims:
        if c.waiting:
            graph.add_wait(c.holder, c.resource, c.sequence, c.need, queue_place(c))
    return graph


def run(
    claims: list[Claim],
    lock: Lock | list[Lock] | None,
    now: float,
    policy: Policy = POLICY,
    graph: WaitForGraph | None = None,
    resource: str = RES,
    capacity: int = 1,
) -> Decision:
    grants = lock if isinstance(lock, list) else [] if lock is None else [lock]
    if graph is None:
        graph = graph_for(claims, grants, {resource: capacity})
    return decide(resource, claims, grants, now=now, policy=policy, graph=graph, capacity=capacity)


def summary(decision: Decision) -> list[tuple[object, ...]]:
    """Actions as short tuples, for tables."""
    out: list[tuple[object, ...]] = []
    for action in decision.actions:
        if isinstance(action, SetStatus):
            out.append(("status", action.claim.name, action.status.phase, action.status.reason))
        elif isinstance(action, CreateLock):
            out.append(("create", action.claim.name, action.lease_seconds))
        elif isinstance(action, RenewLock):
            out.append(("renew", action.lock.claim_name, action.lease_seconds))
        elif isinstance(action, DeleteClaim):
            out.append(("remove", action.claim.name))
        else:
            out.append(("delete", action.lock.claim_name, action.reason))
    return out


def statuses(decision: Decision) -> dict[str, ClaimStatus]:
    return {a.claim.name: a.status for a in decision.actions if isinstance(a, SetStatus)}


def only_status(decision: Decision) -> SetStatus:
    sets = [a for a in decision.actions if isinstance(a, SetStatus)]
    assert len(sets) == 1, decision.actions
    return sets[0]


@dataclass
class Space:
    """A namespace: claims and grants, with actions applied the way the operator applies them. Every
    write moves a revision counter as the API server's resourceVersion does, and a grant's token is
    the revision of its creation: what the operator issues."""

    claims: dict[str, Claim] = field(default_factory=dict)  # by uid
    grants: dict[str, list[Lock]] = field(default_factory=dict)  # by resource
    policy: Policy = POLICY
    capacity: dict[str, int] = field(default_factory=dict)  # by resource; 1 when absent
    lock_policy: LockPolicy = DEFAULT  # governs every resource of the space
    log: list[tuple[object, ...]] = field(default_factory=list)
    revision: int = 100
    issued: list[Granted] = field(default_factory=list)  # every grant made, in order

    def add(self, *claims: Claim) -> Space:
        for c in claims:
            self.claims[c.uid] = c
        return self

    def remove(self, name: str) -> None:
        del self.claims[f"uid-{name}"]

    def get(self, name: str) -> Claim:
        return self.claims[f"uid-{name}"]

    def lock(self, resource: str) -> Lock:
        """The one grant of a resource."""
        [grant] = self.grants[resource]
        return grant

    def holders(self, resource: str) -> set[str]:
        return {g.claim_name for g in self.grants.get(resource, [])}

    def graph(self) -> WaitForGraph:
        return graph_for(self.claims.values(), [g for gs in self.grants.values() for g in gs], self.capacity)

    def decide(self, resource: str, now: float) -> Decision:
        claims = [c for c in self.claims.values() if c.resource == resource]
        return decide(
            resource,
            claims,
            self.grants.get(resource, []),
            now=now,
            policy=self.policy,
            graph=self.graph(),
            capacity=self.capacity.get(resource, 1),
            lock_policy=self.lock_policy,
            usage=self.usage(),
        )

    def usage(self) -> Usage:
        """Held and waiting claims per holder identity, as the operator counts them for quotas: a claim
        holds from its grant's creation on (before it is told)."""
        granted = {g.claim_uid for gs in self.grants.values() for g in gs}
        held: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for c in self.claims.values():
            holds = c.phase is Phase.HELD or c.uid in granted
            counts = held if holds else waiting if c.phase is Phase.PENDING else None
            if counts is not None:
                counts[identity_in(c.holder)] = counts.get(identity_in(c.holder), 0) + 1
        return Usage(held, waiting)

    def _write(self) -> int:
        self.revision += 1
        return self.revision

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, SetStatus):
                # The claim's queue order is its status's sequence, as the codec reads it back.
                self.claims[action.claim.uid] = replace(
                    self.claims[action.claim.uid], status=action.status, sequence=action.status.sequence
                )
            elif isinstance(action, CreateLock):
                c = action.claim
                held = self.grants.setdefault(c.resource, [])
                assert all(g.claim_uid != c.uid for g in held), "CreateLock for a claim that holds"
                token = self._write()
                held.append(
                    Lock(
                        name=lock_name(c.resource),
                        uid=f"lock-uid-{c.name}-{token}",
                        resource=c.resource,
                        holder=c.holder,
                        claim_name=c.name,
                        claim_uid=c.uid,
                        fencing_token=token,
                        acquired_at=action.acquired_at,
                        renewed_at=action.acquired_at,
                        lease_seconds=action.lease_seconds,
                        mode=c.mode,
                        permits=c.permits,
                    )
                )
                self.issued.append(Granted(c.resource, token, len(self.issued)))
                continue
            elif isinstance(action, RenewLock):
                self.grants[action.lock.resource] = [
                    replace(g, renewed_at=action.renewed_at, lease_seconds=action.lease_seconds)
                    if g.uid == action.lock.uid
                    else g
                    for g in self.grants[action.lock.resource]
                ]
            elif isinstance(action, DeleteClaim):
                del self.claims[action.claim.uid]
            elif isinstance(action, DeleteLock):
                rest = [g for g in self.grants.get(action.lock.resource, []) if g.uid != action.lock.uid]
                self.grants[action.lock.resource] = rest
                if not rest:
                    del self.grants[action.lock.resource]
            else:
                raise AssertionError(f"unexpected action {action}")
            self._write()

    def settle(self, now: float, resources: Iterable[str] = (RES,)) -> Decision:
        """Decide and apply until every resource (and every resource a decision asks to wake) is
        quiet; return the last, empty, decision of the first resource."""
        todo = list(resources)
        last: dict[str, Decision] = {}
        for _ in range(400):
            if not todo:
                break
            resource = todo.pop(0)
            decision = self.decide(resource, now)
            self.log.extend(summary(decision))
            last[resource] = decision
            if decision.actions:
                self.apply(decision.actions)
                todo.append(resource)
                todo.extend(r for r in decision.also_reconcile if r not in todo)
            else:
                todo.extend(r for r in decision.also_reconcile if r not in todo and r != resource)
        else:
            raise AssertionError(f"did not settle: {self.log[-10:]}")
        assert tokens_increase(self.issued) == []
        return last[next(iter(resources))]
