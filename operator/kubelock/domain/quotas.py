"""Quotas: the most claims a holder, or a namespace, may have held and waiting at once under one
LockPolicy (`maxHeldPerHolder`, `maxWaitingPerHolder`, `maxHeldPerNamespace`,
`maxWaitingPerNamespace`). A claim whose grant, or whose place in a queue, would go over one ends
Rejected with reason QuotaExceeded and a message naming the limit and the policy.

The counts are the operator's view of the namespace's claims under the policy (`Usage`), taken when
a resource is decided. Quotas are therefore checked by the operator, not arbitrated by the API server
as grants are: two grants decided at the same moment on different resources can each see the
other's holder below its limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable

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
        if claim.uid in admitted:
            message = _over(
                claim.holder, held, quotas.max_held_per_holder, quotas.max_held_per_namespace, "held", policy
            )
            if message:
                refused.append((claim, message))
                continue
            held[claim.holder] += 1
            if claim.phase is Phase.PENDING:
                waiting[claim.holder] -= 1
        elif claim.status is None and claim.wait:
            message = _over(
                claim.holder, waiting, quotas.max_waiting_per_holder, quotas.max_waiting_per_namespace, "waiting",
                policy,
            )
            if message:
                refused.append((claim, message))
                continue
            waiting[claim.holder] += 1
    return refused


def _over(
    holder: str, counts: Counter[str], per_holder: int | None, per_namespace: int | None, what: str,
    policy: LockPolicy,
) -> str | None:
    field = "Held" if what == "held" else "Waiting"
    mine = counts[holder]
    if per_holder is not None and mine + 1 > per_holder:
        return (
            f"quota exceeded: {holder} already has {mine} claim{_s(mine)} {what} under {policy.describe()}, "
            f"which allows at most {per_holder} per holder (max{field}PerHolder)"
        )
    total = sum(counts.values())
    if per_namespace is not None and total + 1 > per_namespace:
        return (
            f"quota exceeded: {total} claim{_s(total)} already {what} under {policy.describe()} in this namespace, "
            f"which allows at most {per_namespace} (max{field}PerNamespace)"
        )
    return None


def _s(count: int) -> str:
    return "" if count == 1 else "s"
