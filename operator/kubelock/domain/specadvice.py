"""The messages of claims the operator refuses for what their spec asks (reason InvalidSpec, or a
podRef naming no pod): each says what is wrong and what to change, since the refusal reaches a
newcomer as the claim's status.message, a Warning Event and the SDK's or CLI's error alike."""

from __future__ import annotations

from collections.abc import Sequence


def ttl_above_max(ttl_seconds: int, max_ttl_seconds: int) -> str:
    return (
        f"ttlSeconds {ttl_seconds} exceeds the maximum of {max_ttl_seconds} (operator setting maxTtlSeconds); "
        f"ask for at most {max_ttl_seconds} and renew the lease by heartbeat while the work lasts"
    )


def permits_over_capacity(permits: int, capacities: Sequence[tuple[str, int]]) -> str:
    """`capacities`: each resource whose capacity is smaller than `permits`, with that capacity."""
    if len(capacities) == 1:
        (resource, capacity), = capacities
        where = f"the capacity {capacity} of {resource}"
    else:
        where = "the capacity of " + ", ".join(f"{resource} ({capacity})" for resource, capacity in capacities)
    most = min(capacity for _, capacity in capacities)
    return (
        f"permits {permits} exceed {where}; ask for at most {most} "
        f"(or have a lock admin raise the capacity with a LockPolicy)"
    )


def pod_missing(pod_name: str | None) -> str:
    return (
        f"pod {pod_name} does not exist; set spec.podRef to a pod of the claim's namespace that is running "
        "(in a pod, the SDK and the commands fill it in), or leave podRef out"
    )
