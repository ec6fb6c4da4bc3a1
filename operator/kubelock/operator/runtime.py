"""Everything the operator holds while it runs, built once from the settings and passed explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE
from kubelock.domain.clock import Clock
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.operator.cache import Cache, Key
from kubelock.operator.events import EventRecorder
from kubelock.operator.metrics import Metrics
from kubelock.operator.reconciler import Reconciler
from kubelock.operator.settings import Settings

log = logging.getLogger("kubelock.operator")
OPERATOR_CONNECTIONS = 32
CATCH_UP_ATTEMPTS = 5
RELIST_PAUSE_SECONDS = 2.0
Body = dict[str, Any]
T = TypeVar("T")


class Runtime:
    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.credentials = credentials
        self.clock = clock
        on_request = metrics.request if metrics else None
        # Every open TLS connection holds a 128 KiB read buffer, and a burst of grants would open one
        # per concurrent write and keep it alive; past a few dozen in flight the API server, not the
        # number of connections, sets the pace.
        self.client = KubeClient(
            credentials, on_request=on_request, user_agent="kubelock-operator", connections=OPERATOR_CONNECTIONS
        )
        self.cache = Cache()
        self.events = EventRecorder(self.client, clock, settings.instance)
        self.reconciler = Reconciler(self.client, self.cache, settings.policy, clock, self.events, metrics)
        if metrics is not None:
            metrics.watch_cache(self.cache)
        self._resyncer: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        # Per namespace: was the last claim event from a LIST, and when did it come?
        self._last_claim_event: dict[str, tuple[bool, float]] = {}

    def in_scope(self, namespace: str) -> bool:
        return self.settings.all_namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.settings.namespaces)

    async def start(self) -> None:
        self.events.start()
        await self._prime()
        self.reconciler.start()
        self._resyncer = asyncio.create_task(self._resync_forever(), name="kubelock-resync")
        where = "all namespaces" if self.settings.all_namespaces else ", ".join(self.settings.namespaces)
        log.info(
            "kubelock operator watching LockClaims in %s (%d claims, %d locks, %d holder pods known)",
            where,
            len(self.cache.claims),
            len(self.cache.locks),
            len(self.cache.pods),
        )

    async def stop(self) -> None:
        for task in (self._resyncer, self._catching_up):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.reconciler.stop()
        await self.events.stop()
        await self.client.close()

    def _scopes(self) -> list[str | None]:
        exact = [n for n in self.settings.namespaces if not any(ch in n for ch in "*?[")]
        return list(exact) if exact and len(exact) == len(self.settings.namespaces) else [None]

    async def _prime(self) -> None:
        """Load every claim, lock and holder pod before deciding anything, so that a restarted
        operator never grants from an empty view (the API would refuse it anyway, at a cost)."""
        await self.resync()

    async def resync(self) -> set[Key]:
        """Compare the cache with full LISTs and return the keys that changed. Locks first: a
        claim listed after its lock was deleted must not be judged against that lock."""
        keys: set[Key] = set()
        cache = self.cache
        lock_uids: set[str] = set()
        claim_uids: set[str] = set()
        pod_keys: set[tuple[str, str]] = set()
        # Each kind is listed in every scope before it is pruned; with several scopes (several LISTs)
        # only what is older than the oldest of them can be known to be gone.
        versions = [
            await self._list(paths.locks(scope), cache.absorb_locks, lock_uids, keys) for scope in self._scopes()
        ]
        keys |= cache.prune_locks(lock_uids, min(versions))
        versions = [
            await self._list(paths.claims(scope), cache.absorb_claims, claim_uids, keys) for scope in self._scopes()
        ]
        keys |= cache.prune_claims(claim_uids, min(versions))
        selector = f"{POD_LABEL}={POD_LABEL_VALUE}"
        for scope in self._scopes():
            await self._list(paths.pods(scope), cache.absorb_pods, pod_keys, keys, labelSelector=selector)
        keys |= cache.prune_pods(pod_keys)
        return keys

    async def _list(
        self,
        path: str,
        absorb: Callable[[list[Body], set[T], Callable[[str], bool]], set[Key]],
        listed: set[T],
        keys: set[Key],
        **params: Any,
    ) -> int:
        """LIST `path` page by page into the cache; the resourceVersion the LIST was taken at."""
        version = 0
        async for page, listed_at in self.client.pages(path, **params):
            keys |= absorb(page, listed, self.in_scope)
            version = int(listed_at or 0)
        return version

    def _relisted(self) -> None:
        """kopf lists claims again (after its watch lost its place, e.g. an API server restart): hold
        grants until a full LIST of our own has brought every claim into the cache."""
        if self._catching_up is not None and not self._catching_up.done():
            return
        log.info("claims are being listed again: grants wait for a full resync")
        self.reconciler.hold_grants()
        self._catching_up = asyncio.create_task(self._catch_up(), name="kubelock-catch-up")

    async def _catch_up(self) -> None:
        keys: set[Key] = set()
        try:
            for attempt in range(CATCH_UP_ATTEMPTS):
                try:
                    keys = await self.resync()
                    break
                except (ApiError, Unreachable) as error:
                    log.warning("resync after a relist failed (attempt %d): %s", attempt + 1, error)
                    await asyncio.sleep(1.0)
        finally:
            self.reconciler.release_grants()  # never hold grants for good: the API arbitrates anyway
        for key in sorted(keys):
            self.reconciler.schedule(key)

    async def _resync_forever(self) -> None:
        # The first pass soon after start closes the gap between the priming LIST and kopf's own.
        delay = min(5.0, float(self.settings.resync_seconds))
        while True:
            await asyncio.sleep(delay)
            delay = float(self.settings.resync_seconds)
            try:
                keys = await self.resync()
            except (ApiError, Unreachable) as error:
                log.warning("resync failed, retrying in %.0f s: %s", delay, error)
                continue
            if keys:
                log.info("resync found %d resources whose events were missed", len(keys))
            for key in sorted(keys):
                self.reconciler.schedule(key)

    # ---- watch events -----------------------------------------------------------------------

    def on_claim(self, kind: str | None, body: Body) -> None:
        namespace, now = _namespace(body), self.clock.now()
        if kind is None and self.reconciler.enabled and _starts_a_relist(self._last_claim_event.get(namespace), now):
            self._relisted()
        self._last_claim_event[namespace] = (kind is None, now)
        if kind == "DELETED":
            gone = str((body.get("metadata") or {}).get("uid", ""))
            if self.metrics is not None:
                self.metrics.forget(gone)
            known = self.cache.claims.get(gone)
            self.reconciler.schedule(self.cache.delete_claim(body))
            if known is not None:  # a release when it was Held, whoever deletes the lock
                self.reconciler.claim_deleted(known.namespace, known.claim)
        else:
            uid = (body.get("metadata") or {}).get("uid")
            if self.metrics is not None and uid and uid not in self.cache.claims:
                self.metrics.seen(uid, self.clock.now())
            self.reconciler.schedule(self.cache.upsert_claim(body))

    def on_lock(self, kind: str | None, body: Body) -> None:
        if kind == "DELETED":
            self.reconciler.schedule(self.cache.delete_lock(body))
        else:
            self.reconciler.schedule(self.cache.upsert_lock(body))

    def on_pod(self, kind: str | None, body: Body) -> None:
        keys = self.cache.delete_pod(body) if kind == "DELETED" else self.cache.upsert_pod(body)
        for key in keys:
            self.reconciler.schedule(key)


def _starts_a_relist(last: tuple[bool, float] | None, now: float) -> bool:
    """Whether a listed claim (an event without a type) begins kopf listing claims again.

    The first listing of a namespace is not a relist (the operator's own LIST came first). Events of
    one listing come back to back; a listed claim after a watch event, or after a pause, begins a new
    one."""
    if last is None:
        return False
    was_listing, at = last
    return not was_listing or now - at > RELIST_PAUSE_SECONDS


def _namespace(body: Body) -> str:
    return str((body.get("metadata") or {}).get("namespace", ""))
