"""The operator's own LIST-then-watch streams of LockClaims and ResourceLocks, one per kind and scope
(a namespace, or every namespace).

Claims: why not kopf's, as for holder pods: first come, first served needs to know, before a claim is
granted, that every claim created before it is in the cache. One watch stream delivers changes in the
order the API server committed them, and a LIST at version V holds everything created up to V; kopf
hands each object's events to a task of its own and relists in name order, which loses both. So this
watch tells the cache, event by event, the version up to which it has seen every claim (its horizon,
`Cache.advance`), and a claim first seen beyond the horizon is not granted before the horizon passes
it.

The watch starts from the priming LIST's version. When its connection breaks (a connection lost, the
API server restarted) it resumes from the last version it delivered, and the API server replays what
came after; until the resumed stream delivers something, the scope counts as unwatched, so no grant
rests on a view that stopped moving. When the API server no longer has that version (410 Gone), the
scope stays unwatched until a fresh LIST has been absorbed and the watch resumes from it. When the
server ends a watch at its timeout, nothing was missed and the watch resumes where it was. That
timeout is short (`kube.client.WATCH_SECONDS`, a minute): a watch that does not end by it and its
grace is taken for dead, so that a claim watch on a path that went silent (a frozen proxy, which
neither an error nor keepalive reveals, in a scope where the operator writes nothing for the echo
check of `freshness` to notice) is replaced within that bound.

Locks: kopf's watch would LIST every lock again after the priming LIST (at a restart with 10 000
locks, a second LIST of all of them before the first new claim is served) and keep memory of its own
for every lock it saw although its handler only fed the cache. The same stream, started from the
priming LIST's version, lists them once and keeps nothing per lock beyond the cache's record. Locks
need no horizon: a lock the cache does not show yet makes a create fail with 409 and be read back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from kubelock.api import objects
from kubelock.kube.client import WATCH_SECONDS, KubeClient
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.operator import viewlog
from kubelock.operator.watchstats import ScopeStats

log = logging.getLogger("kubelock.watches")
BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)
Body = dict[str, Any]


class Sink(Protocol):
    """Where a watch delivers (the runtime, through one adapter per kind)."""

    def event(self, scope: str | None, kind: str, body: Body) -> None:
        """An ADDED, MODIFIED or DELETED event, in commit order."""

    def seen_to(self, scope: str | None, version: int) -> None:
        """Every change of the scope up to `version` has been delivered (an event's or bookmark's)."""

    def unwatched(self, scope: str | None) -> None:
        """Events of the scope may be missing: the watch broke."""

    def watched(self, scope: str | None) -> None:
        """The resumed watch of the scope delivers again."""

    async def relist(self, scope: str | None) -> int:
        """LIST the scope's objects into the cache (the scope is watched again once it returns); the
        version the LIST was taken at."""
        ...


class QuietSink:
    """A base for a sink that needs nothing of its watch's progress: `seen_to`, `unwatched` and
    `watched` do nothing (a broken watch holds nothing of it back: it resumes and replays what it
    missed, or lists again). A subclass gives `event` and `relist`."""

    def seen_to(self, scope: str | None, version: int) -> None:
        pass

    def unwatched(self, scope: str | None) -> None:
        pass

    def watched(self, scope: str | None) -> None:
        pass


class ListWatch:
    def __init__(self, client: KubeClient, path: str, noun: str, scope: str | None, sink: Sink,
                 stats: ScopeStats | None = None) -> None:
        self.client = client
        self.stats = stats if stats is not None else ScopeStats(noun, scope)
        self.scope = scope
        self.sink = sink
        self.path = path
        self.noun = noun  # "claim" or "lock", for the log
        self.relists = 0
        self.version: int | None = None  # the last version delivered (or listed at): where a new stream resumes

    async def run(self, version: int | None, *, resumed: bool = False) -> None:
        """Watch from `version` (None: LIST first) until cancelled. `resumed`: this stream takes over
        from one that stopped delivering, so the scope counts as unwatched until it delivers."""
        failures = 0
        broken = resumed
        broke_at = time.monotonic()
        self.version = version
        if resumed:
            self.sink.unwatched(self.scope)
        while True:
            try:
                if self.version is None:
                    self.sink.unwatched(self.scope)
                    self.version = await self.sink.relist(self.scope)
                    self.relists += 1
                    broken = False
                ended = "broke off"
                self.stats.began(time.monotonic())
                try:
                    async for event in self.client.watch(self.path, resource_version=str(self.version),
                                                         timeout_seconds=WATCH_SECONDS):
                        self.stats.delivered(time.monotonic())
                        if broken:
                            self.sink.watched(self.scope)  # the resumed stream is moving again
                            viewlog.resumed(self.noun, self.scope, time.monotonic() - broke_at)
                            broken = False
                        self.version = self._deliver(event, self.version)
                        failures = 0
                    ended = "ended by the server"
                finally:
                    self._summarise(ended)
                continue  # the server ended the watch at its timeout: nothing was missed
            except ApiError as error:
                if error.status == 410:
                    log.info("%s watch of %s is too far behind (410): listing again", self.noun, _name(self.scope))
                    self.version = None
                else:
                    log.warning("%s watch of %s failed: %s", self.noun, _name(self.scope), error)
            except Unreachable as error:
                log.warning("%s watch of %s lost its connection: %s", self.noun, _name(self.scope), error)
            if not broken:
                broke_at = time.monotonic()
            broken = True
            self.sink.unwatched(self.scope)
            delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
            failures += 1
            await asyncio.sleep(random.uniform(delay / 2, delay))

    def _summarise(self, ended: str) -> None:
        """One debug line a watch request (one a minute a scope while it is healthy): its events and the
        largest gap between two of them, the gap that a stalled stream would show."""
        if log.isEnabledFor(logging.DEBUG):
            seconds, events, gap, since = self.stats.request_summary(time.monotonic())
            log.debug("%s watch of %s %s after %.1f s: %d events, largest gap %.2f s (ended %.1f s ago), "
                      "%d events in all", self.noun, _name(self.scope), ended, seconds, events, gap, since,
                      self.stats.events)

    def _deliver(self, event: Body, version: int) -> int:
        kind = str(event.get("type"))
        obj = event.get("object") or {}
        seen = objects.revision(obj)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.sink.event(self.scope, kind, obj)
        if seen:
            self.sink.seen_to(self.scope, seen)
        return seen or version


def _name(scope: str | None) -> str:
    return f"namespace {scope}" if scope else "all namespaces"
