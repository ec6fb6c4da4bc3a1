"""The operator's index of LockPolicies: which policy governs a resource, and its capacity.

Filled by a LIST before the operator decides anything and kept current by a watch (the same
LIST-then-watch as claims and locks, `kubelock.operator.watches`), so a restarted operator rebuilds
it from the API server: policies live nowhere else. Of the policies of a claim's namespace whose
prefix the resource begins with, the longest prefix wins, ties by name (`domain.lockpolicy.select`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kubelock.api import objects
from kubelock.domain import quotas
from kubelock.domain.lockpolicy import DEFAULT, NO_USAGE, LockPolicy, PrefixLookup, Quotas, Usage
from kubelock.domain.model import Claim
from kubelock.domain.reasons import Phase
from kubelock.operator.cache import Cache, Key

Body = dict[str, Any]


def policy_view(body: Body) -> tuple[str, LockPolicy]:
    """A LockPolicy body as the domain's value, with its namespace."""
    parsed = objects.PolicyObject.parse(body)
    spec = parsed.spec
    quotas = Quotas(
        max_held_per_holder=spec.max_held_per_holder,
        max_waiting_per_holder=spec.max_waiting_per_holder,
        max_held_per_namespace=spec.max_held_per_namespace,
        max_waiting_per_namespace=spec.max_waiting_per_namespace,
    )
    policy = LockPolicy(
        name=parsed.metadata.name,
        prefix=spec.resource_prefix,
        capacity=spec.capacity,
        lock_delay_seconds=spec.lock_delay_seconds,
        quotas=quotas,
    )
    return parsed.metadata.namespace, policy


class PolicyIndex:
    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, LockPolicy]] = {}
        # Built at the first lookup after a change of the namespace's policies (`PrefixLookup`).
        self._lookups: dict[str, PrefixLookup] = {}

    def policy_for(self, namespace: str, resource: str) -> LockPolicy:
        """The policy governing `resource` (normalised) in `namespace`; `DEFAULT` when none does."""
        lookup = self._lookups.get(namespace)
        if lookup is None:
            policies = self._by_namespace.get(namespace)
            if not policies:
                return DEFAULT
            lookup = self._lookups[namespace] = PrefixLookup(policies.values())
        return lookup.select(resource)

    def capacity_of(self, namespace: str, resource: str) -> int:
        """The permits `resource` has in `namespace`: its policy's capacity, 1 without a policy."""
        return self.policy_for(namespace, resource).capacity

    def upsert(self, body: Body) -> str:
        """Remember a policy; its namespace."""
        namespace, policy = policy_view(body)
        self._by_namespace.setdefault(namespace, {})[policy.name] = policy
        self._lookups.pop(namespace, None)
        return namespace

    def delete(self, body: Body) -> str:
        namespace, policy = policy_view(body)
        policies = self._by_namespace.get(namespace, {})
        policies.pop(policy.name, None)
        if not policies:
            self._by_namespace.pop(namespace, None)
        self._lookups.pop(namespace, None)
        return namespace

    def replace(self, bodies: Iterable[Body], within: Callable[[str], bool]) -> set[str]:
        """Take in a full LIST of the policies of the namespaces `within` its scope, dropping those it
        no longer has; the namespaces whose policies may have changed."""
        fresh: dict[str, dict[str, LockPolicy]] = {}
        for body in bodies:
            namespace, policy = policy_view(body)
            if within(namespace):
                fresh.setdefault(namespace, {})[policy.name] = policy
        changed = {ns for ns in self._by_namespace if within(ns) and self._by_namespace[ns] != fresh.get(ns)}
        changed |= {ns for ns in fresh if self._by_namespace.get(ns) != fresh[ns]}
        for namespace in [ns for ns in self._by_namespace if within(ns)]:
            del self._by_namespace[namespace]
        self._by_namespace.update(fresh)
        for namespace in changed:
            self._lookups.pop(namespace, None)
        return changed

    def __len__(self) -> int:
        return sum(len(p) for p in self._by_namespace.values())


def usage(
    cache: Cache,
    index: PolicyIndex,
    namespace: str,
    policy: LockPolicy,
    in_flight: quotas.InFlight | None = None,
    recorded: Iterable[quotas.Reservation] = (),
) -> Usage:
    """The claims held and waiting in `namespace` under `policy`, per holder, for its quotas: the
    cache's view with the grants and first waits decided but not yet seen (`in_flight`, this
    operator's; `recorded`, the quota ledgers' reservations, every replica's). A claim holds from its
    lock's creation on, before it is told. A claim of several resources counts, once, under the
    policy of each of its resources. Counted only for a policy with quotas (it walks the
    namespace's claims)."""
    if not policy.quotas.any:
        return NO_USAGE
    granted = {g.claim_uid for (ns, _), record in cache.locks.items() if ns == namespace for g in record.grants}
    observed: dict[str, tuple[str, quotas.Count]] = {}
    for record in cache.claims.values():
        claim = record.claim
        if record.namespace != namespace or not governed(index, namespace, claim, policy):
            continue
        if claim.phase is Phase.HELD or claim.uid in granted:
            observed[claim.uid] = (claim.holder, quotas.Count.HELD)
        elif claim.phase is Phase.PENDING:
            observed[claim.uid] = (claim.holder, quotas.Count.WAITING)
    observed.update(_refused_grants(cache, index, namespace, policy))
    reserved = in_flight.of(namespace, policy.name) if in_flight is not None else []
    return quotas.usage(observed, [*recorded, *reserved])


def _refused_grants(
    cache: Cache, index: PolicyIndex, namespace: str, policy: LockPolicy
) -> dict[str, tuple[str, quotas.Count]]:
    """Grants whose claim ended Rejected: one replica refused the claim while another wrote its grant.
    Until its lock is deleted, such a grant holds the resource (with a fencing token), so it counts
    like any grant, also once the refused claim is deleted. (A grant of a claim released or ended
    otherwise is over: its lock is going.)

    Looked up by the claim's uid (`Cache.was_refused`), not among the terminal claims kept under the
    lock's resource (`Cache.finished_for`): a refused claim of several resources is kept there under
    its first resource only, while its grants are written in sorted order, on any of them."""
    out: dict[str, tuple[str, quotas.Count]] = {}
    for key, record in cache.locks.items():
        if key[0] != namespace or index.policy_for(*key).name != policy.name:
            continue
        for grant in record.grants:
            if grant.claim_uid not in cache.claims and cache.was_refused(grant.claim_uid):
                out[grant.claim_uid] = (grant.holder, quotas.Count.HELD)
    return out


def reach(cache: Cache, index: PolicyIndex, namespace: str, policy: LockPolicy) -> tuple[int, int]:
    """How many resources of `namespace` (those with a claim or a lock in the cache) and how many of
    its claims `policy` governs now: asked before a deleted policy leaves the index, for its Event."""
    keys = cache.keys()  # resource keys of claims and locks (not a dict)
    resources = sum(1 for ns, r in keys if ns == namespace and index.policy_for(ns, r).name == policy.name)
    claims = sum(
        1 for record in cache.claims.values()
        if record.namespace == namespace and governed(index, namespace, record.claim, policy)
    )
    return resources, claims


def governed(index: PolicyIndex, namespace: str, claim: Claim, policy: LockPolicy) -> bool:
    """`policy` governs one of the claim's resources (all of them, for a claim of several)."""
    return any(index.policy_for(namespace, r).name == policy.name for r in claim.every_resource)


def snapshot(index: PolicyIndex, keys: Iterable[Key], namespaces: Iterable[str]) -> dict[Key, LockPolicy]:
    """The policy governing each resource key of `namespaces`: taken before the index changes, it
    tells which keys a change of policies touches (`changed`)."""
    wanted = set(namespaces)
    return {k: index.policy_for(*k) for k in keys if k[0] in wanted}


def changed(index: PolicyIndex, before: dict[Key, LockPolicy]) -> list[tuple[Key, LockPolicy]]:
    """The keys governed otherwise than in `before` (another policy, or the same one changed), with
    the policy that governs them now."""
    now = {k: index.policy_for(*k) for k in before}
    return sorted(((k, p) for k, p in now.items() if p != before[k]), key=lambda kp: kp[0])
