"""When a held lease renews and when it must call itself lost: pure arithmetic on seconds, so the
rules are tested without a clock or a cluster.

A lease is lost at the earlier of two moments:
- the last expiry the operator confirmed (the lock is then free for the next holder);
- with a renew deadline, `renew_deadline` seconds after the start of the last renewal the API
  server accepted. Like client-go's renewDeadline it is shorter than the TTL, so a holder cut off
  from the API server stops while its lease is still valid, with time left to wind down.
"""

from __future__ import annotations

import math

from kubelock.sdk.errors import InvalidInput

RENEWS_PER_WINDOW = 3  # renew three times per window, so two renewals can fail before it is at risk
MIN_RENEW_INTERVAL = 0.2
DEFAULT_RENEW_FRACTION = 2 / 3  # kubelock run's default renew deadline, as a fraction of the TTL


def default_renew_deadline(ttl: float) -> float:
    return ttl * DEFAULT_RENEW_FRACTION


def validate_renew_deadline(value: object, ttl: float | None) -> float | None:
    """A renew deadline in seconds: more than 0 and, when the TTL is known, less than it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"renew deadline must be a number of seconds, not {value!r}")
    if value <= 0:
        raise InvalidInput(f"renew deadline must be more than 0 seconds, not {value}")
    if ttl is not None and value >= ttl:
        raise InvalidInput(
            f"renew deadline ({value:g}s) must be shorter than the TTL ({ttl:g}s): the holder must stop "
            "before its lease can run out"
        )
    return float(value)


def renew_interval(lease_seconds: float, renew_deadline: float | None) -> float:
    """How often to renew: a third of the lease, or of the renew deadline when that is shorter."""
    window = lease_seconds if renew_deadline is None else min(lease_seconds, renew_deadline)
    return max(MIN_RENEW_INTERVAL, window / RENEWS_PER_WINDOW)


def first_renewal_in(interval: float, age: float) -> float:
    """Seconds until the first renewal of a lease that is `age` seconds old when its holder is told of
    it: the renew interval counted from the lease's start (its `renewedAt`, stamped when the operator
    sent the `Held` write), not from the telling, which a busy API server delays by that write's
    time. At once when the interval is already past; a negative age (clocks apart) counts as none."""
    return min(interval, max(0.0, interval - max(0.0, age)))


def loss_moment(expiry: float, last_renewal: float, renew_deadline: float | None) -> tuple[float, bool]:
    """The moment the lease is lost, and whether the renew deadline (not the expiry) decides it.
    `expiry` is the confirmed expiry, `last_renewal` when the last accepted renewal (or the grant)
    was asked for, both on the same monotonic clock."""
    if renew_deadline is None:
        return expiry, False
    by_deadline = last_renewal + renew_deadline
    return (by_deadline, True) if by_deadline < expiry else (expiry, False)


def ran_out_message(resource: str, *, renew_deadline: float | None, last_failure: str | None) -> str:
    """Why a lease whose renewals stopped counts as lost. `renew_deadline`: set when the renew
    deadline (not the confirmed expiry) decided it; `last_failure`: what the last failed renewal
    was told, so that a refused credential (401) or a refusal by RBAC is not reported as an API
    server that cannot be reached."""
    cause = f"the last renewal failed: {last_failure}" if last_failure else "is the API server reachable?"
    if renew_deadline is not None:
        return (f"no renewal of the lease on {resource} succeeded within the renew deadline of "
                f"{renew_deadline:g}s ({cause})")
    return f"the lease on {resource} ran out without a confirmed renewal ({cause})"
