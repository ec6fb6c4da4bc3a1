"""New claims granted while a restarted operator is still priming: the early path.

The normal path decides nothing before its priming LISTs are in (every claim and lock it watches:
with 10 000 of each, seconds of the API server's time), because a grant rests on every claim of its
resource created before it (`freshness`). A new claim's resource has few claims, and the CRDs make
them selectable (`spec.resource`, `status.phase`; docs/api.md). So from the start of the process
until the priming is in, this path finds the claims no operator has answered (a LIST with
`status.phase=`, started before the imports by `kubelock.operator.start`, and a watch from its
version, so that claims created meanwhile are seen too) and for each claim C of one resource R
reads a small view, in the order a claim moves through its phases so that one moving on between two
reads is caught by the later one:

1. the claims not answered yet (`status.phase=`), then 2. the waiting ones (`status.phase=Pending`)
   of C's namespace, then 5. R's lock; beside those, in any order (they hold a claim in every phase):
3. the claims of R as C spells it (Held ones, finished ones), 4. every claim of several resources
   (`spec.resource=`: the field is absent from them).

Every read comes after C was seen, so each holds every claim created before C that still matches
(a LIST's resourceVersion is a horizon exactly as the cache's is). A claim of R created before C is
then unanswered, waiting, Held (and in R's lock: a Held claim spelled otherwise is read back from the
lock's grant, as the normal path does), or finished (and only a lock-delay rest would make it count:
`earlygrant` says no under a lock-delay). C itself must be in read 3: one deleted after the LIST
it was found in (granted by another replica, released and gone) would otherwise stay in the view
unanswered, as a LIST adds what it holds and removes nothing, beside a lock without its grant, and be
granted again. The view goes through the reconciler's own gathering,
`arbiter.decide` and write code (a `Reconciler` over a cache of this view alone, through
`Reconciler.decide_and_apply`), and only a grant to C and its Held status are applied
(`earlygrant.grant_actions`); anything else is left to the normal path. The API server still
arbitrates: the lock's create by its one name (or the conditional update of a semaphore's lock)
fails rather than grant twice, whatever another replica does.

When the priming is in, `stop` lets the decisions under way finish (for a moment) before the normal
path's first decision, and what they read and wrote (`seen`) is handed to the primed cache where
the priming's LISTs predate it (`Runtime._take_in_early`: the normal path does not create an early
lock again). One cut short is harmless: its lock create, if made, makes the normal path's create
fail and read the lock back, and its status write is conditional on the claim's version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubelock.domain.clock import Clock
from kubelock.domain.earlygrant import grant_actions, refusal
from kubelock.domain.model import Claim, Decision, Policy, SetStatus
from kubelock.domain.resource import lock_name, normalise
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.kube.prelist import EarlyListFailed
from kubelock.operator.cache import Cache, Key
from kubelock.operator.events import EventRecorder
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.reconciler import Choice, Observer, Reconciler
from kubelock.operator.start import UNANSWERED, UNANSWERED_QUERY

log = logging.getLogger("kubelock.early")
Body = dict[str, Any]
# The pages of a LIST (path, query) started before the imports, once; None: none was (`Runtime.prelisted`).
Prelisted = Callable[[str, Mapping[str, str]], AsyncIterator[tuple[list[Body], str]] | None]
WAITING = "status.phase=Pending"
MULTI = "spec.resource="  # claims of several resources have no spec.resource
ROUNDS = 3  # a grant, then its Held status; one more for a write that met a stale view
STOP_GRACE_SECONDS = 2.0
# The most the priming's page parsing waits, in all, for decisions under way (`make_way`).
MAKE_WAY_SECONDS = 2.0
# The most claims one start decides early; the rest wait for the normal path. Each decision LISTs its
# namespace's unanswered and waiting claims, so without a bound a restart that finds many new claims
# (after a long outage) would ask the API server for many times what the priming asks, while it primes.
DECISIONS = 8


@dataclass(frozen=True)
class Listed:
    """A LIST of unanswered claims and the version it was taken at."""

    items: list[Body]
    version: int


def _namespace(body: Body) -> str | None:
    return (body.get("metadata") or {}).get("namespace")


class _ViewCache(Cache):
    """The small view of one decision, which keeps what it was told of locks and claims (its reads
    and its own writes' responses) for the normal path (`EarlyGrants.seen`)."""

    def __init__(self, seen: list[Body]) -> None:
        super().__init__()
        self._seen = seen

    def upsert_lock(self, body: Body) -> Key | None:
        self._seen.append(body)
        return super().upsert_lock(body)

    def upsert_claim(self, body: Body) -> Key | None:
        self._seen.append(body)
        return super().upsert_claim(body)


class _ViewGate:
    """The freshness gate over the small view: a claim may be granted when it was first seen at or
    before the versions the view's LISTs were taken at."""

    epoch = 0

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def may_grant(self, namespace: str, sequence: int) -> bool:
        return sequence <= self._cache.complete_at(namespace)

    def why_not(self, namespace: str, sequence: int) -> str:
        return f"first seen at {sequence}, beyond the small view's {self._cache.complete_at(namespace)}"

    def wrote(self, namespace: str, version: int) -> None:
        pass


class EarlyGrants:
    def __init__(
        self,
        client: KubeClient,
        policy: Policy,
        clock: Clock,
        events: EventRecorder,
        policies: PolicyIndex,
        scopes: list[str | None],
        in_scope: Callable[[str], bool],
        observer: Observer | None = None,
        prelisted: Prelisted | None = None,
    ) -> None:
        self.client = client
        self._prelisted = prelisted  # the LISTs started before the imports
        self.policy = policy
        self.clock = clock
        self.events = events
        self.policies = policies
        self._scopes = scopes
        self._in_scope = in_scope
        self._observer = observer
        self._finding: list[asyncio.Task[None]] = []
        self._deciding: set[asyncio.Task[None]] = set()
        self._tried: set[str] = set()  # uids of claims decided (or refused) once already
        self._seen: list[Body] = []  # the locks and claims the decisions read or wrote (`seen`)
        self._policies = asyncio.Event()  # set once the LockPolicies are listed (`policies_listed`)
        self._made_way = 0.0  # seconds the priming has waited for decisions (`make_way`)
        self.granted = 0
        self.refused = 0
        self._started = False  # `start` not called: --no-early-grants

    def start(self) -> None:
        self._started = True
        self._finding = [
            asyncio.create_task(self._find(scope), name=f"kubelock-early {scope or '*'}") for scope in self._scopes
        ]

    async def make_way(self) -> None:
        """Wait while decisions are under way, MAKE_WAY_SECONDS at most in all: the priming calls this
        before it parses each page. Parsing a page holds the event loop (under load, 0.1 s and more),
        and a decision is four round trips, each of which needs the loop several times: between
        pages, a decision took 4–5 s at load 15, most of it waiting for the loop. Its pages are
        fetched meanwhile all the same (on the pre-import threads, or by the API server into the
        connection), so the priming loses at most the parsing it put off; and it never waits
        longer than MAKE_WAY_SECONDS, whatever the decisions do."""
        while self._deciding and self._made_way < MAKE_WAY_SECONDS:
            began = time.monotonic()
            await asyncio.wait(set(self._deciding), timeout=MAKE_WAY_SECONDS - self._made_way)
            self._made_way += time.monotonic() - began

    def policies_listed(self) -> None:
        """The LockPolicies are in: decisions may be taken (the LISTs before them need not wait)."""
        self._policies.set()

    async def stop(self) -> None:
        """No new decisions; those under way get STOP_GRACE_SECONDS to finish, then are cancelled."""
        for task in self._finding:
            task.cancel()
        deciding = set(self._deciding)
        if deciding:
            _, late = await asyncio.wait(deciding, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
        for task in (*self._finding, *deciding):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finding = []
        if not self._started:
            # Said apart from "0 claims granted early", which reads as if the path had run and found none.
            log.info("early path off (--no-early-grants): no claim was answered before the priming was in")
            return
        log.info("early path stopped: %d claims granted early, %d left to the normal path", self.granted, self.refused)

    def seen(self) -> list[Body]:
        """The locks and claims (bodies, each as the API server had it at its resourceVersion) the
        decisions read or wrote: what the normal path's priming LISTs may predate (a lock created
        early is missing from a LIST of locks taken before; the normal path's own create of it would
        fail and read it back)."""
        return list(self._seen)

    # ---- finding the claims no operator has answered -----------------------------------------

    async def _find(self, scope: str | None) -> None:
        """LIST the unanswered claims of `scope`, then watch from that LIST's version. Best effort:
        any failure ends it, and the normal path answers every claim anyway."""
        path = paths.claims(scope)
        try:
            items, version = await self._list_unanswered(path)
            listed = Listed(items, int(version or 0))
            log.debug("%d unanswered claims listed in %s at %s", len(items), scope or "every namespace", version)
            for body in items:
                self._consider(body, listed)
            while True:
                async for event in self.client.watch(path, resource_version=version, fieldSelector=UNANSWERED):
                    body = event.get("object") or {}
                    version = (body.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._consider(body)
        except (ApiError, Unreachable) as error:
            log.info("early path of %s ends: %s", scope or "every namespace", error)
        except Exception:  # best effort: never in the way of the operator's start
            log.exception("early path of %s failed", scope or "every namespace")

    async def _list_unanswered(self, path: str) -> tuple[list[Body], str]:
        """The unanswered claims of `path`: the LIST started before the imports (`kubelock.operator.start`),
        in by now as a rule, or, without it or when it failed, one of the event loop's own."""
        pages = self._prelisted(path, UNANSWERED_QUERY) if self._prelisted is not None else None
        if pages is not None:
            items: list[Body] = []
            version = ""
            try:
                async for page, listed_at in pages:
                    items.extend(page)
                    version = listed_at
            except EarlyListFailed as error:
                log.info("the early LIST of the unanswered claims of %s failed, listing them again: %s", path, error)
            else:
                return items, version
        return await self.client.list_all(path, fieldSelector=UNANSWERED)

    def _consider(self, body: Body, listed: Listed | None = None) -> None:
        """Decide `body`'s claim if it is new here; `listed`: the LIST of unanswered claims it came
        from (taken after it was seen, so it serves as the first read of its view)."""
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        namespace, uid, resource = meta.get("namespace"), meta.get("uid"), spec.get("resource")
        if not (isinstance(namespace, str) and isinstance(uid, str) and isinstance(resource, str)):
            return  # a claim of several resources, or not a claim this path can read
        if uid in self._tried or (body.get("status") or {}).get("phase") or not self._in_scope(namespace):
            return
        self._tried.add(uid)
        if len(self._tried) > DECISIONS:
            self.refused += 1
            log.debug("claim %s in %s left to the normal path: %d decided early already", uid, namespace, DECISIONS)
            return
        task = asyncio.create_task(self._decide(namespace, uid, resource, listed), name=f"kubelock-early-decide {uid}")
        self._deciding.add(task)
        task.add_done_callback(self._deciding.discard)

    # ---- one claim --------------------------------------------------------------------------

    async def _decide(self, namespace: str, uid: str, spelled: str, listed: Listed | None) -> None:
        try:
            why = await self._grant(namespace, uid, spelled, listed)
        except (ApiError, Unreachable) as error:
            why = f"a read or write failed: {error}"
        except ValueError as error:  # a resource the contract refuses: the normal path says so
            why = str(error)
        except Exception:  # best effort: never in the way of the operator's start
            log.exception("early decision of claim %s in %s failed", uid, namespace)
            why = "failed"
        if why is None:
            self.granted += 1
        else:
            self.refused += 1
            log.debug("claim %s in %s left to the normal path: %s", uid, namespace, why)

    async def _grant(self, namespace: str, uid: str, spelled: str, listed: Listed | None) -> str | None:
        """Grant claim `uid` from the small view of its resource; why not, if it was not granted."""
        resource = normalise(spelled)
        key = (namespace, resource)
        cache = _ViewCache(self._seen)
        base = paths.claims(namespace)

        present: set[str] = set()  # uids in the LIST of R's claims as C spells it (every phase)

        async def read(selector: str, *, every_phase: bool = False) -> int:
            items, version = await self.client.list_all(base, fieldSelector=selector)
            cache.absorb_claims(items, set(), lambda _: True)
            if every_phase:
                present.update(str((b.get("metadata") or {}).get("uid")) for b in items)
            return int(version or 0)

        reconciler = Reconciler(
            self.client, cache, self.policy, self.clock, self.events, self._observer, gate=_ViewGate(cache),
            policies=self.policies,
        )
        lock: Body | None = None

        async def waiting_then_lock() -> int:
            # The lock after the waiting claims: a claim granted between the two reads is in the lock
            # (and a claim spelled as C is in the LIST of R's claims in every phase anyway).
            nonlocal lock
            version = await read(WAITING)
            lock = await reconciler.grants.read(namespace, lock_name(resource))
            return version

        # 1. The unanswered claims first: the LIST the claim was found in, if any. 2. The waiting ones
        # after it (a claim answered between the two is in the second), then the lock (a claim granted
        # meanwhile is in it); the claims of R as spelled and of several resources are in every phase,
        # so they are read in any order: beside those two.
        if listed is not None:
            cache.absorb_claims([b for b in listed.items if _namespace(b) == namespace], set(), lambda _: True)
            first = listed.version
        else:
            first = await read(UNANSWERED)
        rest = await asyncio.gather(
            waiting_then_lock(), read(paths.field_selector("spec.resource", spelled), every_phase=True), read(MULTI)
        )
        if uid not in present:
            # C was deleted after the LIST it was found in: granted, released and gone meanwhile (by
            # another replica), or withdrawn. The view would still hold it unanswered (a LIST adds
            # what it has, it does not remove what it lacks) beside a lock that no longer has its
            # grant, and would grant it again: a grant to a claim that no longer exists.
            return "the claim is gone"
        if lock is not None:
            cache.upsert_lock(lock)
        cache.advance(namespace, min([first, *rest]))
        log.debug("view of claim %s in %s read: %d claims, lock %s", uid, namespace, len(cache.claims),
                  "absent" if lock is None else "present")
        await self._policies.wait()

        def choose(claims: list[Claim], decision: Decision) -> Choice:
            claim = next((c for c in claims if c.uid == uid), None)
            others = [r.claim for r in cache.claims.values() if r.claim.uid != uid]
            why = refusal(claim, resource, others, self.policies.policy_for(namespace, resource))
            if why is not None:
                return why
            actions = grant_actions(uid, decision)
            if actions is None:
                return "the decision is not a grant of this claim alone"
            log.debug("claim %s in %s: applying %s", uid, namespace, ", ".join(type(a).__name__ for a in actions))
            return actions

        for _ in range(ROUNDS):
            applied = await reconciler.decide_and_apply(key, choose)
            if isinstance(applied, str):
                return applied
            record = cache.claims.get(uid)
            if any(isinstance(a, SetStatus) for a in applied) and record is not None and record.claim.status:
                log.info("%s/%s granted before the priming is in", namespace, record.claim.name)
                return None
        return "did not settle"
