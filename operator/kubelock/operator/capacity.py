"""How many permits a resource has: the one place the operator asks.

Every decision (`kubelock.domain.arbiter.decide`) and the wait-for graph take a resource's capacity
from `capacity_of`. No policy sets one yet, so every resource has 1 permit: one exclusive holder, or
any number of Shared holders.
"""

from __future__ import annotations

from collections.abc import Callable

Capacity = Callable[[str, str], int]


def capacity_of(namespace: str, resource: str) -> int:
    """The permits `resource` (normalised) has in `namespace`."""
    return 1
