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
  things were before the stall. The operator then LISTs everything again before granting.

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


class Freshness:
    def __init__(
        self,
        cache: Cache,
        scope_of: Callable[[str], str | None],
        on_stall: Callable[[float], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.cache = cache
        self._scope_of = scope_of
        self._on_stall = on_stall
        self._monotonic = monotonic
        self._stall_seconds = stall_seconds
        self._last = monotonic()
        self._unwatched: set[str | None] = set()
        self.catching_up = False  # a LIST after a stall is under way
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
        self._on_stall(gap)
        return True

    # ---- the claim watches --------------------------------------------------------------------

    def unwatched(self, scope: str | None) -> None:
        self._unwatched.add(scope)

    def watched(self, scope: str | None) -> None:
        self._unwatched.discard(scope)

    # ---- the question -------------------------------------------------------------------------

    def may_grant(self, namespace: str, sequence: int) -> bool:
        """Whether a grant to a claim of `namespace` with `sequence` may be made on the view now."""
        if self.check() or self.catching_up:
            return False
        if self._scope_of(namespace) in self._unwatched:
            return False
        return sequence <= self.cache.complete_at(namespace)
