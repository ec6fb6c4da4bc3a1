"""Everything the operator holds while it runs, built once from the settings and passed explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE, POLICY_KIND
from kubelock.api.objects import revision_of
from kubelock.domain.clock import Clock
from kubelock.domain.lockpolicy import REMOVED, removed_message
from kubelock.kube import codec, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.kube.prelist import EarlyListFailed, Prelist
from kubelock.operator import heap, namespacewatch, viewlog
from kubelock.operator.cache import Cache, Key
from kubelock.operator.clockbound import server_bound
from kubelock.operator.early import EarlyGrants
from kubelock.operator.events import EventRecorder
from kubelock.operator.freshness import ECHO_SECONDS, Freshness
from kubelock.operator.metrics import Metrics
from kubelock.operator.policies import PolicyIndex, changed, policy_view, reach, snapshot
from kubelock.operator.policystatus import PolicyStatus
from kubelock.operator.reconciler import Reconciler
from kubelock.operator.settings import Settings
from kubelock.operator.start import scopes
from kubelock.operator.watches import ListWatch, QuietSink
from kubelock.operator.watchstats import WatchStats

log = logging.getLogger("kubelock.operator")
steps = logging.getLogger("kubelock.start")  # a start's steps at debug level (`kubelock.operator.start`)
OPERATOR_CONNECTIONS = 32
# Requests under way at once (watches aside). A storm of leases ending together sends its `Expired`
# writes in the order of the deadlines; with 30 of them under way at once a loaded API server shared
# its CPU among all 30 and answered each after 0.2-0.5 s; a few at a time, each is answered in tens of
# milliseconds and the earliest deadlines first (bench #4 in pairs, bench/README.md 2026-11-28: lower
# in three pairs of four). The pace is still the API server's. Watches are not counted.
OPERATOR_IN_FLIGHT = 8
# A write or GET answers in milliseconds, and a resource's work (its grants, its lease expiries)
# waits on the one in flight. On a connection a partition left silent (no FIN, no RST: a pooled
# keep-alive connection reused after the path went dark) nothing else ends it, so this bounds how
# long a lease's expiry or a grant can be held up (tests/integration/test_silent_partition.py).
# Every write is conditional, so one that timed out and landed after all is read back, never applied
# twice. LIST pages keep 30 s: under load they take seconds, and a retry costs the API server most.
REQUEST_TIMEOUT_SECONDS = 10.0
LIST_TIMEOUT_SECONDS = 30.0
CATCH_UP_ATTEMPTS = 5
# A resync pass that failed (a LIST that met a pooled connection a frozen path left silent, say) is
# tried again this soon rather than a whole `--resync-seconds` later: the pass it replaces is the one
# that would have found a holder pod's end behind kopf's frozen pod watch.
RESYNC_RETRY_SECONDS = 5.0
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
        prelist: Prelist | None = None,
    ) -> None:
        self.settings = settings
        self.prelist = prelist  # the priming LISTs, started before the imports (`kubelock.operator.start`)
        self.metrics = metrics
        self.credentials = credentials
        on_request = metrics.request if metrics else None
        # Every open TLS connection holds a read buffer (`main.TLS_READ_BUFFER`), and a burst of grants
        # would open one per concurrent write and keep it alive; past a few dozen in flight the API
        # server, not the number of connections, sets the pace.
        self.client = KubeClient(
            credentials, on_request=on_request, user_agent="kubelock-operator", connections=OPERATOR_CONNECTIONS,
            in_flight=OPERATOR_IN_FLIGHT, timeout=REQUEST_TIMEOUT_SECONDS, list_timeout=LIST_TIMEOUT_SECONDS,
        )
        # Every decision reads `clock` held to the API server's, bounded from the client's answers
        # (`clockbound`): a node whose clock is off must not end leases before their holders do.
        self.clock = server_bound(clock, self.client.server_clock)
        clock = self.clock
        self.cache = Cache()
        self.policies = PolicyIndex()
        self.policy_status = PolicyStatus(self.client, clock)  # tells a policy's writer it governs now
        self.events = EventRecorder(
            self.client, clock, settings.instance, routine_rate=settings.routine_event_rate, unsent=metrics,
            routine_summary_seconds=settings.routine_event_summary_seconds,
        )
        self.freshness = Freshness(self.cache, self._scope_of, self._stale, self._deaf)
        self.reconciler = Reconciler(
            self.client, self.cache, settings.policy, clock, self.events, metrics, gate=self.freshness,
            policies=self.policies,
        )
        self.watch_stats = WatchStats(time.monotonic)
        if metrics is not None:
            metrics.watch_cache(self.cache)
            metrics.watch_streams(self.watch_stats)
            metrics.watch_ledgers(self.reconciler.ledgers)
            metrics.watch_clock(self.clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._claim_watches: dict[str | None, tuple[ListWatch, asyncio.Task[None]]] = {}
        self._lock_watches: list[asyncio.Task[None]] = []
        self._policy_watches: list[asyncio.Task[None]] = []
        self._namespace_watch: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._stale_again = False  # the view went stale again while catching up: catch up once more
        self._before_page: Callable[[], Awaitable[None]] | None = None  # awaited before a LIST's page is parsed

    def in_scope(self, namespace: str) -> bool:
        return self.settings.all_namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.settings.namespaces)

    async def start(self) -> None:
        steps.debug("event loop running")
        self.events.start()
        # New claims are granted from small views of their resources while the priming is under way
        # (`early`): their LISTs begin now, their decisions once the policies are in; it stops, its
        # decisions done, before the normal path's first decision.
        early = EarlyGrants(
            self.client, self.settings.policy, self.clock, self.events, self.policies, self._scopes(),
            self.in_scope, self.metrics, self.prelisted,
        )
        if self.settings.early_grants:
            early.start()
        # Policies first: no decision may be taken without the capacity, lock-delay and quotas they set.
        try:
            policies = {scope: await self.relist_policies(scope) for scope in self._scopes()}
        except BaseException:
            await early.stop()
            raise
        early.policies_listed()
        steps.debug("policies listed (%d)", len(self.policies))
        with heap.collection_paused():
            try:
                self._before_page = early.make_way  # the early path's decisions first (`EarlyGrants.make_way`)
                claims, locks = await self._prime()
            finally:
                self._before_page = None
                if self.prelist is not None:
                    self.prelist.stop()
                    self.prelist = None
                await early.stop()
        self._take_in_early(early.seen(), claims, locks)
        steps.debug("priming in (%d claims, %d locks)", len(self.cache.claims), len(self.cache.locks))
        heap.settle()
        self.freshness.reset()
        self.reconciler.start()
        for scope in self._scopes():
            self._watch_claims(scope, claims[scope])
            watch = ListWatch(self.client, paths.locks(scope), "lock", scope, _Locks(self),
                              self.watch_stats.scope("lock", scope))
            self._lock_watches.append(
                asyncio.create_task(watch.run(locks[scope]), name=f"kubelock-locks {scope or '*'}")
            )
            policy_watch = ListWatch(self.client, paths.policies(scope), "policy", scope, _Policies(self),
                                     self.watch_stats.scope("policy", scope))
            self._policy_watches.append(
                asyncio.create_task(policy_watch.run(policies[scope]), name=f"kubelock-policies {scope or '*'}")
            )
        if self.metrics is not None and (self.settings.all_namespaces or self.settings.namespace_patterns):
            # Exact namespaces have a fixed set of series; any other scope sheds a deleted one's.
            self._namespace_watch = asyncio.create_task(
                namespacewatch.watch(self.client, self.metrics).run(None), name="kubelock-namespaces"
            )
        self._tasks = [
            asyncio.create_task(self.freshness.run(), name="kubelock-pulse"),
            asyncio.create_task(self._resync_forever(), name="kubelock-resync"),
        ]
        where = "all namespaces" if self.settings.all_namespaces else ", ".join(self.settings.namespaces)
        log.info(
            "kubelock operator watching LockClaims in %s (%d claims, %d locks, %d holder pods, %d policies known)",
            where,
            len(self.cache.claims),
            len(self.cache.locks),
            len(self.cache.pods),
            len(self.policies),
        )

    def _take_in_early(self, bodies: list[Body], claims: dict[str | None, int], locks: dict[str | None, int]) -> None:
        """What the early path read or wrote after the priming LISTs' snapshots (`claims`, `locks`:
        the version each scope's LIST was taken at), where the cache lacks it: a lock it created
        (without it, the normal path's create of the same lock would fail and read it back) and a
        claim's newer version (its Held status). The watches, started from those LISTs, replay
        every later change of both, so what is taken here is only the newest state sooner. A lock is
        taken only where the cache has none for its resource, a claim only where the cache knows it
        (a claim new to it is the watch's to bring, with its place in the freshness order)."""
        for body in bodies:
            meta = body.get("metadata") or {}
            namespace = str(meta.get("namespace", ""))
            if not self.in_scope(namespace):
                continue
            version = revision_of(meta.get("resourceVersion"))
            scope = self._scope_of(namespace)
            if body.get("kind") == "ResourceLock":
                key = (namespace, codec.lock_view(body).resource)  # as the cache keys it
                if version > locks.get(scope, version) and key not in self.cache.locks:
                    self.cache.upsert_lock(body)
            elif (body.get("kind") == "LockClaim" and version > claims.get(scope, version)
                  and str(meta.get("uid", "")) in self.cache.claims):
                self.cache.upsert_claim(body)

    def _watch_claims(self, scope: str | None, version: int | None, *, resumed: bool = False) -> None:
        old = self._claim_watches.get(scope)
        if old is not None:
            old[1].cancel()
        watch = ListWatch(self.client, paths.claims(scope), "claim", scope, _Claims(self),
                          self.watch_stats.scope("claim", scope))
        task = asyncio.create_task(watch.run(version, resumed=resumed), name=f"kubelock-claims {scope or '*'}")
        self._claim_watches[scope] = (watch, task)

    async def stop(self) -> None:
        # A SIGTERM (a pod being deleted or rolled) ends here: say so, so that the log of a clean stop
        # is told from a crash's, and that nothing held goes with this process.
        log.info("kubelock operator stopping: claims, locks, tokens and queues stay in the API server for "
                 "the next operator (or another replica) to carry on")
        watches = (*(task for _, task in self._claim_watches.values()), *self._lock_watches, *self._policy_watches)
        for task in (*self._tasks, *watches, self._namespace_watch, self._catching_up):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.reconciler.stop()
        await self.policy_status.stop()
        await self.events.stop()
        await self.client.close()

    def prelisted(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[list[Body], str]] | None:
        """The pages of the LIST of `path` with `params` started before the imports, once; None when
        none was started (or the priming is in: what was not taken by then is not wanted)."""
        if self.prelist is None:
            return None
        return self.prelist.take(path, self.metrics.request if self.metrics else None, params,
                                 on_date=self.client.server_clock.record)

    def _scopes(self) -> list[str | None]:
        return scopes(self.settings)

    def _scope_of(self, namespace: str) -> str | None:
        """The scope whose LISTs and claim watch cover `namespace`."""
        return namespace if namespace in self._scopes() else None

    async def _prime(self) -> tuple[dict[str | None, int], dict[str | None, int]]:
        """Load every claim, lock and holder pod before deciding anything, so that a restarted
        operator never grants from an empty view (the API would refuse it anyway, at a cost). The
        claim and lock watches start from the versions of these LISTs: each is listed once."""
        _, claims, locks = await self.resync()
        return claims, locks

    async def resync(
        self, *, claims: bool = True
    ) -> tuple[set[Key], dict[str | None, int], dict[str | None, int]]:
        """Compare the cache with full LISTs: the keys that changed, and the version each scope's
        claims (with `claims`) and locks were listed at."""
        keys: set[Key] = set()
        cache = self.cache
        lock_uids: set[str] = set()
        pod_keys: set[tuple[str, str]] = set()
        # Each kind is listed in every scope before it is pruned; with several scopes (several LISTs)
        # only what is older than the oldest of them can be known to be gone.
        # The claims, the locks and the holder pods are listed at once: the API server encodes one
        # kind's pages while this process parses another's (one after the other, a restart with
        # 10 000 of each took the sum of both). The claims' and the locks' snapshots are then taken
        # in either order, a few milliseconds apart, and no decision needs one to be older than the
        # other (docs/architecture.md, "Restart"): a claim listed Held whose grant the listed lock
        # lacks makes the decision read the lock, and a grant whose claim was not listed makes it
        # read the claim, before anything is written; each kind's watch starts from its own LIST's
        # version, so every later change of either reaches the cache; and a claim created after the
        # claims' snapshot waits for the claim watch's horizon, whatever the locks' snapshot was.
        scopes = self._scopes()
        locks: dict[str | None, int] = {}
        listed: dict[str | None, int] = {}

        async def list_locks() -> None:
            for scope in scopes:
                locks[scope] = await self._list(paths.locks(scope), cache.absorb_locks, lock_uids, keys)

        async def list_claims() -> None:
            for scope in scopes:
                listed[scope] = await self._list_claims(scope, keys)

        async def list_pods() -> None:
            selector = f"{POD_LABEL}={POD_LABEL_VALUE}"
            for scope in scopes:
                await self._list(paths.pods(scope), cache.absorb_pods, pod_keys, keys, labelSelector=selector)

        try:
            async with asyncio.TaskGroup() as lists:
                lists.create_task(list_locks())
                if claims:
                    lists.create_task(list_claims())
                lists.create_task(list_pods())
        except ExceptionGroup as group:
            # The first LIST to fail cancels the others. Raise its error as the client raised it:
            # callers catch ApiError and Unreachable, and a group of them passes every such clause (a
            # periodic pass that failed once ended the resync loop for good).
            raise group.exceptions[0] from None
        keys |= cache.prune_locks(lock_uids, min(locks.values()))
        keys |= cache.prune_pods(pod_keys)
        return keys, listed, locks

    async def _list_claims(self, scope: str | None, keys: set[Key]) -> int:
        """LIST the claims of one scope into the cache, drop those it no longer has, and move the
        scope's horizon to the LIST's version."""
        uids: set[str] = set()
        before = set(self.cache.claims) if viewlog.enabled() else None
        version = await self._list(paths.claims(scope), self.cache.absorb_claims, uids, keys)
        if before is not None:
            claims = self.cache.claims
            viewlog.listed(((r.namespace, r.claim.name) for u in uids - before if (r := claims.get(u))), version)
        within = self.in_scope if scope is None else scope.__eq__
        keys |= self.cache.prune_claims(uids, version, within)
        self.cache.advance(scope, version)
        return version

    async def _list(
        self,
        path: str,
        absorb: Callable[[list[Body], set[T], Callable[[str], bool]], set[Key]],
        listed: set[T],
        keys: set[Key],
        **params: Any,
    ) -> int:
        """LIST `path` page by page into the cache; the resourceVersion the LIST was taken at. The
        LIST started early for `path` (`kubelock.kube.prelist`), if any, is taken in first; when it
        fails, `path` is listed again from the start, and only that LIST's objects count as listed:
        what the failed one absorbed and the new one lacks is pruned as deleted."""
        early = self.prelisted(path)
        if early is not None:
            got: set[T] = set()
            try:
                version = await self._absorb_pages(early, absorb, got, keys)
            except EarlyListFailed as error:
                log.info("the early LIST of %s failed, listing it again: %s", path, error)
            else:
                listed |= got
                return version
        return await self._absorb_pages(self.client.pages(path, **params), absorb, listed, keys)

    async def _absorb_pages(
        self,
        pages: AsyncIterator[tuple[list[Body], str]],
        absorb: Callable[[list[Body], set[T], Callable[[str], bool]], set[Key]],
        listed: set[T],
        keys: set[Key],
    ) -> int:
        version = 0
        async for page, listed_at in pages:
            if self._before_page is not None:
                await self._before_page()
            keys |= absorb(page, listed, self.in_scope)
            version = int(listed_at or 0)
        return version

    async def _resync_forever(self) -> None:
        """LIST locks and holder pods again now and then: kopf's watch of pods can miss a deletion
        (between the priming LIST and kopf's own, say), and the locks' pass is a safety net that costs
        one LIST a minute. Claims need no such pass: their watch delivers every change in order and
        lists again whenever it could have missed one, and their LIST is the large one (holders leave
        finished claims behind)."""
        # The first pass soon after start closes the gap between the priming LIST of pods and kopf's.
        delay = min(5.0, float(self.settings.resync_seconds))
        while True:
            await asyncio.sleep(delay)
            delay = float(self.settings.resync_seconds)
            try:
                keys, _, _ = await self.resync(claims=False)
            except (ApiError, Unreachable) as error:
                delay = min(RESYNC_RETRY_SECONDS, delay)
                log.warning("resync failed, retrying in %.0f s: %s", delay, error)
                continue
            if keys:
                log.info("resync found %d resources whose events were missed", len(keys))
            self._schedule(keys)
            heap.give_back()  # what a burst of grants since the last pass freed

    def _schedule(self, keys: set[Key]) -> None:
        for key in sorted(keys):
            self.reconciler.schedule(key)

    # ---- a stale view ------------------------------------------------------------------------

    def _stale(self, why: str) -> None:
        """The cache may show the cluster as it was a while ago. Grants wait
        (`Freshness.catching_up`) until LISTs of the claims taken from now on are in. (Only the claims:
        a grant rests on them alone. A lock the cache still shows makes the operator wait for its
        deletion event; one it does not show makes the create fail and be read back.)"""
        if not self.freshness.catching_up:
            log.warning("%s: grants wait until the claims are listed again", why)
        self.freshness.catching_up = True
        if self._catching_up is not None and not self._catching_up.done():
            self._stale_again = True  # the LIST under way may predate what made the view stale
            return
        self._catching_up = asyncio.create_task(self._catch_up(), name="kubelock-catch-up")

    async def _catch_up(self) -> None:
        keys: set[Key] = set()
        refused = 0
        try:
            while True:
                self._stale_again = False
                try:
                    for scope in self._scopes():
                        await self._list_claims(scope, keys)
                except Unreachable as error:
                    # Nothing can be granted while the API server is out of reach anyway.
                    log.info("resync after a stale view failed, retrying: %s", error)
                    await asyncio.sleep(1.0)
                    continue
                except ApiError as error:
                    refused += 1
                    log.warning("resync after a stale view failed (attempt %d): %s", refused, error)
                    if refused >= CATCH_UP_ATTEMPTS:
                        break  # never hold grants for good: the API server still arbitrates every grant
                    await asyncio.sleep(1.0)
                    continue
                if not self._stale_again:
                    break
        finally:
            self.freshness.catching_up = False
            self.reconciler.release_grants()
        log.info("the claims are listed again (%d resources changed)", len(keys))
        self._schedule(keys)

    def _deaf(self, scope: str | None) -> None:
        """The claim watch of `scope` has not shown the operator's own write and has delivered nothing
        for ECHO_SECONDS: it is dead without having said so (a connection left half-open). A new
        stream takes over from the last version it delivered, as after a broken connection: the API
        server replays what came after from its watch cache, and grants of the scope wait until the
        new stream delivers. Only if the server no longer has that version (410) are the claims
        listed again; a LIST of every claim here, at once, would cost seconds of both processes' CPU
        on an API server that may only be slow."""
        old = self._claim_watches.get(scope)
        version = old[0].version if old is not None else None
        log.warning("the claim watch of %s has delivered nothing for %.0f s and not shown a claim status the "
                    "operator wrote: its connection counts as dead; watching again from version %s (grants in "
                    "it wait until the new stream delivers)", scope or "all namespaces", ECHO_SECONDS, version)
        self._watch_claims(scope, version, resumed=True)

    # ---- watch events -----------------------------------------------------------------------

    def claim_event(self, scope: str | None, kind: str, body: Body) -> None:
        if not self.in_scope(_namespace(body)):
            return
        uid = str((body.get("metadata") or {}).get("uid", ""))
        if kind == "DELETED":
            if self.metrics is not None:
                self.metrics.forget(uid)
            record = self.cache.claims.get(uid)
            viewlog.left(body, record is not None)
            self.reconciler.schedule(self.cache.delete_claim(body))
            if record is not None:  # a release when it was Held, whoever deletes the lock
                self.reconciler.claim_deleted(record.namespace, record.claim)
            return
        known = uid in self.cache.claims
        key = self.cache.claim_event(body)
        if not known and key is not None:
            viewlog.entered(body, kind)
        if self.metrics is not None and key is not None and not known:
            self.metrics.seen(uid, self.clock.now())
        if not known:  # before scheduling it: whether its resource's run was under way already
            self.reconciler.busy_answers.entered(key)
        self.reconciler.schedule(key)

    def claims_seen_to(self, scope: str | None, version: int) -> None:
        self.freshness.seen_to(scope, version)
        if self.cache.advance(scope, version) and self.reconciler.holding and not self.freshness.catching_up:
            self.reconciler.release_grants()

    def unwatched(self, scope: str | None) -> None:
        self.freshness.unwatched(scope)

    def watched(self, scope: str | None) -> None:
        self.freshness.watched(scope)
        self.reconciler.release_grants()

    async def relist(self, scope: str | None) -> int:
        keys: set[Key] = set()
        version = await self._list_claims(scope, keys)
        self.freshness.watched(scope)
        log.info("claims of %s listed again (%d resources changed)", scope or "all namespaces", len(keys))
        self._schedule(keys)
        self.reconciler.release_grants()
        return version

    async def relist_locks(self, scope: str | None) -> int:
        """LIST the locks of `scope` into the cache (their watch lost its place); the LIST's version."""
        keys: set[Key] = set()
        uids: set[str] = set()
        version = await self._list(paths.locks(scope), self.cache.absorb_locks, uids, keys)
        within = self.in_scope if scope is None else scope.__eq__
        keys |= self.cache.prune_locks(uids, version, within)
        self._schedule(keys)
        return version

    def on_lock(self, kind: str | None, body: Body) -> None:
        if kind == "DELETED":
            self.reconciler.schedule(self.cache.delete_lock(body))
        else:
            self.reconciler.schedule(self.cache.upsert_lock(body))

    # ---- policies ---------------------------------------------------------------------------

    async def relist_policies(self, scope: str | None) -> int:
        """LIST the LockPolicies of `scope` into the index (at start, and when their watch lost its
        place); the LIST's version."""
        bodies: list[Body] = []
        version = 0
        path = paths.policies(scope)
        early = self.prelisted(path)  # at start: the LIST started before the imports
        if early is not None:
            try:
                async for page, listed_at in early:
                    bodies.extend(page)
                    version = int(listed_at or 0)
            except EarlyListFailed as error:
                log.info("the early LIST of %s failed, listing it again: %s", path, error)
                bodies, early = [], None
        if early is None:
            async for page, listed_at in self.client.pages(path):
                bodies.extend(page)
                version = int(listed_at or 0)
        within = self.in_scope if scope is None else scope.__eq__
        keys = self.cache.keys()
        before = snapshot(self.policies, keys, {k[0] for k in keys if within(k[0])})
        self.policies.replace(bodies, within)
        self._repolicy(before)
        for body in bodies:
            if within(_namespace(body)):
                self.policy_status.observed(body)
        return version

    def on_policy(self, kind: str | None, body: Body) -> None:
        """A policy changed: every resource it governs, or governed, is decided again (a higher
        capacity lets waiters that now fit be granted; a lower lock-delay ends a rest sooner)."""
        before = snapshot(self.policies, self.cache.keys(), [_namespace(body)])
        if kind == "DELETED":
            self._policy_removed(body)
            self.policies.delete(body)
            namespace, policy = policy_view(body)
            self.reconciler.ledgers.forget_policy(namespace, policy.name)
        else:
            self.policies.upsert(body)
            self.policy_status.observed(body)  # after the index has it: from now on it governs
        meta = body.get("metadata") or {}
        log.info("LockPolicy %s/%s %s: %s", meta.get("namespace"), meta.get("name"), kind.lower() if kind else "seen",
                 body.get("spec"))
        self._repolicy(before)

    def _policy_removed(self, body: Body) -> None:
        """Record a deleted policy's Event, with what it governed (asked while the index still has it):
        its deletion stops it governing, and without the Event nothing would show when."""
        namespace, policy = policy_view(body)
        resources, claims = reach(self.cache, self.policies, namespace, policy)
        uid = str((body.get("metadata") or {}).get("uid") or "")
        message = removed_message(policy, resources, claims)
        self.events.record(
            namespace, policy.name, uid, REMOVED, message, warning=False, kind=POLICY_KIND, routine=False, once=True
        )

    def _repolicy(self, before: dict[Key, Any]) -> None:
        touched = changed(self.policies, before)
        for key, _ in touched:
            # The wait-for graph judges who blocks whom with the resource's capacity too.
            self.cache.graphs[key[0]].set_capacity(key[1], self.reconciler.capacity(*key))
            self.reconciler.schedule(key)
        if touched:
            log.info("policies changed: %d resources are decided again", len(touched))

    def on_pod(self, kind: str | None, body: Body) -> None:
        keys = self.cache.delete_pod(body) if kind == "DELETED" else self.cache.upsert_pod(body)
        for key in keys:
            self.reconciler.schedule(key)


class _Claims:
    """The claim watch's sink: the runtime's claim handling."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def event(self, scope: str | None, kind: str, body: Body) -> None:
        self._runtime.claim_event(scope, kind, body)

    def seen_to(self, scope: str | None, version: int) -> None:
        self._runtime.claims_seen_to(scope, version)

    def unwatched(self, scope: str | None) -> None:
        self._runtime.unwatched(scope)

    def watched(self, scope: str | None) -> None:
        self._runtime.watched(scope)

    async def relist(self, scope: str | None) -> int:
        return await self._runtime.relist(scope)


class _Locks(QuietSink):
    """The lock watch's sink. A broken lock watch holds nothing back: a grant rests on the claims
    alone (a lock the cache missed makes the create fail and be read back), and the resumed watch
    replays what it missed."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def _take(self, kind: str, body: Body) -> None:
        self._runtime.on_lock(kind, body)

    def event(self, scope: str | None, kind: str, body: Body) -> None:
        if self._runtime.in_scope(_namespace(body)):
            self._take(kind, body)

    async def relist(self, scope: str | None) -> int:
        return await self._runtime.relist_locks(scope)


class _Policies(_Locks):
    """The policy watch's sink. A broken policy watch holds nothing back either: it resumes and
    replays what it missed, or lists again."""

    def _take(self, kind: str, body: Body) -> None:
        self._runtime.on_policy(kind, body)

    async def relist(self, scope: str | None) -> int:
        return await self._runtime.relist_policies(scope)


def _namespace(body: Body) -> str:
    return str((body.get("metadata") or {}).get("namespace", ""))
