"""Quotas: the most claims a holder, or a namespace, may have held and waiting at once under one
LockPolicy (`maxHeldPerHolder`, `maxWaitingPerHolder`, `maxHeldPerNamespace`,
`maxWaitingPerNamespace`). A claim whose grant, or whose place in a queue, would go over one ends
Rejected with reason QuotaExceeded and a message naming the limit and the policy.

The counts (`Usage`) are the operator's view of the namespace's claims under the policy, taken when a
resource is decided, *plus what it has decided and not yet seen* (`InFlight`): a grant or a first
place in a queue is reserved when its decision is taken, before its write goes out, and released
once the write has failed or its result is in the view. Resources are decided concurrently (one
worker per key), so without the reservation two grants decided while each other's write is under way
would both see the holder below its limit. Counting a claim once, by uid, whether the view or a
reservation knows it, makes the order in which the two learn of it irrelevant (once as held and once
as waiting while it may be either: `usage`).

These reservations live in one operator's memory. Across replicas, the same reservations are recorded
in the API server before their writes (`kubelock.domain.quotaledger`), and counted like these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from kubelock.domain.holder import identity_in
from kubelock.domain.lockpolicy import LockPolicy, Usage
from kubelock.domain.model import Claim
from kubelock.domain.reasons import Phase


def over(
    queue: Iterable[Claim], admitted: Collection[str], policy: LockPolicy, usage: Usage
) -> list[tuple[Claim, str]]:
    """The claims of `queue` (in queue order) that go over a quota of `policy`, each with a message:
    a claim about to be granted (`admitted`, by uid) is counted as held, a new waiter as waiting."""
    quotas = policy.quotas
    if not quotas.any:
        return []
    held: Counter[str] = Counter(usage.held)
    waiting: Counter[str] = Counter(usage.waiting)
    refused: list[tuple[Claim, str]] = []
    for claim in queue:
        identity = identity_in(claim.holder)
        if claim.uid in admitted:
            message = _over(
                identity, held, quotas.max_held_per_holder, quotas.max_held_per_namespace, "held", policy
            )
            if message:
                refused.append((claim, message))
                continue
            held[identity] += 1
            if claim.phase is Phase.PENDING:
                waiting[identity] -= 1
        elif claim.status is None and claim.wait:
            message = _over(
                identity, waiting, quotas.max_waiting_per_holder, quotas.max_waiting_per_namespace, "waiting",
                policy,
            )
            if message:
                refused.append((claim, message))
                continue
            waiting[identity] += 1
    return refused


def _over(
    identity: str, counts: Counter[str], per_holder: int | None, per_namespace: int | None, what: str,
    policy: LockPolicy,
) -> str | None:
    field = "Held" if what == "held" else "Waiting"
    mine = counts[identity]
    if per_holder is not None and mine + 1 > per_holder:
        return (
            f"quota exceeded: {identity} already has {mine} claim{_s(mine)} {what} under {policy.describe()}, "
            f"which allows at most {per_holder} per holder (max{field}PerHolder)"
        )
    total = sum(counts.values())
    if per_namespace is not None and total + 1 > per_namespace:
        return (
            f"quota exceeded: {total} claim{_s(total)} already {what} under {policy.describe()} in this namespace, "
            f"which allows at most {per_namespace} (max{field}PerNamespace)"
        )
    return None


class Count(StrEnum):
    """What a claim counts as against quotas."""

    HELD = "held"
    WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A claim a decision is about to grant (HELD) or to queue for the first time (WAITING), under the
    policy `policy` of `namespace`."""

    namespace: str
    policy: str
    holder: str
    uid: str
    count: Count


class InFlight:
    """The reservations of the decisions whose writes are under way. Reserving must happen in the same
    step as the decision that counted the usage (no await in between), and releasing after the
    write's result is in the view, or once it failed. A claim has at most one reservation per policy
    (a claim of several resources may count under several policies)."""

    def __init__(self) -> None:
        self._by_uid: dict[str, dict[tuple[str, str], Reservation]] = {}

    def __len__(self) -> int:
        return sum(len(each) for each in self._by_uid.values())

    def reserve(self, reservations: Iterable[Reservation]) -> list[str]:
        """Take the reservations; the uids to release later."""
        taken = []
        for reservation in reservations:
            self._by_uid.setdefault(reservation.uid, {})[(reservation.namespace, reservation.policy)] = reservation
            taken.append(reservation.uid)
        return taken

    def release(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self._by_uid.pop(uid, None)

    def of(self, namespace: str, policy: str) -> list[Reservation]:
        return [r for each in self._by_uid.values() if (r := each.get((namespace, policy))) is not None]


def usage(observed: Mapping[str, tuple[str, Count]], reserved: Iterable[Reservation]) -> Usage:
    """The usage of a policy in a namespace: the claims the view shows held or waiting (`observed`: uid ->
    (holder, count)) with the reservations on top, per holder identity (`identity_in`: all instances of
    one identity count together). A claim counts once per count: a reservation to
    grant it counts it held; a reservation to queue it counts only while the view does not show it.

    A claim that waits (in the view, or by a reservation) and that a reservation holds counts as
    both, until the view shows which it is: its grant may be under way or may have failed (its lock
    write failed or was undone, or another replica's hold of it was recorded first). The hold may
    still become a lock at any time until the reservation's bound, so it must count as held; counted
    only as held, the claim would leave its holder's waiting limits one waiter short of the truth
    for as long. Both is never fewer than the truth: at most one refusal too many, never one
    grant or waiter too many."""
    held: dict[str, str] = {}
    waiting: dict[str, str] = {}
    for uid, (holder, count) in observed.items():
        (held if count is Count.HELD else waiting)[uid] = holder
    for reservation in reserved:
        if reservation.count is Count.HELD:
            held[reservation.uid] = reservation.holder
        elif reservation.uid not in observed:
            waiting[reservation.uid] = reservation.holder
    return Usage(
        dict(Counter(identity_in(h) for h in held.values())), dict(Counter(identity_in(h) for h in waiting.values()))
    )


def _s(count: int) -> str:
    return "" if count == 1 else "s"
