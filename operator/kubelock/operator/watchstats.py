"""What each of the operator's own watch streams (`watches.ListWatch`) delivered, and when last.

A watch that stops delivering while the API server has events for it is silent: no error, the
connection open. The operator bounds that (`kube.client.WATCH_SECONDS`: a watch request not ended by
its timeout and grace is taken for dead), but within the bound nothing showed it. These figures show
it: per kind and scope, the events delivered and the time since the last one (a bookmark counts, but
the API server does not send one in every watch request: an idle scope's age passes a minute now and
then, 66 s seen; what marks a silent watch is an age that grows while its kind changes), and, per
watch request, the largest gap between two deliveries (logged at debug level by
`kubelock.watches` when the request ends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class ScopeStats:
    """One watch stream's deliveries, on the monotonic clock it is given."""

    kind: str  # "claim", "lock", "policy"
    scope: str | None  # a namespace, or None: every namespace
    events: int = 0  # events (bookmarks included) delivered since the operator started
    last_event: float | None = None  # when the last was delivered
    requests: int = 0  # watch requests made
    # The current watch request: when it began, what it delivered, its largest gap so far.
    request_started: float = 0.0
    request_events: int = 0
    request_largest_gap: float = 0.0
    request_gap_ended: float = 0.0  # when that gap ended
    _previous: float = field(default=0.0, repr=False)  # the request's start or last delivery

    def began(self, now: float) -> None:
        """A watch request was sent."""
        self.requests += 1
        self.request_started = self._previous = now
        self.request_events = 0
        self.request_largest_gap = 0.0
        self.request_gap_ended = now

    def delivered(self, now: float) -> None:
        """The stream delivered an event (or a bookmark)."""
        self.events += 1
        self.request_events += 1
        if now - self._previous > self.request_largest_gap:
            self.request_largest_gap, self.request_gap_ended = now - self._previous, now
        self._previous = self.last_event = now

    def age(self, now: float) -> float | None:
        """Seconds since the last delivery; None before the first."""
        return None if self.last_event is None else max(0.0, now - self.last_event)

    def request_summary(self, now: float) -> tuple[float, int, float, float]:
        """The current request's seconds, events, largest gap (the silence up to `now` included) and
        how long before `now` that gap ended."""
        if now - self._previous > self.request_largest_gap:
            return now - self.request_started, self.request_events, now - self._previous, 0.0
        return now - self.request_started, self.request_events, self.request_largest_gap, now - self.request_gap_ended


class WatchStats:
    """Every watch stream's figures, read by the metrics at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._scopes: dict[tuple[str, str | None], ScopeStats] = {}

    def scope(self, kind: str, scope: str | None) -> ScopeStats:
        """The figures of the stream of `kind` in `scope` (kept across the stream's restarts)."""
        key = (kind, scope)
        stats = self._scopes.get(key)
        if stats is None:
            stats = self._scopes[key] = ScopeStats(kind, scope)
        return stats

    def __iter__(self) -> Iterator[ScopeStats]:
        return iter(list(self._scopes.values()))
