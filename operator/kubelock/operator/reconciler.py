"""One idempotent reconcile per resource key: gather state → decide → apply, until stable.

Events for claims, locks and pods only update the cache and mark a key dirty. One worker per dirty
key runs `decide` and applies its actions with conditional writes (deterministic lock names and
resourceVersion / uid preconditions), so a stale cache or a second operator replica can make a write
fail but never make it wrong; a failed write refreshes the object from the API and decides again.
A grant, the one write that cannot be made conditional on what it rests on, waits until the view is
fresh enough (`Gate`, see `kubelock.operator.freshness`).
Which key is reconciled when (one at a time per key, retries, deadlines: lease expiry, stale checks,
wait timeouts) is the work queue's (`kubelock.operator.workqueue`); this module is what a reconcile does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from kubelock.domain import quotas
from kubelock.domain.arbiter import decide, first_answers, lock_refused, release_notice
from kubelock.domain.clock import Clock
from kubelock.domain.leasestart import told_at
from kubelock.domain.lockpolicy import DEFAULT, NO_USAGE, LockPolicy, Usage
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
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name
from kubelock.kube import codec, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.codec import ClaimRecord
from kubelock.kube.errors import ApiError, Conflict, NotFound, Unreachable
from kubelock.operator import viewlog
from kubelock.operator.busyanswers import BusyAnswers
from kubelock.operator.cache import Cache, Key, LockRecord, PodInfo, multi_claim_uid, pod_info
from kubelock.operator.events import EventRecorder
from kubelock.operator.grants import GrantStore, LockRefused, Stale, Taken, Written
from kubelock.operator.logs import named_resources
from kubelock.operator.moved import claim_moved, lock_moved
from kubelock.operator.multiclaims import MultiClaims
from kubelock.operator.policies import PolicyIndex, usage
from kubelock.operator.quotaledger import QuotaLedgers
from kubelock.operator.workqueue import RETRY_DELAY, WorkQueue

log = logging.getLogger("kubelock.reconciler")
MAX_ROUNDS = 64
# How long queue positions may lag behind a queue that is moving: each grant shifts every waiter's
# position, and writing them all on every handoff would cost O(waiters) writes per grant.
POSITION_DELAY = 0.25
# A grant the API server refused to store (`LockRefused`: a used-up ResourceQuota on ResourceLocks,
# say) is tried again after this long, not at the work queue's 1 s: the refusal stands until an
# admin or another lock's end changes it, and each try is a create the server refuses again.
REFUSED_RETRY_DELAY = 10.0
# An expired lock's deletion held back behind the deadlines (`_deferrable_cleanup`) is sent at the
# latest this long after the decision that ended its lease, whatever else is due. Not sooner: in a
# storm of leases ending together the deletions would share the API server with the `Expired`
# writes still due, and the holders would learn of their ends later. Measured in pairs (bench #4,
# 1 000 ends among 2 000 locks, both orders): a 1 s bound made the lateness p99 624-668 ms against
# 222-350 ms with this one. Nobody is kept waiting by it: a new claim on the resource runs the key at
# once, and that run deletes the lock first.
EXPIRED_LOCK_PATIENCE = 30.0


# The permits of a resource in a namespace: (namespace, resource) -> capacity.
Capacity = Callable[[str, str], int]


class Observer(Protocol):
    """Receives what the reconciler did (metrics)."""

    def applied(self, namespace: str, action: Action, now: float) -> None: ...

    def reconciled(self, seconds: float) -> None: ...


# What a caller with a partial view takes of a decision (`Reconciler.decide_and_apply`): the actions
# to apply (some of the decision's, in its order), or why it takes none.
Choice = tuple[Action, ...] | str
Chooser = Callable[[list[Claim], Decision], Choice]


class NullObserver:
    def applied(self, namespace: str, action: Action, now: float) -> None:
        pass

    def reconciled(self, seconds: float) -> None:
        pass


@dataclass(slots=True)
class Seen:
    """The versions a decision was taken on: its writes are conditional on these, not on whatever
    the cache holds by the time they are sent (a renewal may have arrived meanwhile). `lock` moves on
    with the decision's own writes of the lock: each rests on the one before (two Shared waiters
    granted together are two writes of one lock)."""

    claims: dict[str, ClaimRecord]
    lock: LockRecord | None

    @property
    def grants(self) -> tuple[Lock, ...]:
        return self.lock.grants if self.lock is not None else ()

    @property
    def lock_version(self) -> str | None:
        return self.lock.version if self.lock is not None else None


class Gate(Protocol):
    """Whether the view is fresh enough to grant on (`kubelock.operator.freshness.Freshness`)."""

    @property
    def epoch(self) -> int:
        """Changes whenever the view may have gone stale (the event loop stalled)."""
        ...

    def may_grant(self, namespace: str, sequence: int) -> bool: ...

    def why_not(self, namespace: str, sequence: int) -> str:
        """Why a grant may not be made now (for the log; no side effects)."""
        ...

    def wrote(self, namespace: str, version: int) -> None:
        """A claim of `namespace` was written, stored at `version` (its watch should show it)."""


class OpenGate:
    """Every grant may go ahead (a cache filled by hand, as in unit tests)."""

    epoch = 0

    def may_grant(self, namespace: str, sequence: int) -> bool:
        return True

    def why_not(self, namespace: str, sequence: int) -> str:
        return "open gate"

    def wrote(self, namespace: str, version: int) -> None:
        pass


class Policies(Protocol):
    """The LockPolicies that govern resources (`kubelock.operator.policies.PolicyIndex`)."""

    def policy_for(self, namespace: str, resource: str) -> LockPolicy: ...

    def capacity_of(self, namespace: str, resource: str) -> int: ...


class NoPolicies:
    """No LockPolicy anywhere: capacity 1, no lock-delay, no quotas (a cache filled by hand)."""

    def policy_for(self, namespace: str, resource: str) -> LockPolicy:
        return DEFAULT

    def capacity_of(self, namespace: str, resource: str) -> int:
        return 1


class Reconciler:
    def __init__(
        self,
        client: KubeClient,
        cache: Cache,
        policy: Policy,
        clock: Clock,
        events: EventRecorder,
        observer: Observer | None = None,
        gate: Gate | None = None,
        policies: Policies | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        self.client = client
        self.grants = GrantStore(client)
        self.cache = cache
        self.policy = policy
        self.clock = clock
        self.events = events
        self.observer = observer or NullObserver()
        self.gate: Gate = gate or OpenGate()
        self.policies: Policies = policies if policies is not None else NoPolicies()  # an empty index is falsy
        # The permits of a resource: its governing LockPolicy's capacity (tests may pass their own).
        self.capacity: Capacity = capacity if capacity is not None else self.policies.capacity_of
        # One reconcile per key at a time, retried with backoff, woken at its deadlines.
        self.queue: WorkQueue[Key] = WorkQueue(
            self.reconcile,
            clock,
            transient=(ApiError, Unreachable),
            describe=lambda key: f"reconcile of {key[1]} in {key[0]}",
            processed=self.observer.reconciled,
        )
        self._held_back: set[Key] = set()  # keys with a grant waiting for a fresh view
        self._created_across_stall: set[str] = set()  # uids of claims granted across a stall, not told yet
        self._granted_at: dict[Key, float] = {}  # when each key's current lock was created here
        self.multi = MultiClaims(self)
        # New claims' first answers while their resource's run waits for its writes.
        self.busy_answers = BusyAnswers(self.decide_and_apply, self.queue.processing, self.schedule)
        self.in_flight = quotas.InFlight()  # grants and first waits decided, not yet in the cache
        # The same reservations recorded in the API server, where every replica's meet (quotas only).
        self.ledgers = QuotaLedgers(client, cache.reservation_ended)

    # ---- scheduling (the work queue) --------------------------------------------------------

    def start(self) -> None:
        """Once the cache is primed: before that, decisions would be uninformed."""
        self.queue.start()
        # Keys with a claim still waiting for an answer go first: a restarted operator serves new
        # requests before it re-arms the deadlines of thousands of settled leases. (Found from the
        # claims, not by asking every key: with 10 000 held locks that took 0.05 s of CPU before the
        # first decision.)
        keys = self.cache.keys()
        first = self.cache.awaiting_keys()
        for key in (*sorted(first), *sorted(keys - first)):
            self.schedule(key)

    async def stop(self) -> None:
        await self.queue.stop()
        await self.busy_answers.stop()

    def schedule(self, key: Key | None) -> None:
        """Reconcile `key` soon; a resource's claims of several resources with it (what changed on
        the resource may grant them, end them, or let them go on)."""
        self.queue.schedule(key)
        if key is not None and multi_claim_uid(key) is None:
            for other in self.cache.multis_on(key):
                self.queue.schedule(other)

    def schedule_at(self, key: Key, when: float, *, urgent: bool = True) -> None:
        self.queue.schedule_at(key, when, urgent=urgent)

    @property
    def holding(self) -> bool:
        """Some grant waits for the view to become fresh enough."""
        return bool(self._held_back)

    def release_grants(self) -> None:
        """The view became fresher: decide again every key whose grant was held back."""
        keys, self._held_back = self._held_back, set()
        for key in sorted(keys):
            self.schedule(key)

    # ---- one resource -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        try:
            await self._reconcile(key)
        except LockRefused as refusal:
            await self._lock_refused(key, refusal)

    async def _lock_refused(self, key: Key, refusal: LockRefused) -> None:
        """Fail closed: nothing is granted, and the claim's status says why (`arbiter.lock_refused`).
        A try-lock, of one resource or several, ends `Rejected` `LockRefused` with the API server's
        words. A waiter stays Pending with reason `LockRefused`, written (with a Warning Event) once per
        refusal episode, not at every retry, and its grant is tried again after `REFUSED_RETRY_DELAY`,
        when the refusal may have gone (a lock freed under the quota)."""
        namespace = key[0]
        message = refusal.explanation
        record = self.cache.claims.get(refusal.claim_uid)
        now = self.clock.now()
        told = None if record is None else lock_refused(record.claim, message, now, retry_seconds=REFUSED_RETRY_DELAY)
        if record is not None and told is not None:
            try:
                await self._set_status(namespace, told, now, record)
            except (Conflict, NotFound) as error:  # the claim changed meanwhile: decide again
                log.debug("%s/%s: refusal not recorded (%s)", namespace, refusal.claim_name, error)
                self.schedule(key)
                return
            if record.claim.multi:
                # Its resources: an ended claim's grants there are removed, and their queues move on.
                for resource in record.claim.every_resource:
                    self.schedule((namespace, resource))
        else:
            log.debug("%s/%s: lock %s refused again: %s", namespace, refusal.claim_name, refusal.lock, refusal.message)
        if told is not None and told.status.phase.terminal:
            self.schedule(key)  # the others waiting on the key, if any
            return
        self.schedule_at(key, self.clock.now() + REFUSED_RETRY_DELAY)

    async def _reconcile(self, key: Key) -> None:
        if multi_claim_uid(key) is not None:
            await self.multi.reconcile(key)
            return
        namespace, resource = key
        for _ in range(MAX_ROUNDS):
            claims, seen = await self._gather(key)
            if seen.lock is not None and seen.lock.breaking is not None:
                await self._break_grants(key, seen.lock)
                continue
            lock_policy = self.policies.policy_for(namespace, resource)
            capacity = self.capacity(namespace, resource)
            broken = await self._break_of(key, claims, seen.grants)
            # Taken after the last await: a namespace's graph left empty is dropped (`_forget_key`).
            graph = self.cache.graphs[namespace]
            graph.set_capacity(resource, capacity)
            # From here to the reservation below, no await: the usage counted is the usage reserved on.
            decided_at = self.clock.now()
            decide_on = functools.partial(
                decide,
                resource,
                claims,
                now=decided_at,
                policy=self.policy,
                graph=graph,
                capacity=capacity,
                broken=broken,
                finished=self.cache.finished_for(key),
                lock_policy=lock_policy,
                usage=self._usage(namespace, lock_policy, claims),
            )
            decision = _with_next_grants(decide_on(seen.grants), seen.grants, decide_on)
            for other in decision.also_reconcile:
                self.schedule((namespace, other))
            kept = self._without_held_back(key, decision, claims, seen.grants)
            if kept is None:
                return
            decision = kept
            if self.busy_answers.claims:  # first answers being written beside this run: not twice
                beside = self.busy_answers.claims
                decision = replace(decision, actions=tuple(a for a in decision.actions if not _answered(a, beside)))
            # and this run's own first answers are not written beside it meanwhile
            answering = {a.claim.uid for a in first_answers(decision.actions)} - self.busy_answers.claims
            if not decision.actions:
                if decision.next_deadline is not None:
                    self.schedule_at(key, decision.next_deadline)
                elif not claims and seen.lock is None and not self.cache.finished_for(key):
                    self._forget_key(key)
                self._forget_grant(key)
                return
            if self._defer_positions(key, decision):
                return
            deferred = _deferrable_cleanup(claims, decision)
            deferring = bool(deferred) and len(deferred) < len(decision.actions)  # never put off a run's only writes
            if deferring:
                # The expiry is the claim's Expired status; the lock's deletion follows as ordinary
                # work, behind whatever else ends at this moment (see _deferrable_cleanup).
                decision = replace(decision, actions=tuple(a for a in decision.actions if a not in deferred))
            # Taken in the same step as the usage the decision counted (no await since): a key decided
            # while these writes are under way counts them.
            reservations = _reservations(namespace, lock_policy, decision.actions)
            reserved = self.in_flight.reserve(reservations)
            self.busy_answers.claims |= answering
            try:
                if reservations and not await self.ledgers.record(lock_policy, reservations, self.clock.now()):
                    continue  # another replica reserved under the same quota meanwhile: count it, decide again
                await self._apply(namespace, decision.actions, seen)
            finally:
                self.in_flight.release(reserved)  # each write's result is in the cache, or it failed
                self.busy_answers.claims -= answering
            if deferring:
                # Only once the Expired status is written (a failed write is retried with backoff
                # instead), and once the deadlines due with it are met: in a storm of leases ending
                # together the deletions would take the API server's time from the Expired writes
                # still due. A new claim on the resource schedules the key at once (its run frees the
                # lock then); a claim of several resources may wait on it unseen here: at once too.
                if self.cache.multis_on(key):
                    self.schedule(key)
                else:
                    self.queue.schedule_after_due(key, latest=decided_at + EXPIRED_LOCK_PATIENCE)
                return
            for multi in self.cache.multis_on(key):
                self.queue.schedule(multi)  # a claim of several resources may move with what changed here
        log.error("reconcile of %s in %s did not settle after %d rounds", resource, namespace, MAX_ROUNDS)
        self.schedule_at(key, self.clock.now() + RETRY_DELAY)

    async def decide_and_apply(self, key: Key, choose: Chooser) -> Choice:
        """One round of `reconcile` whose writes the caller chooses: decide `key` on this reconciler's
        cache as `reconcile` does, and apply only the actions `choose` takes from the decision. For a
        caller whose cache is a small view, sound for some decisions only (`kubelock.operator.early`):
        it alone knows which, and it takes nothing (returns why) where the view may lack what the
        decision rests on. What it takes is applied with the same conditional writes, behind the same
        gate (a grant the gate holds back is not applied: why is returned), and never with a quota's
        reservation (a caller deciding quotas goes through `reconcile`). Returns what was applied
        (its writes may have failed on a stale view: decide again), or why nothing was."""
        namespace, resource = key
        claims, seen = await self._gather(key)
        if seen.lock is not None and seen.lock.breaking is not None:
            return "the lock's grants are being broken"
        lock_policy = self.policies.policy_for(namespace, resource)
        capacity = self.capacity(namespace, resource)
        graph = self.cache.graphs[namespace]
        graph.set_capacity(resource, capacity)
        decision = decide(
            resource, claims, seen.grants, now=self.clock.now(), policy=self.policy, graph=graph,
            capacity=capacity, broken=self.cache.breaks.get(key), finished=self.cache.finished_for(key),
            lock_policy=lock_policy, usage=self._usage(namespace, lock_policy, claims),
        )
        chosen = choose(claims, decision)
        if isinstance(chosen, str):
            return chosen
        if any(action not in decision.actions for action in chosen):
            raise RuntimeError("the actions chosen are not the decision's")
        if _reservations(namespace, lock_policy, chosen):
            return f"LockPolicy {lock_policy.name} counts quotas: the decision reserves under them"
        held_back = self._held_back_grants(key, replace(decision, actions=chosen))
        if held_back:
            return self._why_held_back(key, held_back)
        await self._apply(namespace, chosen, seen)
        return chosen

    def _usage(self, namespace: str, lock_policy: LockPolicy, deciding: Iterable[Claim] = ()) -> Usage:
        """What the policy's quotas count (only a policy with quotas costs a walk of the claims): the
        view, this operator's reservations, and every replica's recorded in the quota ledgers but
        those of the claims being decided (their own state is what the decision sees)."""
        if not lock_policy.quotas.any or not isinstance(self.policies, PolicyIndex):
            return NO_USAGE
        recorded = self.ledgers.reservations(
            namespace, lock_policy, self.clock.now(), exclude=(c.uid for c in deciding)
        )
        return usage(self.cache, self.policies, namespace, lock_policy, self.in_flight, recorded)

    def _without_held_back(
        self, key: Key, decision: Decision, claims: Sequence[Claim], grants: Sequence[Lock], *,
        logged_as: Key | None = None,
    ) -> Decision | None:
        """`decision` without the grants that must wait for a fresh view (`_held_back_grants`: the key
        is remembered and run again once the view is fresh); None when nothing else is left to apply.
        Whatever else was decided does not wait: it is conditional, and a waiter's timeout must not
        wait for anyone's view. The view log gets the decision as taken on `claims` and `grants`
        (under `logged_as`, by default the key), with what is held back and why."""
        held_back = self._held_back_grants(key, decision)
        if viewlog.enabled():
            viewlog.decided(logged_as or key, claims, grants, [a for a in decision.actions if a not in held_back],
                            held_back, self._why_held_back(key, held_back))
        if not held_back:
            return decision
        self._held_back.add(key)
        rest = tuple(a for a in decision.actions if a not in held_back)
        return replace(decision, actions=rest) if rest else None

    def _held_back_grants(self, key: Key, decision: Decision) -> tuple[Action, ...]:
        """The actions of a grant that must wait for a fresh view: a create or an added grant (its
        write cannot be conditional on every claim it rests on: a claim created meanwhile may be
        missing from the view), and telling the claim of a grant made across a stall (its write
        rested on the view from before the stall), with its renewal if any."""
        stalled = self._created_across_stall
        grants = [
            a for a in decision.actions
            if isinstance(a, CreateLock)
            or (isinstance(a, RenewLock) and a.lock.claim_uid in stalled)
            or (_announces(a) and isinstance(a, SetStatus) and a.claim.uid in stalled)
        ]
        claims = [a.claim for a in grants if isinstance(a, CreateLock | SetStatus)]
        if all(self.gate.may_grant(key[0], claim.sequence) for claim in claims):
            for action in grants:
                if _announces(action) and isinstance(action, SetStatus):
                    stalled.discard(action.claim.uid)  # told on a fresh view
            return ()
        return tuple(grants)

    def _why_held_back(self, key: Key, held_back: Sequence[Action]) -> str:
        """Why the gate holds `held_back` (for the view log)."""
        claims = [a.claim for a in held_back if isinstance(a, CreateLock | SetStatus)]
        return "; ".join(f"{c.name}: {self.gate.why_not(key[0], c.sequence)}" for c in claims)

    def _defer_positions(self, key: Key, decision: Decision) -> bool:
        """Put off a decision that only renumbers waiters until the queue has been still for
        POSITION_DELAY, so a run of handoffs writes the positions once, not once per grant."""
        granted = self._granted_at.get(key)
        if granted is None or self.clock.now() - granted >= POSITION_DELAY:
            return False
        if not all(_renumbers(action) for action in decision.actions):
            return False
        self.schedule_at(key, granted + POSITION_DELAY, urgent=False)  # a refresh: not ahead of grants
        if decision.next_deadline is not None:
            self.schedule_at(key, decision.next_deadline)
        return True

    def _forget_key(self, key: Key) -> None:
        """Nothing is left at `key` (no claim, no lock, no finished claim in the API): drop what was
        kept for it, so that a resource locked once and released costs nothing afterwards: its
        pending deadline (a deleted claim's expiry, otherwise kept until it came, up to its TTL), the
        record of how its last lock ended (kept until a new lock came). A claim that comes for the
        key schedules it again."""
        self.queue.forget(key)
        self.cache.breaks.pop(key, None)
        self._granted_at.pop(key, None)
        graph = self.cache.graphs.get(key[0])
        if graph is not None:
            graph.forget(key[1])
            if graph.empty:
                # Nothing waits or is held in the namespace: its graph goes too (a namespace deleted
                # would otherwise keep one for good). Every decision takes the graph after its last
                # await, so none decides on a dropped one.
                del self.cache.graphs[key[0]]

    def _forget_grant(self, key: Key) -> None:
        granted = self._granted_at.get(key)
        if granted is not None and self.clock.now() - granted >= POSITION_DELAY:
            del self._granted_at[key]

    async def _gather(self, key: Key) -> tuple[list[Claim], Seen]:
        """The claims and grants of a key, with pod liveness resolved, and the versions they were
        seen at (the decision's writes are conditional on those). Where the cache cannot be trusted
        to decide a destructive step, the API server is asked first."""
        namespace = key[0]
        records = self.cache.claims_for(key)
        lock = self.cache.locks.get(key)
        holding = {g.claim_uid for g in lock.grants} if lock is not None else set()
        if any(r.claim.phase is Phase.HELD and r.claim.uid not in holding for r in records if r.claim.active):
            # Broken, or the lock's watch event is still on its way.
            lock = await self._confirm_lock(key)
        known = {r.claim.uid for r in records}
        orphans = [
            g for g in (lock.grants if lock is not None else ())
            if g.claim_uid not in known and not self.cache.was_deleted(g.claim_uid)
        ]
        if orphans:
            # Released, or the claims' events are still on their way. Only those grants' claims are
            # taken from the cache again, beside the claims read with the lock (less those gone
            # meanwhile): the reads let watch events in, and a claim that came in or changed meanwhile
            # may be newer than `lock` (told Held of a grant added after the lock was read, it would
            # be taken for broken and revoked). Its event scheduled the key: the next round decides
            # it, on the lock read again if the cache's still lacks the grant.
            await asyncio.gather(*(self._confirm_claim(namespace, g) for g in orphans))
            confirmed = {g.claim_uid for g in orphans}
            current = self.cache.claims
            records = [
                *(r for r in records if r.claim.uid in current),
                *(r for r in self.cache.claims_for(key) if r.claim.uid in confirmed),
            ]
        seen = Seen({r.claim.uid: r for r in records}, lock)
        # Pods the watch has not shown yet are read at once, not one after another: after a stall or
        # a wave of replacement pods a resource can have several, and each read waits on the API server.
        # Claims without a pod need nothing: a round that has nothing to read does not yield to the
        # event loop between a write's response and the next write of a handoff.
        claims = [r.claim for r in records]
        with_pods = [i for i, r in enumerate(records) if r.claim.pod_name is not None and r.claim.active]
        if with_pods:
            resolved = await asyncio.gather(*(self._with_pod(namespace, records[i].claim, records[i].pod_uid)
                                              for i in with_pods))
            for i, claim in zip(with_pods, resolved, strict=True):
                claims[i] = claim
        return claims, seen

    async def _break_of(self, key: Key, claims: list[Claim], grants: tuple[Lock, ...]) -> LockBreak | None:
        """What ended a lock that a claim still believes it holds. A lock deleted without a break
        record may have gone with its namespace: the namespace controller deletes every object in
        it, and that is no administrator's break."""
        broken = self.cache.breaks.get(key)
        if grants or (broken is not None and broken.actor) or not any(c.phase is Phase.HELD for c in claims):
            return broken
        try:
            body = await self.client.get(paths.namespace(key[0]))
        except NotFound:
            deleting = True  # already gone
        else:
            deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
        return replace(broken or LockBreak(), namespace_deleted=True) if deleting else broken

    async def _break_grants(self, key: Key, lock: LockRecord) -> None:
        """An admin broke some grants of the lock (`kubelock.dev/break-claims`): remove them, then let
        the decision revoke their claims as broken by that admin."""
        assert lock.breaking is not None
        uids, broken = lock.breaking
        outcome = await self.grants.break_grants(key[0], lock.grants, uids, lock.version)
        if isinstance(outcome, Stale):
            await self._confirm_lock(key)
            return
        if outcome.body is None:
            self.cache.forget_lock(key, lock.uid)
        else:
            self.cache.upsert_lock(outcome.body)
        self.cache.breaks[key] = broken
        for multi in self.cache.multis_on(key):
            self.queue.schedule(multi)  # a claim of several resources whose grant went here ends whole
        log.info("%s in %s: grants of claims %s broken by %s", key[1], key[0], ", ".join(sorted(uids)), broken.actor)

    async def _confirm_lock(self, key: Key) -> LockRecord | None:
        namespace, resource = key
        body = await self.grants.read(namespace, lock_name(resource))
        if body is None:
            return None
        self.cache.upsert_lock(body)
        return self.cache.locks.get(key)

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
        # A stopping pod's end comes as a watch event (the kubelet's report, the pod's removal); the
        # grace's end is no such event (see `_liveness`), so nothing is scheduled for it.
        return replace(claim, pod=_liveness(info, pod_uid))

    # ---- applying ---------------------------------------------------------------------------

    async def _apply(self, namespace: str, actions: Sequence[Action], seen: Seen) -> None:
        """Apply a decision in order, and stop at the first write that failed on a stale view: the
        rest of the decision rested on it (an Expired status that lost a race with a renewal must
        not be followed by deleting the lock). First answers to new claims rest on nothing else the
        decision writes: they go beside its other writes, neither waiting behind them (a grant, an
        expiry: under load a second or more each) nor dropped when one of them fails."""
        ungranted = {a.lock.claim_uid for a in actions if isinstance(a, DeleteLock)}
        answers = [a for a in first_answers(actions) if a.claim.uid not in ungranted]  # an ending's record goes first
        if answers and len(answers) < len(actions):
            answering = {id(a) for a in answers}
            others = [a for a in actions if id(a) not in answering]
            await asyncio.gather(self._flush(namespace, list(answers), seen), self._apply(namespace, others, seen))
            return
        if _hands_over(actions, seen.grants):
            await self._hand_over(namespace, actions, seen)
            return
        batch: list[Action] = []
        for action in actions:
            if isinstance(action, SetStatus) or (
                _deletes_whatever_the_status_says(action) and not any(isinstance(a, DeleteLock) for a in batch)
            ):
                # One lock write per batch: each is conditional on the lock's version, and two sent
                # together would have the second fail on the version the first wrote.
                batch.append(action)
                continue
            if not await self._flush(namespace, batch, seen):
                return
            batch = []
            if not await self._apply_one(namespace, action, seen):
                return
        await self._flush(namespace, batch, seen)

    async def _flush(self, namespace: str, batch: list[Action], seen: Seen) -> bool:
        # Status writes of different claims are independent: send them together. Each is let finish
        # (its result in the cache) before a failure of another is raised: a lock deleted beside a
        # status write that met trouble is known deleted when the key is retried.
        results = await asyncio.gather(*(self._apply_one(namespace, a, seen) for a in batch), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return all(results)

    async def _apply_one(self, namespace: str, action: Action, seen: Seen) -> bool:
        """Apply one action; False when it failed on a stale view (the caller decides again)."""
        now = self.clock.now()
        stale: Stale | None = None
        try:
            if isinstance(action, SetStatus):
                await self._set_status(namespace, action, now, seen.claims.get(action.claim.uid))
            elif isinstance(action, CreateLock):
                stale = await self._create_lock(namespace, action, seen)
            elif isinstance(action, RenewLock):
                stale = await self._renew_lock(namespace, action, seen)
            elif isinstance(action, DeleteClaim):
                await self._delete_claim(namespace, action)
            else:
                stale = await self._delete_lock(namespace, action, seen)
        except NotFound as error:
            # An unserved path (`Unserved`: an API server restarting, its CRD informer not synced yet)
            # is no NotFound and passes through: nothing is known of the object, and a fresh read
            # would meet the same 404. The work queue retries the key with backoff.
            if isinstance(action, SetStatus) and error.object_name == action.claim.name:
                self._claim_gone(namespace, action)
                return True
            stale = Stale(str(error))
        except Conflict as error:
            stale = Stale(str(error))
        if stale is not None:
            log.debug("stale view of %s in %s (%s): refreshing", _subject(action), namespace, stale.why)
            viewlog.failed(namespace, action, stale.why)
            await self._refresh(namespace, action, seen)
            return False
        self.observer.applied(namespace, action, now)
        return True

    def _claim_gone(self, namespace: str, action: SetStatus) -> None:
        """A status write found its claim deleted: a waiter that gave up, a holder that released. There
        is nobody left to tell, and it is not a stale view of anything else the decision writes: its
        grants are made and removed conditionally on the lock's version, and a claim that is gone is
        released whatever its status was to say. So the rest goes ahead. Taken for a stale view, every
        round that met such a claim ended there and was decided again after a GET of it, putting off
        the lock's deletion or hand-over by two more requests each time: under load, behind a queue of
        waiters giving up one after another, by 5-15 s (docs/reliability.md, "The full run")."""
        viewlog.gone(namespace, action)
        # Its deletion's watch event finds it forgotten and schedules nothing: a grant of it is
        # removed by the next round of this key.
        self.schedule(self.cache.claim_gone(action.claim.uid))

    async def _set_status(self, namespace: str, action: SetStatus, now: float, record: ClaimRecord | None) -> None:
        """Write a claim's status, conditional on the version the decision saw: if the claim changed
        since (a renewal, the other replica's write), the write fails and the key is decided again."""
        if record is None or action.claim.uid not in self.cache.claims:
            return  # deleted or ended meanwhile
        # A first `Held` counts the holder's lease from this write, not from the grant's decision: the
        # lock's write (and, under load, a queue of others) lies between them (`domain.leasestart`).
        # Not capped at what its locks show: a late write still gives the whole lease (`leasestart`).
        status = told_at(action.status, now) if _announces(action) else action.status
        body = await self.client.replace(
            paths.claims(namespace, action.claim.name, status=True), codec.status_update(status, record, now)
        )
        self.cache.upsert_claim(body)
        self.gate.wrote(namespace, codec.revision(body))
        notice = action.notice or Notice(status.reason, status.message)
        _log_decision(namespace, action.claim, status.phase, notice)
        if action.notice is not None:
            self._announce(namespace, action.claim.name, action.claim.uid, action.notice)

    def _announce(self, namespace: str, claim_name: str, claim_uid: str, notice: Notice) -> None:
        """Every Event goes through the recorder, which decides how it is sent."""
        self.events.record(
            namespace, claim_name, claim_uid, notice.reason.value, notice.message, warning=notice.warning
        )

    async def _create_lock(self, namespace: str, action: CreateLock, seen: Seen) -> Stale | None:
        """Make the grant: create the lock, or add the grant to the lock the decision saw. Its fencing
        token is the revision the API server stores that write at (`kubelock.api.fencing`). The claim
        is told on the next round, which reads the lock from the cache: no write of the token in
        between."""
        record = self.cache.claims.get(action.claim.uid)
        if record is None:
            return None
        epoch = self.gate.epoch
        if seen.lock is None:
            outcome: Written | Taken | Stale = await self.grants.create(namespace, action, record)
        else:
            outcome = await self.grants.add(namespace, action, record, seen.grants, seen.lock_version)
        if isinstance(outcome, Stale):
            return outcome
        assert outcome.body is not None
        self.cache.upsert_lock(outcome.body)  # ours, or the one that was there: decide again from it
        if isinstance(outcome, Taken):
            return None
        seen.lock = self.cache.locks.get((namespace, action.target))
        self._granted(namespace, action, epoch)
        return None

    def _granted(self, namespace: str, action: CreateLock, epoch: int) -> None:
        """The grant of `action` is stored; its write began at the gate's `epoch`."""
        self._granted_at[(namespace, action.target)] = self.clock.now()
        if self.gate.epoch != epoch:
            self._created_across_stall.add(action.claim.uid)
            # The loop stalled while the create was under way: the decision rests on a view from
            # before the stall. The claim is told only once a fresh view still shows it (the gate
            # holds the announcement back); a lock for a claim that went meanwhile is deleted.
            log.info(
                "lock %s in %s created across a stall: its claim is told once the view is fresh",
                lock_name(action.target), namespace,
            )

    async def _hand_over(self, namespace: str, actions: Sequence[Action], seen: Seen) -> None:
        """Releases and the grants they let in (`_with_next_grants`): the releases and the first grant
        as one write of the lock, conditional on the version the decision saw like each of the writes
        it replaces (for an exclusive lock: its deletion and the next one's create); each further grant
        is an add of its own, on the version the write before produced (a grant's token is the
        revision of the write that adds it). A stale view fails the write: the lock is read again and
        the release decided anew, so two holders never come of it."""
        released = [a for a in actions if isinstance(a, DeleteLock)]
        first, *rest = [a for a in actions if isinstance(a, CreateLock)]
        record = self.cache.claims.get(first.claim.uid)
        if record is None:
            await self._apply(namespace, released, seen)  # the claim to grant went meanwhile: decide again after
            return
        now = self.clock.now()
        epoch = self.gate.epoch
        outcome = await self.grants.hand_over(
            namespace, {a.lock.claim_uid for a in released}, first, record, seen.grants, seen.lock_version
        )
        if isinstance(outcome, Stale):
            log.debug("stale view of %s in %s (%s): refreshing", _subject(released[0]), namespace, outcome.why)
            await self._refresh(namespace, released[0], seen)
            return
        assert outcome.body is not None
        self.cache.upsert_lock(outcome.body)
        seen.lock = self.cache.locks.get((namespace, first.target))
        for release in released:
            self._created_across_stall.discard(release.lock.claim_uid)
        self._granted(namespace, first, epoch)
        applied: list[Action] = [*released, first]
        for action in applied:
            self.observer.applied(namespace, action, now)
        if rest:
            await self._apply(namespace, rest, seen)

    async def _renew_lock(self, namespace: str, action: RenewLock, seen: Seen) -> Stale | None:
        outcome = await self.grants.renew(namespace, action, seen.lock_version, seen.grants)
        if isinstance(outcome, Stale):
            return outcome
        assert outcome.body is not None
        self.cache.upsert_lock(outcome.body)
        seen.lock = self.cache.locks.get((namespace, action.lock.resource))
        return None

    async def _delete_lock(self, namespace: str, action: DeleteLock, seen: Seen) -> Stale | None:
        """Remove the grant: delete the lock when it is the last, else update the lock without it."""
        key = (namespace, action.lock.resource)
        outcome = await self.grants.remove(namespace, action.lock, seen.grants, seen.lock_version)
        if isinstance(outcome, Stale):
            return outcome
        grant = action.lock
        if action.reason is Reason.RELEASED and not self.cache.was_deleted(grant.claim_uid):
            # No deletion of its claim was seen: the claim went while no replica watched, or the lock
            # was written by hand. Either way someone may be looking for where it went.
            log.info(
                "%s in %s: grant of %s to %s removed: its claim %s (uid %s) does not exist",
                grant.name, namespace, grant.resource, grant.holder, grant.claim_name, grant.claim_uid,
                extra={"namespace": namespace, "resource": grant.resource, "holder": grant.holder,
                       "outcome": "Removed", "reason": "NoClaim"},
            )
        if outcome.body is None:
            self.cache.forget_lock(key, action.lock.uid)
        else:
            self.cache.upsert_lock(outcome.body)
        seen.lock = self.cache.locks.get(key)
        self._created_across_stall.discard(action.lock.claim_uid)
        return None

    def claim_deleted(self, namespace: str, claim: Claim) -> None:
        """A claim was deleted: if it held the lock, that is a release, told on the claim (its Events
        outlive it) and in the log."""
        notice = release_notice(claim, self.clock.now())
        if notice is not None:
            _log_decision(namespace, claim, None, notice)
            self._announce(namespace, claim.name, claim.uid, notice)

    async def _delete_claim(self, namespace: str, action: DeleteClaim) -> None:
        """Remove a finished claim's record (uid precondition: a newer claim of the name survives;
        one already gone or replaced needs nothing more)."""
        claim = action.claim
        try:
            await self.client.delete(paths.claims(namespace, claim.name), uid=claim.uid)
        except Conflict:
            pass
        except NotFound:
            pass  # gone already
        self.cache.forget_finished((namespace, claim.resource), claim.uid)
        log.info(
            "%s/%s removed: finished %s for %s on %s, kept for ttlSecondsAfterFinished",
            namespace, claim.name, claim.phase, claim.holder, claim.resource,
            extra={"namespace": namespace, "claim": claim.name, "resource": claim.resource, "holder": claim.holder,
                   "outcome": "Removed", "reason": claim.reason.value if claim.reason else None},
        )

    async def _refresh(self, namespace: str, action: Action, seen: Seen) -> None:
        if self._watch_moved(namespace, action, seen):
            # The watch has brought the write that made this one fail: the next round decides on it.
            viewlog.moved(namespace, action)
            return
        if isinstance(action, DeleteClaim):
            self.cache.forget_finished((namespace, action.claim.resource), action.claim.uid)
        elif isinstance(action, SetStatus | CreateLock):
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
            if isinstance(action, CreateLock):
                # An added grant met a lock changed since the decision: decide again on it as it is now.
                cached = self.cache.locks.get((namespace, action.target))
                if cached is not None:
                    await self._reread_lock((namespace, action.target), cached.grants[0].name, cached.uid)
        else:
            await self._reread_lock((namespace, action.lock.resource), action.lock.name, action.lock.uid)

    def _watch_moved(self, namespace: str, action: Action, seen: Seen) -> bool:
        """Whether the cache already holds a later version of what the failed `action` rested on
        (`kubelock.operator.moved`): then a GET would add nothing the next decision needs."""
        if isinstance(action, SetStatus):
            return claim_moved(seen.claims.get(action.claim.uid), self.cache.claims.get(action.claim.uid))
        if isinstance(action, DeleteClaim):
            return False
        target = action.target if isinstance(action, CreateLock) else action.lock.resource
        return lock_moved(seen.lock, self.cache.locks.get((namespace, target)))

    async def _reread_lock(self, key: Key, name: str, uid: str) -> None:
        """The lock as the API server has it now, in place of the one of `uid` the cache had."""
        current = await self.grants.read(key[0], name)
        if current is None:
            self.cache.forget_lock(key, uid)
            return
        if (current.get("metadata") or {}).get("uid") != uid:
            self.cache.forget_lock(key, uid)  # replaced: that lock is gone
        self.cache.upsert_lock(current)


def _reservations(namespace: str, policy: LockPolicy, actions: Iterable[Action]) -> list[quotas.Reservation]:
    """What a decision's writes will add to its policy's quota usage: its grants, and the first
    Pending answers of new waiters."""
    if not policy.quotas.any:
        return []
    out = []
    for action in actions:
        if isinstance(action, CreateLock):
            count = quotas.Count.HELD
        elif isinstance(action, SetStatus) and action.status.phase is Phase.PENDING and action.claim.status is None:
            count = quotas.Count.WAITING
        else:
            continue
        claim = action.claim
        out.append(quotas.Reservation(namespace, policy.name, claim.holder, claim.uid, count))
    return out


def _liveness(info: PodInfo, expected_uid: str | None) -> PodLiveness:
    if expected_uid and info.uid != expected_uid:
        return PodLiveness.TERMINATED
    if info.terminated:
        return PodLiveness.TERMINATED
    if info.deleting:
        # Deleted: SIGTERM went to its containers, which may still be finishing under the lock. The
        # lock goes when they have stopped (the kubelet reports it, the pod is removed), not when the
        # deletion was asked for, nor when its grace is over: a kubelet that is alive kills the
        # containers then and reports it at once, and one that is not (its node lost, unreachable)
        # leaves them as they were: seen on the test-bed node, a holder whose kubelet had stopped
        # went on running and renewing past its grace. Its lease decides then (the SDK renews it
        # from inside the container): a holder gone with its node stops renewing and expires.
        return PodLiveness.STOPPING
    return PodLiveness.ALIVE if info.watched else PodLiveness.UNWATCHED


# Endings after which the lock goes whatever the holder's status write meets: its pod or namespace is
# gone or going (a terminating pod or namespace never comes back; a pod missing from the cache is read
# from the API server first), so a renewal racing the status cannot save the lease.
# Deleting the lock together with that write, not after it, frees the resource one write sooner.
# (An expiry is different: a renewal that wins the race keeps the lock.)
_UNCONDITIONAL_ENDINGS = frozenset(
    {Reason.HOLDER_POD_TERMINATED, Reason.POD_NOT_FOUND, Reason.NAMESPACE_DELETED}
)


def _with_next_grants(
    decision: Decision, grants: tuple[Lock, ...], decide_on: Callable[[tuple[Lock, ...]], Decision]
) -> Decision:
    """A decision that only removes released grants from the lock (an exclusive lock given back, a
    semaphore permit, a Shared grant), followed by the grants that lets in, decided on the grants
    left (none: the resource free) with everything else as it was: the two are stored as one write of
    the lock (`_hand_over`), so the next waiter's grant does not wait for a round trip of its own, nor
    the lock for a deletion and a create. New claims the releases' step answers stay beside them. When
    what follows the release is anything but new grants (nobody waits: the release deletes the lock),
    it is decided on the next round, as ever."""
    answers = first_answers(decision.actions)  # new claims answered beside the releases: they stay
    actions = [a for a in decision.actions if a not in answers]
    if not actions or not all(isinstance(a, DeleteLock) and a.reason is Reason.RELEASED for a in actions):
        return decision
    left = tuple(codec.without(grants, {a.lock.claim_uid for a in actions if isinstance(a, DeleteLock)}))
    after = decide_on(left)
    creates = [a for a in after.actions if isinstance(a, CreateLock)]
    if not creates or any(a.resource for a in creates) or len(creates) + len(first_answers(after.actions)) != len(
        after.actions
    ):
        return decision
    # The releases' step answered the claims the grants leave waiting already, as `after` would: its
    # own answers are the same ones. They go beside the hand-over (`_apply`).
    return replace(
        decision, actions=(*actions, *creates, *answers), also_reconcile=decision.also_reconcile | after.also_reconcile
    )


def _answered(action: Action, uids: set[str]) -> bool:
    """`action` is the first answer of one of the claims `uids` (being written beside the run)."""
    return isinstance(action, SetStatus) and action.claim.status is None and action.claim.uid in uids


def _hands_over(actions: Sequence[Action], grants: Sequence[Lock]) -> bool:
    """`actions` are releases of grants of the lock and the grants they let in (one write)."""
    released = [a for a in actions if isinstance(a, DeleteLock)]
    granted = [a for a in actions if isinstance(a, CreateLock)]
    if not released or not granted or len(released) + len(granted) != len(actions):
        return False
    return len(codec.without(grants, {a.lock.claim_uid for a in released})) < len(grants)


def _announces(action: Action) -> bool:
    """Tells a claim of its grant: `Held` for a claim not Held yet."""
    return isinstance(action, SetStatus) and action.status.phase is Phase.HELD and action.claim.phase is not Phase.HELD


def _deletes_whatever_the_status_says(action: Action) -> bool:
    """A lock write that no status write of its decision can make wrong: it goes beside them.

    A released grant too: its claim is deleted (seen deleted, or read from the API server as gone:
    `_gather`), so nothing is written to it, and whatever the other claims' writes meet, the grant
    goes. Sent after them, it waited for the slowest of them: in a loaded chaos run a released lock
    waited 4 s behind the `TimedOut` status of a waiter that had given up, and was deleted 10 s after
    its release (docs/reliability.md, 2026-11-29)."""
    if not isinstance(action, DeleteLock):
        return False
    return action.reason in _UNCONDITIONAL_ENDINGS or action.reason is Reason.RELEASED


def _deferrable_cleanup(claims: Iterable[Claim], decision: Decision) -> tuple[Action, ...]:
    """The deletions of expired grants that may wait until after their claims are told: those of a
    resource nobody waits for. An expiry costs two writes in sequence, the claim's `Expired` status
    (what its holder sees, and what a renewal can still beat) and the lock's deletion (what frees the
    resource for the next grant). When nobody waits, a later deletion makes nobody late, so when many
    leases end at once every `Expired` goes out at its deadline (urgent) and the deletions follow in
    line with ordinary work: one write per expiry on the deadline path, not two."""
    deletes = tuple(a for a in decision.actions if isinstance(a, DeleteLock) and a.reason is Reason.LEASE_EXPIRED)
    if not deletes or any(isinstance(a, CreateLock) for a in decision.actions):
        return ()
    ending = {a.lock.claim_uid for a in deletes}
    if any(c.active and c.uid not in ending and c.phase is not Phase.HELD for c in claims):
        return ()  # someone waits (or has no answer yet): free the resource at once
    return deletes


def _renumbers(action: Action) -> bool:
    """A waiter's status moves from one Pending to another (a new position, a new holder)."""
    if not isinstance(action, SetStatus) or action.status.phase is not Phase.PENDING:
        return False
    return action.claim.status is not None and action.claim.status.phase is Phase.PENDING


def _log_decision(namespace: str, claim: Claim, phase: Phase | None, notice: Notice) -> None:
    """One line per decision: what became of which claim, and why (with the notice's details, such
    as who broke a lock). A claim of several resources names each of them (up to a bound): the
    decision concerns them all."""
    outcome = phase.value if phase is not None else notice.reason.value
    named = named_resources(claim.every_resource)
    several = {"resources": list(named), "resourceCount": len(claim.every_resource)} if claim.multi else {}
    log.log(
        logging.WARNING if notice.warning else logging.INFO,
        "%s/%s %s for %s: %s (%s): %s",
        namespace, claim.name, outcome, claim.holder, ", ".join(named) if claim.multi else claim.resource,
        notice.reason.value, notice.message,
        extra={
            "namespace": namespace,
            "claim": claim.name,
            "resource": claim.resource,
            **several,
            "holder": claim.holder,
            "outcome": outcome,
            "reason": notice.reason.value,
            **dict(notice.details),
        },
    )


def _subject(action: Action) -> str:
    if isinstance(action, SetStatus | CreateLock | DeleteClaim):
        return f"claim {action.claim.name}"
    return f"lock {action.lock.name}"
