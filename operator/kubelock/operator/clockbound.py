"""The operator's clock, held to the API server's (`domain.clock.ServerBoundClock`), and the warning
that its node's clock is off.

The operator stamps a lease's `renewedAt`/`expiresAt` and ends it by its own clock; holders count
those stamps on the API server's clock (`kube.serverclock`). Nothing keeps a node's clock right (its
NTP may be broken), so the operator bounds the server's clock from the `Date` of its own answers,
which it gets many times a second, and reads the earliest bound instead of its own clock when that
is off (`domain.clock.bounded_now`).
"""

from __future__ import annotations

import logging
import time

from kubelock.domain.clock import SYNC_TOLERANCE_SECONDS, Clock, ServerBoundClock
from kubelock.kube.serverclock import ServerClock

log = logging.getLogger("kubelock.operator")
WARN_EVERY_SECONDS = 600.0  # a clock that stays off is said again at this pace, not at every reading


class _Warning:
    def __init__(self) -> None:
        self._last: float | None = None

    def __call__(self, offset: float) -> None:
        if abs(offset) <= SYNC_TOLERANCE_SECONDS:
            return
        moment = time.monotonic()
        if self._last is not None and moment - self._last < WARN_EVERY_SECONDS:
            return
        self._last = moment
        side = "ahead of" if offset > 0 else "behind"
        log.warning(
            "this node's clock reads %.1f s %s the API server's (bounded from the Date of its answers): "
            "leases are stamped and ended by the API server's clock instead (the earliest it can read); "
            "fix the node's time synchronisation (NTP)", abs(offset), side,
        )


def server_bound(own: Clock, server: ServerClock) -> ServerBoundClock:
    """`own` held to `server`'s bounds, warning (at most every `WARN_EVERY_SECONDS`) while it is off."""
    return ServerBoundClock(own, server.bounds, _Warning())
