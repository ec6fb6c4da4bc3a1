"""LockPolicies as the domain sees them: which policy governs a resource, and what it sets (capacity,
lock-delay after an abnormal release, quotas).

A policy governs the resources of its namespace whose normalised URI begins with its prefix; of
several that match, the longest prefix wins, and of equal prefixes the name that sorts first, so every
replica and every order of watch events picks the same one. A resource no policy governs has
capacity 1, no lock-delay and no quotas (`DEFAULT`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Quotas:
    """The most claims held or waiting at once, per holder and per namespace, counted over the claims
    one policy governs (None: no limit)."""

    max_held_per_holder: int | None = None
    max_waiting_per_holder: int | None = None
    max_held_per_namespace: int | None = None
    max_waiting_per_namespace: int | None = None

    @property
    def any(self) -> bool:
        return any(
            limit is not None
            for limit in (
                self.max_held_per_holder,
                self.max_waiting_per_holder,
                self.max_held_per_namespace,
                self.max_waiting_per_namespace,
            )
        )


@dataclass(frozen=True, slots=True)
class LockPolicy:
    name: str  # "" for DEFAULT: no LockPolicy governs the resource
    prefix: str = ""
    capacity: int = 1
    lock_delay_seconds: int = 0
    quotas: Quotas = field(default_factory=Quotas)

    def governs(self, resource: str) -> bool:
        return resource.startswith(self.prefix)

    @property
    def rank(self) -> tuple[int, str]:
        """Sorts the policy that wins first: the longest prefix, then the first name."""
        return (-len(self.prefix), self.name)

    def describe(self) -> str:
        return f"LockPolicy {self.name}" if self.name else "the default policy"


DEFAULT = LockPolicy(name="")

# The reason of the Event that records a LockPolicy's deletion: from then on the resources it governed
# fall to another policy of the namespace or to the default, and this Event says when.
REMOVED = "PolicyRemoved"


def removed_message(policy: LockPolicy, resources: int, claims: int) -> str:
    """What the `PolicyRemoved` Event says: what the deleted policy governed as the operator last saw
    it (the resources with a claim or a lock, and their claims), and what governs them now."""
    return (
        f"{policy.describe()} (resourcePrefix {policy.prefix!r}, capacity {policy.capacity}) was deleted; "
        f"it governed {_count(resources, 'resource')} with {_count(claims, 'claim')}, which another policy "
        f"of the namespace whose prefix matches, or the default (capacity 1, no quotas, no lock delay), "
        f"governs from now on"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def select(policies: Iterable[LockPolicy], resource: str) -> LockPolicy:
    """The policy that governs `resource` (normalised) among the policies of its namespace."""
    return min((p for p in policies if p.governs(resource)), key=lambda p: p.rank, default=DEFAULT)


class PrefixLookup:
    """`select` over a fixed set of policies, by prefix instead of by walking them all: the winner of
    each prefix (of equal prefixes, the name that sorts first), tried from the longest prefix length
    down. A lookup costs one probe per distinct prefix length, not one test per policy: a namespace
    with hundreds of policies matching one resource (each quota decision looks up the policy of every
    claim of the namespace) would otherwise pay for all of them at every lookup."""

    __slots__ = ("_lengths", "_winners")

    def __init__(self, policies: Iterable[LockPolicy]) -> None:
        winners: dict[str, LockPolicy] = {}
        for policy in policies:
            best = winners.get(policy.prefix)
            if best is None or policy.rank < best.rank:
                winners[policy.prefix] = policy
        self._winners = winners
        self._lengths = sorted({len(prefix) for prefix in winners}, reverse=True)

    def select(self, resource: str) -> LockPolicy:
        for length in self._lengths:
            if length <= len(resource):
                policy = self._winners.get(resource[:length])
                if policy is not None:
                    return policy
        return DEFAULT


@dataclass(frozen=True, slots=True)
class Usage:
    """Claims of a namespace governed by one policy, as the operator knows them: held and waiting
    (Pending) ones, per holder identity (every instance of an identity together, see
    `kubelock.domain.holder.identity_in`). Claims not answered yet count in neither."""

    held: Mapping[str, int] = field(default_factory=dict)
    waiting: Mapping[str, int] = field(default_factory=dict)

    @property
    def held_total(self) -> int:
        return sum(self.held.values())

    @property
    def waiting_total(self) -> int:
        return sum(self.waiting.values())


NO_USAGE = Usage()
