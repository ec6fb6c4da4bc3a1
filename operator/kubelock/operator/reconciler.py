"""One idempotent reconcile per resource key: gather state → decide → apply, until stable.

Events for claims, locks and pods only update the cache and mark a key dirty. One worker per dirty
key runs `decide` and applies its actions with conditional writes (deterministic lock names and
resourceVersion / uid preconditions), so a stale cache or a second operator replica can make a write
fail but never make it wrong; a failed write refreshes the object from the API and decides again.
Deadlines (lease expiry, stale checks, wait timeouts) live in one heap with one sleeper task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from kubelock.domain.arbiter import decide, release_notice
from kubelock.domain.clock import Clock
from kubelock.domain.deadlines import DeadlineHeap
from kubelock.domain.model import (
    Action,
    Claim,
    CreateLock,
    Decision,
    DeleteClaim,
    DeleteLock,
    Lock,
    LockBreak,
    Notice,
    PodLiveness,
    Policy,
    RenewLock,
    SetStatus,
)
from kubelock.domain.reasons import Phase
from kubelock.domain.resource import lock_name
from kubelock.kube import codec, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import ApiError, Conflict, NotFound, Unreachable
from kubelock.operator.cache import Cache, Key, PodInfo, pod_info
from kubelock.operator.events import EventRecorder

log = logging.getLogger("kubelock.reconciler")
MAX_ROUNDS = 64
RETRY_DELAY = 1.0
# How long queue positions may lag behind a queue that is moving: each grant shifts every waiter's
# position, and writing them all on every handoff would cost O(waiters) writes per grant.
POSITION_DELAY = 0.25
# Keys reconciled at once. More would not go faster (the API server sets the pace), but each would be
# a task holding its decision while it waits for a connection: a burst of 10 000 claims must queue as
# keys, not as 10 000 coroutines.
MAX_WORKERS = 64


class Observer(Protocol):
    """Receives what the reconciler did (metrics)."""

    def applied(self, namespace: str, action: Action, now: float) -> None: ...

    def reconciled(self, seconds: float) -> None: ...


class NullObserver:
    def applied(self, namespace: str, action: Action, now: float) -> None:
        pass

    def reconciled(self, seconds: float) -> None:
        pass


class Reconciler:
    def __init__(
        self,
        client: KubeClient,
        cache: Cache,
        policy: Policy,
        clock: Clock,
        events: EventRecorder,
        observer: Observer | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.policy = policy
        self.clock = clock
        self.events = events
        self.observer = observer or NullObserver()
        self._dirty: set[Key] = set()
        self._workers: dict[Key, asyncio.Task[None]] = {}
        self._waiting: deque[Key] = deque()  # dirty keys for which no worker was free, in order
        self._deadlines: DeadlineHeap[Key] = DeadlineHeap()
        self._wakeup = asyncio.Event()
        self._sleeper: asyncio.Task[None] | None = None
        self._token_writes: dict[Key, tuple[codec.Body, asyncio.Task[codec.Body]]] = {}
        self._holding = False  # grants wait: the cache may be missing claims (see hold_grants)
        self._held_back: set[Key] = set()
        self._granted_at: dict[Key, float] = {}  # when each key's current lock was created here
        self.enabled = False  # set once the cache is primed: before that, decisions would be uninformed

    # ---- scheduling -------------------------------------------------------------------------

    def start(self) -> None:
        self.enabled = True
        self._sleeper = asyncio.create_task(self._sleep_until_deadlines(), name="kubelock-deadlines")
        # Keys with a claim still waiting for an answer go first: a restarted operator serves new
        # requests before it re-arms the deadlines of thousands of settled leases.
        for key in sorted(self.cache.keys(), key=lambda k: (not self.cache.awaits_decision(k), k)):
            self.schedule(key)

    async def stop(self) -> None:
        self.enabled = False
        self._waiting.clear()
        self._dirty.clear()
        writes = [task for _, task in self._token_writes.values()]
        tasks = [t for t in (self._sleeper, *self._workers.values(), *writes) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def schedule(self, key: Key | None) -> None:
        if key is None or not self.enabled:
            return
        if key in self._dirty and key not in self._workers:
            return  # already waiting for a worker
        self._dirty.add(key)
        if key in self._workers:
            return  # its worker goes round again
        if len(self._workers) < MAX_WORKERS:
            self._start(key)
        else:
            self._waiting.append(key)

    def _start(self, key: Key) -> None:
        self._workers[key] = asyncio.create_task(self._work(key), name=f"reconcile {key[0]}/{key[1]}")

    def _start_waiting(self) -> None:
        while self._waiting and len(self._workers) < MAX_WORKERS:
            key = self._waiting.popleft()
            if key in self._dirty and key not in self._workers:
                self._start(key)

    def hold_grants(self) -> None:
        """Decide everything but grants until `release_grants`. While a watch relists, claims arrive
        in name order, and an older waiter may not have arrived when a younger one is considered
        for a free resource; granting then would break first-come-first-served."""
        self._holding = True

    def release_grants(self) -> None:
        self._holding = False
        keys, self._held_back = self._held_back, set()
        for key in sorted(keys):
            self.schedule(key)

    def schedule_at(self, key: Key, when: float) -> None:
        if self._deadlines.schedule(key, when):
            self._wakeup.set()

    async def _sleep_until_deadlines(self) -> None:
        while True:
            head = self._deadlines.next_deadline()
            self._wakeup.clear()
            timeout = None if head is None else max(0.0, head - self.clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            for key in self._deadlines.pop_due(self.clock.now()):
                self.schedule(key)

    async def _work(self, key: Key) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                started = time.perf_counter()
                try:
                    await self.reconcile(key)
                except (ApiError, Unreachable) as error:
                    log.warning("reconcile of %s in %s failed, retrying: %s", key[1], key[0], error)
                    self.schedule_at(key, self.clock.now() + RETRY_DELAY)
                except Exception:
                    log.exception("reconcile of %s in %s crashed, retrying", key[1], key[0])
                    self.schedule_at(key, self.clock.now() + RETRY_DELAY)
                finally:
                    self.observer.reconciled(time.perf_counter() - started)
        finally:
            self._workers.pop(key, None)
            if self.enabled:
                self._start_waiting()

    # ---- one resource -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        try:
            await self._reconcile(key)
        finally:
            await self._settle_token(key)

    async def _reconcile(self, key: Key) -> None:
        namespace, resource = key
        for _ in range(MAX_ROUNDS):
            claims, lock = await self._gather(key)
            decision = decide(
                resource,
                claims,
                lock,
                now=self.clock.now(),
                policy=self.policy,
                graph=self.cache.graphs[namespace],
                broken=await self._break_of(key, claims, lock),
            )
            for other in decision.also_reconcile:
                self.schedule((namespace, other))
            if self._holding and any(isinstance(action, CreateLock) for action in decision.actions):
                self._held_back.add(key)
                return
            if not decision.actions:
                if decision.next_deadline is not None:
                    self.schedule_at(key, decision.next_deadline)
                self._forget_grant(key)
                return
            if self._defer_positions(key, decision):
                return
            await self._apply(namespace, decision.actions)
        log.error("reconcile of %s in %s did not settle after %d rounds", resource, namespace, MAX_ROUNDS)
        self.schedule_at(key, self.clock.now() + RETRY_DELAY)

    def _defer_positions(self, key: Key, decision: Decision) -> bool:
        """Put off a decision that only renumbers waiters until the queue has been still for
        POSITION_DELAY, so a run of handoffs writes the positions once, not once per grant."""
        granted = self._granted_at.get(key)
        if granted is None or self.clock.now() - granted >= POSITION_DELAY:
            return False
        if not all(_renumbers(action) for action in decision.actions):
            return False
        self.schedule_at(key, granted + POSITION_DELAY)
        if decision.next_deadline is not None:
            self.schedule_at(key, decision.next_deadline)
        return True

    def _forget_grant(self, key: Key) -> None:
        granted = self._granted_at.get(key)
        if granted is not None and self.clock.now() - granted >= POSITION_DELAY:
            del self._granted_at[key]

    async def _gather(self, key: Key) -> tuple[list[Claim], Lock | None]:
        """The claims and lock of a key, with pod liveness resolved. Where the cache cannot be
        trusted to decide a destructive step, the API server is asked first."""
        namespace = key[0]
        records = self.cache.claims_for(key)
        cached = self.cache.locks.get(key)
        lock = cached[0] if cached else None
        active = [r for r in records if r.claim.active]
        if lock is None and any(r.claim.phase is Phase.HELD for r in active):
            lock = await self._confirm_lock(key)  # broken, or the lock's watch event is still on its way
        cached = self.cache.locks.get(key)
        if cached is not None and cached[0].fencing_token == 0:
            # Created by an operator that stopped before writing the token; nobody was told of it yet.
            fixed = await self._write_token(namespace, cached[0].name, {"metadata": {"resourceVersion": cached[1]}})
            self.cache.upsert_lock(fixed)
            cached = self.cache.locks.get(key)
            lock = cached[0] if cached else None
        if (
            lock is not None
            and not any(r.claim.uid == lock.claim_uid for r in records)
            and not self.cache.was_deleted(lock.claim_uid)
        ):
            await self._confirm_claim(namespace, lock)  # released, or the claim's event is still on its way
            records = self.cache.claims_for(key)
        claims = [await self._with_pod(namespace, r.claim, r.pod_uid) for r in records]
        return claims, lock

    async def _break_of(self, key: Key, claims: list[Claim], lock: Lock | None) -> LockBreak | None:
        """What ended a lock that a claim still believes it holds. A lock deleted without a break
        record may have gone with its namespace: the namespace controller deletes every object in
        it, and that is no administrator's break."""
        broken = self.cache.breaks.get(key)
        if lock is not None or (broken is not None and broken.actor) or not any(c.phase is Phase.HELD for c in claims):
            return broken
        try:
            body = await self.client.get(paths.namespace(key[0]))
        except NotFound:
            deleting = True  # already gone
        else:
            deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
        return replace(broken or LockBreak(), namespace_deleted=True) if deleting else broken

    async def _confirm_lock(self, key: Key) -> Lock | None:
        namespace, resource = key
        try:
            body = await self.client.get(paths.locks(namespace, lock_name(resource)))
        except NotFound:
            return None
        self.cache.upsert_lock(body)
        cached = self.cache.locks.get(key)
        return cached[0] if cached else None

    async def _confirm_claim(self, namespace: str, lock: Lock) -> None:
        try:
            body = await self.client.get(paths.claims(namespace, lock.claim_name))
        except NotFound:
            return
        if (body.get("metadata") or {}).get("uid") == lock.claim_uid:
            self.cache.upsert_claim(body)

    async def _with_pod(self, namespace: str, claim: Claim, pod_uid: str | None) -> Claim:
        if claim.pod_name is None or not claim.active:
            return claim
        info = self.cache.pods.get((namespace, claim.pod_name))
        if info is None:
            try:
                body = await self.client.get(paths.pods(namespace, claim.pod_name))
            except NotFound:
                return replace(claim, pod=PodLiveness.MISSING)
            info = pod_info(body)
            if info.watched:
                self.cache.upsert_pod(body)  # its watch event has not arrived yet
        return replace(claim, pod=_liveness(info, pod_uid))

    # ---- applying ---------------------------------------------------------------------------

    async def _apply(self, namespace: str, actions: Iterable[Action]) -> None:
        """Apply a decision in order, and stop at the first write that failed on a stale view: the
        rest of the decision rested on it (an Expired status that lost a race with a renewal must
        not be followed by deleting the lock)."""
        batch: list[SetStatus] = []
        for action in actions:
            if isinstance(action, SetStatus):
                batch.append(action)
                continue
            if not await self._flush(namespace, batch):
                return
            batch = []
            if not await self._apply_one(namespace, action):
                return
        await self._flush(namespace, batch)

    async def _flush(self, namespace: str, batch: list[SetStatus]) -> bool:
        # Status writes of different claims are independent: send them together.
        results = await asyncio.gather(*(self._apply_one(namespace, a) for a in batch))
        return all(results)

    async def _apply_one(self, namespace: str, action: Action) -> bool:
        """Apply one action; False when it failed on a stale view (the caller decides again)."""
        now = self.clock.now()
        try:
            if isinstance(action, SetStatus):
                await self._set_status(namespace, action, now)
            elif isinstance(action, CreateLock):
                await self._create_lock(namespace, action)
            elif isinstance(action, RenewLock):
                await self._renew_lock(namespace, action)
            elif isinstance(action, DeleteClaim):
                await self._delete_claim(namespace, action)
            else:
                await self._delete_lock(namespace, action)
        except (Conflict, NotFound) as error:
            log.debug("stale view of %s in %s (%s): refreshing", _subject(action), namespace, error)
            await self._refresh(namespace, action)
            return False
        self.observer.applied(namespace, action, now)
        return True

    async def _set_status(self, namespace: str, action: SetStatus, now: float) -> None:
        record = self.cache.claims.get(action.claim.uid)
        if record is None:
            return
        body = await self.client.patch(
            paths.claims(namespace, action.claim.name, status=True), codec.status_patch(action.status, record, now)
        )
        self.cache.upsert_claim(body)
        status = action.status
        notice = action.notice or Notice(status.reason, status.message)
        _log_decision(namespace, action.claim.name, action.claim.holder, action.claim.resource, status.phase, notice)
        if action.notice is not None:
            self._announce(namespace, action.claim.name, action.claim.uid, action.notice)

    def _announce(self, namespace: str, claim_name: str, claim_uid: str, notice: Notice) -> None:
        """Every Event goes through the recorder, which decides how it is sent."""
        self.events.record(
            namespace, claim_name, claim_uid, notice.reason.value, notice.message, warning=notice.warning
        )

    async def _create_lock(self, namespace: str, action: CreateLock) -> None:
        record = self.cache.claims.get(action.claim.uid)
        if record is None:
            return
        name = lock_name(action.claim.resource)
        try:
            body = await self.client.create(paths.locks(namespace), codec.lock_body(action, record, name))
        except Conflict as error:
            if not error.already_exists:
                raise
            body = await self.client.get(paths.locks(namespace, name))  # someone else holds it: learn who
            self.cache.upsert_lock(body)
            return
        # The token (the creation's resourceVersion) is known from this response, so the claim can be
        # told it in the next round while the token is being written into the lock, not after: the
        # two writes overlap. `_settle_token` waits for the lock's write before the key's turn ends.
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        key = (namespace, action.claim.resource)
        write = asyncio.create_task(self._write_token(namespace, name, {"metadata": {"resourceVersion": version}}))
        self._token_writes[key] = (body, write)
        self._granted_at[key] = self.clock.now()
        self.cache.upsert_lock(codec.with_token(body, version))

    async def _settle_token(self, key: Key) -> None:
        pending = self._token_writes.pop(key, None)
        if pending is None:
            return
        created, write = pending
        try:
            self.cache.upsert_lock(await write)
        except NotFound:
            self.cache.forget_lock(key, str(created["metadata"]["uid"]))  # broken already
        except (ApiError, Unreachable) as error:
            # Not written: the cache must not claim otherwise, so that `_gather` writes it.
            log.warning("fencing token of %s in %s not written, retrying: %s", key[1], key[0], error)
            self.cache.unconfirm_token(created)
            self.schedule_at(key, self.clock.now() + RETRY_DELAY)

    async def _write_token(self, namespace: str, name: str, body: codec.Body) -> codec.Body:
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        return await self.client.patch(paths.locks(namespace, name), codec.token_patch(version))

    async def _renew_lock(self, namespace: str, action: RenewLock) -> None:
        key = (namespace, action.lock.resource)
        cached = self.cache.locks.get(key)
        if cached is None or cached[0].uid != action.lock.uid:
            raise NotFound(404, "NotFound", "lock changed")
        body = await self.client.patch(paths.locks(namespace, action.lock.name), codec.renew_patch(action, cached[1]))
        self.cache.upsert_lock(body)

    async def _delete_lock(self, namespace: str, action: DeleteLock) -> None:
        with contextlib.suppress(NotFound):
            await self.client.delete(paths.locks(namespace, action.lock.name), uid=action.lock.uid)
        self.cache.forget_lock((namespace, action.lock.resource), action.lock.uid)

    def claim_deleted(self, namespace: str, claim: Claim) -> None:
        """A claim was deleted: if it held the lock, that is a release, told on the claim (its Events
        outlive it) and in the log."""
        notice = release_notice(claim, self.clock.now())
        if notice is not None:
            _log_decision(namespace, claim.name, claim.holder, claim.resource, None, notice)
            self._announce(namespace, claim.name, claim.uid, notice)

    async def _delete_claim(self, namespace: str, action: DeleteClaim) -> None:
        """Remove a finished claim's record (uid precondition: a newer claim of the name survives)."""
        claim = action.claim
        with contextlib.suppress(NotFound):
            await self.client.delete(paths.claims(namespace, claim.name), uid=claim.uid)
        self.cache.delete_claim({"metadata": {"uid": claim.uid}})
        log.info(
            "%s/%s removed: finished %s for %s on %s, kept for ttlSecondsAfterFinished",
            namespace, claim.name, claim.phase, claim.holder, claim.resource,
            extra={"namespace": namespace, "claim": claim.name, "resource": claim.resource, "holder": claim.holder,
                   "outcome": "Removed", "reason": claim.status.reason.value if claim.status else None},
        )

    async def _refresh(self, namespace: str, action: Action) -> None:
        if isinstance(action, SetStatus | CreateLock | DeleteClaim):
            claim = action.claim
            try:
                body = await self.client.get(paths.claims(namespace, claim.name))
            except NotFound:
                self.cache.forget_claim(claim.uid)
                return
            if (body.get("metadata") or {}).get("uid") == claim.uid:
                self.cache.upsert_claim(body)
            else:
                self.cache.forget_claim(claim.uid)
        else:
            key = (namespace, action.lock.resource)
            try:
                body = await self.client.get(paths.locks(namespace, action.lock.name))
            except NotFound:
                self.cache.forget_lock(key, action.lock.uid)
                return
            if (body.get("metadata") or {}).get("uid") != action.lock.uid:
                self.cache.forget_lock(key, action.lock.uid)  # replaced: that lock is gone
            self.cache.upsert_lock(body)


def _liveness(info: PodInfo, expected_uid: str | None) -> PodLiveness:
    if expected_uid and info.uid != expected_uid:
        return PodLiveness.TERMINATED
    if info.terminated:
        return PodLiveness.TERMINATED
    return PodLiveness.ALIVE if info.watched else PodLiveness.UNWATCHED


def _renumbers(action: Action) -> bool:
    """A waiter's status moves from one Pending to another (a new position, a new holder)."""
    if not isinstance(action, SetStatus) or action.status.phase is not Phase.PENDING:
        return False
    return action.claim.status is not None and action.claim.status.phase is Phase.PENDING


def _log_decision(
    namespace: str, claim: str, holder: str, resource: str, phase: Phase | None, notice: Notice
) -> None:
    """One line per decision: what became of which claim, and why (with the notice's details, such
    as who broke a lock)."""
    outcome = phase.value if phase is not None else notice.reason.value
    log.log(
        logging.WARNING if notice.warning else logging.INFO,
        "%s/%s %s for %s: %s (%s): %s",
        namespace, claim, outcome, holder, resource, notice.reason.value, notice.message,
        extra={
            "namespace": namespace,
            "claim": claim,
            "resource": resource,
            "holder": holder,
            "outcome": outcome,
            "reason": notice.reason.value,
            **dict(notice.details),
        },
    )


def _subject(action: Action) -> str:
    if isinstance(action, SetStatus | CreateLock | DeleteClaim):
        return f"claim {action.claim.name}"
    return f"lock {action.lock.name}"
