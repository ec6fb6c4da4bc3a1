"""Whether the operator's view is fresh enough to grant on.

Every write the operator makes is conditional (a resourceVersion or uid precondition, a name only one
object can have), so a stale view makes a write fail, never go wrong — except for what a grant rests
on. Creating a ResourceLock cannot be made conditional on the claim it is for (it may have been
deleted a moment ago), nor on the claims that are not in the cache (an older waiter not seen yet). So
a grant waits while the view it would rest on may be old or incomplete:

- the claim to grant was first seen at a version beyond the cache's horizon (`Cache.complete_at`):
  a claim created before it may not have arrived yet (a LIST under way, a watch behind);
- the claim watch of its scope is broken or listing again (`unwatched`);
- the event loop has just come back from a stall (SIGSTOP, a paused VM, a starved process): while it
  did not run, the API server moved on and the watches' events waited unread, so the cache shows how
  things were before the stall. The operator then LISTs everything again (`catching_up`);
- its claim watch has not shown a write the operator itself made, and has delivered nothing at all
  for ECHO_SECONDS since: the watch is silently dead (a connection left half-open by a partition). A
  new stream takes over from the last version the dead one delivered (the API server replays what
  came after; only when it no longer has that version, 410, are the claims listed again).

Two things look like a dead watch and are not, so they do not count: a write whose event the watch
delivered before the write's own response was read (the two travel on different connections; under
load either comes first), and a watch that is delivering, but behind (a busy API server or a busy
event loop): a dead connection delivers nothing, and a stream that delivers will reach the write.
A LIST of every claim there would only add to what made it late.

`epoch` changes with every stall, so a grant whose lock was created across one can be told apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kubelock.operator.cache import Cache

log = logging.getLogger("kubelock.freshness")
# How often the loop checks in, and how late it may be before the view counts as stale. A second is
# far beyond scheduling noise on a busy node and far below the pauses that matter (a SIGSTOP, a VM
# migration, a partition): those leave the API server seconds ahead.
TICK_SECONDS = 0.25
STALL_SECONDS = 1.0
# How long the operator's own claim write may go unseen, with the watch delivering nothing at all
# meanwhile, before the watch counts as dead. Several seconds: a busy API server can take a second or
# two to deliver a watch event.
ECHO_SECONDS = 5.0
Scope = str | None


class Freshness:
    def __init__(
        self,
        cache: Cache,
        scope_of: Callable[[str], Scope],
        on_stale: Callable[[str], None],
        on_deaf: Callable[[Scope], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.cache = cache
        self._scope_of = scope_of
        self._on_stale = on_stale
        self._on_deaf = on_deaf
        self._monotonic = monotonic
        self._stall_seconds = stall_seconds
        self._last = monotonic()
        self._unwatched: set[Scope] = set()
        self._unechoed: dict[Scope, tuple[int, float]] = {}  # the oldest own write not seen yet, and when
        self._heard: dict[Scope, tuple[int, float]] = {}  # the newest version each claim watch delivered, and when
        self.catching_up = False  # LISTs after a stall or a loss of contact are under way
        self.epoch = 0  # stalls seen so far
        self.longest_stall = 0.0

    # ---- the loop's pulse ---------------------------------------------------------------------

    def reset(self) -> None:
        """Start counting from now (the priming LISTs before it are no stall)."""
        self._last = self._monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.check()
            for scope in list(self._unechoed):
                self._deaf(scope)

    def check(self) -> bool:
        """Whether the loop has just come back from a stall (reported once, by whoever sees it first:
        the pulse, or a grant about to be made before the pulse ran again)."""
        now = self._monotonic()
        gap = now - self._last - TICK_SECONDS
        self._last = now
        if gap <= self._stall_seconds:
            return False
        self.epoch += 1
        self.longest_stall = max(self.longest_stall, gap)
        # The stall held up the echoes too: they are due counting from now.
        self._unechoed = {scope: (version, now) for scope, (version, _) in self._unechoed.items()}
        self._on_stale(f"the operator did not run for {gap:.1f} s")
        return True

    # ---- the claim watches --------------------------------------------------------------------

    def unwatched(self, scope: Scope) -> None:
        self._unwatched.add(scope)
        self._unechoed.pop(scope, None)

    def watched(self, scope: Scope) -> None:
        self._unwatched.discard(scope)

    def wrote(self, namespace: str, version: int) -> None:
        """The operator wrote a claim of `namespace`, stored at `version`: its watch should show it
        (unless it has already: its event may be read before the write's response)."""
        scope = self._scope_of(namespace)
        heard = self._heard.get(scope)
        if heard is not None and heard[0] >= version:
            return
        if scope not in self._unechoed and scope not in self._unwatched:
            self._unechoed[scope] = (version, self._monotonic())

    def seen_to(self, scope: Scope, version: int) -> None:
        heard = self._heard.get(scope)
        self._heard[scope] = (max(version, heard[0]) if heard else version, self._monotonic())
        pending = self._unechoed.get(scope)
        if pending is not None and version >= pending[0]:
            del self._unechoed[scope]

    def _deaf(self, scope: Scope) -> bool:
        """Whether the claim watch of `scope` has been silent for ECHO_SECONDS since a write it has
        not shown yet (then it counts as unwatched, and `on_deaf` starts a new one)."""
        pending = self._unechoed.get(scope)
        if pending is None:
            return False
        heard = self._heard.get(scope)
        silent_since = max(pending[1], heard[1]) if heard else pending[1]
        if self._monotonic() - silent_since <= ECHO_SECONDS:
            return False
        self.unwatched(scope)
        self._on_deaf(scope)
        return True

    # ---- the question -------------------------------------------------------------------------

    def may_grant(self, namespace: str, sequence: int) -> bool:
        """Whether a grant to a claim of `namespace` with `sequence` may be made on the view now."""
        if self.check() or self.catching_up:
            return False
        scope = self._scope_of(namespace)
        if self._deaf(scope) or scope in self._unwatched:
            return False
        return sequence <= self.cache.complete_at(namespace)

    def why_not(self, namespace: str, sequence: int) -> str:
        """Why a grant to such a claim waits now, for the log (no side effects: `may_grant` noticed
        any stall already)."""
        scope = self._scope_of(namespace)
        if self.catching_up:
            return "the claims are being listed again after a stale view"
        if scope in self._unwatched:
            return "the claim watch is broken or listing again"
        horizon = self.cache.complete_at(namespace)
        if sequence > horizon:
            return f"first seen at {sequence}, beyond the version {horizon} up to which every claim is seen"
        return "fresh now"
