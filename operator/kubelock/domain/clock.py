"""The clock the operator judges leases by (its own, never a holder-written timestamp), held to the
API server's where the server's answers show it is off (`ServerBoundClock`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock for tests: time moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


Bounds = tuple[float, float]  # the earliest and the latest the API server's clock can read now
# How far outside the bounds the own clock may read and still be taken as it is. The bounds hold the
# server's clock exactly, but a clock kept by NTP reads milliseconds off it, and the bounds' edge can
# lie that close to the server's clock (an answer sent at the start of a second): without a margin a
# synchronised clock would now and then be replaced by the earliest bound, a second behind.
SYNC_TOLERANCE_SECONDS = 0.25


def offset_from(own: float, bounds: Bounds) -> float:
    """How far `own` lies outside `bounds` (positive: ahead of the latest), 0 within them."""
    earliest, latest = bounds
    if own > latest:
        return own - latest
    return min(0.0, own - earliest)


def bounded_now(own: float, bounds: Bounds | None) -> float:
    """The moment the operator stamps and judges leases by: its own clock where the API server's
    answers cannot tell it apart from the server's (within `bounds`, or no bounds yet), the earliest
    the server's clock can read otherwise.

    Holders count the operator's `expiresAt` against the latest the server's clock can read
    (`kube.serverclock`), so a holder calls its lease over no later than the moment the server's clock
    reaches that stamp. An operator clock ahead of the server's would end the lease, and grant the
    next claim, before that: a holder cut off from the API server would work on beside the next one.
    A clock known to be off is therefore replaced by the earliest bound, never by the latest: an
    operator reading at or behind the server's clock ends a lease at or after the moment every holder
    has stopped counting it held (its lease is up to the bounds' width, about a second, shorter).
    A clock within the bounds (`SYNC_TOLERANCE_SECONDS` aside) is kept as it is: a synchronised clock
    reads the same as before."""
    if bounds is None:
        return own
    earliest, latest = bounds
    within = earliest - SYNC_TOLERANCE_SECONDS <= own <= latest + SYNC_TOLERANCE_SECONDS
    return own if within else earliest


class ServerBoundClock:
    """`own` held to the API server's clock (`bounded_now`). `bounds` gives the earliest and latest
    the server's clock can read now (None before any answer); `outside` is told every reading that
    fell outside them, with the offset (`offset_from`)."""

    def __init__(self, own: Clock, bounds: Callable[[], Bounds | None],
                 outside: Callable[[float], None] | None = None) -> None:
        self._own = own
        self._bounds = bounds
        self._outside = outside

    def now(self) -> float:
        own = self._own.now()
        bounds = self._bounds()
        now = bounded_now(own, bounds)
        if now != own and bounds is not None and self._outside is not None:
            self._outside(offset_from(own, bounds))
        return now

    def offset(self) -> float:
        """How far the own clock reads outside the bounds now (0 within them, or without any)."""
        bounds = self._bounds()
        return 0.0 if bounds is None else offset_from(self._own.now(), bounds)
