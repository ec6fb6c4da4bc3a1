"""The API server's clock, as this process can bound it from the `Date` header of its answers.

The operator stamps a claim's `renewedAt` and `expiresAt` with its own clock, which runs in the
cluster beside the API server's. A client that turned such a stamp into "seconds left" with its own
wall clock would be as wrong as its clock is: one running ten minutes slow would believe it held a
lock ten minutes after the operator had ended it and granted it to another. Every answer of the API
server carries the server's clock in `Date` (RFC 9110: whole seconds, truncated), read while the
request was under way; so at a later moment `m` of this process's monotonic clock the server's clock
reads at least `date + (m - received)` and at most `date + 1 + (m - sent)`. Kept: the bounds of the
latest answer (a server clock stepped since an earlier answer is followed at the next one).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


class ServerClock:
    """Bounds on the API server's clock (seconds since the epoch) at moments of `time.monotonic()`,
    which is the event loop's clock too. Before any answer, this process's wall clock stands in."""

    def __init__(self) -> None:
        # The latest answer's `Date` and moments, parsed only when asked, and only once per new header
        # (the operator asks at every reading of its clock, and makes thousands of requests a second):
        # the header as sent, then the bounds it gave.
        self._answer: tuple[str, float, float] | None = None
        self._parsed: tuple[str, float, float] | None = None
        self._date = ""  # the last header parsed, and its moment
        self._stamp = 0.0
        self._earliest: float | None = None  # server epoch seconds minus local monotonic seconds, at least
        self._latest: float | None = None  # ... at most

    def record(self, date: str | None, sent: float, received: float) -> None:
        """One answer: its `Date` header, and the monotonic moments its request was sent and its
        answer's headers arrived. An answer without a `Date` changes nothing."""
        if date:
            self._answer = (date, sent, received)

    def _bounds(self) -> None:
        answer = self._answer
        if answer is None or answer is self._parsed:
            return
        self._parsed = answer
        date, sent, received = answer
        if date == self._date:  # answers within the same second carry the same header: parsed once
            stamp = self._stamp
        else:
            try:
                stamp = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return  # unreadable: the bounds last read stand
            self._date, self._stamp = date, stamp
        self._earliest = stamp - received
        self._latest = stamp + 1.0 - sent

    def bounds(self, at: float | None = None) -> tuple[float, float] | None:
        """The earliest and the latest the server's clock can read at monotonic moment `at` (now when
        None); None before any readable answer. The operator holds its own clock to them
        (`domain.clock.bounded_now`)."""
        self._bounds()
        if self._earliest is None or self._latest is None:
            return None
        moment = time.monotonic() if at is None else at
        return moment + self._earliest, moment + self._latest

    def latest_now(self, at: float | None = None) -> float:
        """The latest the server's clock can read at monotonic moment `at` (now when None): what a
        lease's time left is counted against, so that it is never counted longer than the server's."""
        self._bounds()
        moment = time.monotonic() if at is None else at
        return time.time() if self._latest is None else moment + self._latest

    def earliest_now(self, at: float | None = None) -> float:
        """The earliest the server's clock can read at monotonic moment `at`: a stamp before it is
        past for certain."""
        self._bounds()
        moment = time.monotonic() if at is None else at
        return time.time() if self._earliest is None else moment + self._earliest
