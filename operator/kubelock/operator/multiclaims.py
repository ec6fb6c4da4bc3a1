"""One idempotent reconcile per claim of several resources: gather its resources → decide → apply.

A claim of several resources (`spec.resources`) spans several resource keys, so it is decided under a
key of its own (`cache.multi_key`), by `kubelock.domain.multiclaim.decide_claim`, beside the
per-resource reconciles: those keep it in their queues (it stands ahead of later requests that do not
fit beside it) and remove its grants once it is gone, but never grant it. Its grants are written one
resource at a time, in sorted order, through the same grant store as any grant, so the API server
arbitrates each one.

What makes a second replica (or a stale view) harmless:
- each grant write is conditional (a create, or an update on the version seen): a write that meets a
  change fails, and the claim is decided again on the fresh state;
- the claim is told Held only on a fresh read of every one of its locks, taken after the version of
  the claim the status write is conditional on; and grants are given back only right after a write of
  the claim (`GivingBack`, conditional on its version). So a Held write and a give-back never
  interleave: whichever writes the claim second fails and decides again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kubelock.domain import quotas
from kubelock.domain.lockpolicy import LockPolicy
from kubelock.domain.model import Action, Claim, CreateLock, Decision, DeleteLock, RenewLock, SetStatus
from kubelock.domain.multiclaim import ResourceView, decide_claim
from kubelock.domain.reasons import Phase
from kubelock.kube.codec import ClaimRecord
from kubelock.operator import reconciler as _reconciler
from kubelock.operator.cache import Key, LockRecord, multi_claim_uid
from kubelock.operator.workqueue import RETRY_DELAY

if TYPE_CHECKING:
    from kubelock.operator.reconciler import Reconciler, Seen

log = logging.getLogger("kubelock.reconciler")


class MultiClaims:
    """The reconcile of claims of several resources, on the reconciler's cache, writes and queue."""

    def __init__(self, owner: Reconciler) -> None:
        self.owner = owner
        # The resources each claim last asked to wake (a deadlock's victim is ended by its own
        # decision): asked again only when that changes, so two decisions that each name the other's
        # resource do not wake each other for ever.
        self._woke: dict[str, frozenset[str]] = {}

    async def reconcile(self, key: Key) -> None:
        owner, cache = self.owner, self.owner.cache
        namespace, uid = key[0], multi_claim_uid(key)
        assert uid is not None
        for _ in range(_reconciler.MAX_ROUNDS):
            # Every round yields to the loop: a round that needs no request must not starve the rest.
            await asyncio.sleep(0)
            record = cache.claims.get(uid)
            if record is None:
                # Released or ended: its resources' reconciles remove its grants and move their queues,
                # and the claims of several resources queued behind it there may go ahead. Its own
                # deadline (its lease's end, its wait's) is dropped with it: a flood of such claims
                # deleted would otherwise stay in the queue until each one's deadline came.
                self._woke.pop(uid, None)
                owner.queue.forget(key)
                self._moved(key, cache.resource_keys_of(uid))
                return
            claim = await owner._with_pod(namespace, record.claim, record.pod_uid)
            views, seens = await self._gather(namespace, claim, record)
            graph = cache.graphs[namespace]
            # From here to the reservation below, no await: the usage counted is the usage reserved on.
            policies = _lock_policies(claim, views)
            usage = {p.name: owner._usage(namespace, p, (claim,)) for p in policies}
            decision = decide_claim(claim, views, now=owner.clock.now(), policy=owner.policy, graph=graph, usage=usage)
            self._wake(key, uid, decision)
            logged_as = (namespace, ",".join(claim.every_resource))
            kept = owner._without_held_back(key, decision, [claim], [], logged_as=logged_as)
            if kept is None:
                return
            decision = kept
            if not decision.actions:
                if decision.next_deadline is not None:
                    owner.schedule_at(key, decision.next_deadline)
                return
            # Under every policy of its resources, as the decision counted it (see `Reconciler.reconcile`).
            reservations = {p: _reconciler._reservations(namespace, p, decision.actions) for p in policies}
            reserved = owner.in_flight.reserve(r for each in reservations.values() for r in each)
            try:
                # Recorded in each policy's quota ledger before any write (see `Reconciler.reconcile`).
                if not await self._record(reservations):
                    continue
                await self._apply(namespace, claim, decision.actions, seens)
            finally:
                owner.in_flight.release(reserved)
            self._moved(key, [(namespace, r) for r in claim.every_resource])
        log.error("reconcile of claim %s in %s did not settle after %d rounds", uid, namespace, _reconciler.MAX_ROUNDS)
        owner.schedule_at(key, owner.clock.now() + RETRY_DELAY)

    async def _record(self, reservations: dict[LockPolicy, list[quotas.Reservation]]) -> bool:
        """Record the reservations in the quota ledgers of their policies; False when one met another
        replica's write (decide again, counting it)."""
        ledgers, now = self.owner.ledgers, self.owner.clock.now()
        for policy, wanted in reservations.items():
            if wanted and not await ledgers.record(policy, wanted, now):
                return False
        return True

    def _wake(self, key: Key, uid: str, decision: Decision) -> None:
        """Wake the resources of a deadlock's victim (and the claims of several resources on them,
        but this one), when the claim asks for new ones or its decision wrote something."""
        wake = decision.also_reconcile
        if not wake or (not decision.actions and self._woke.get(uid) == wake):
            self._woke[uid] = wake
            return
        self._woke[uid] = wake
        self._moved(key, [(key[0], r) for r in sorted(wake)])

    def _moved(self, key: Key, resource_keys: Iterable[Key]) -> None:
        """Decide again the resources a claim of several resources wrote or ended on, and the other
        claims of several resources that name them: its grants given back, its end or its new place in
        a queue may let them go ahead. Nothing else would wake them: the events of the operator's own
        writes are no news to its cache (the responses were taken in first), and a resource's
        reconcile wakes them only when it writes itself."""
        owner = self.owner
        for resource_key in resource_keys:
            owner.queue.schedule(resource_key)
            for other in owner.cache.multis_on(resource_key):
                if other != key:
                    owner.queue.schedule(other)

    async def _gather(
        self, namespace: str, claim: Claim, record: ClaimRecord
    ) -> tuple[dict[str, ResourceView], dict[str, Seen]]:
        """Each resource of the claim as its decision sees it, with the version of its lock the
        writes rest on. Locks are read from the API server where the cache cannot be trusted: a grant
        of a Held claim missing (broken, or its event still on its way), and every lock before the
        claim is told Held (see the module's docstring).

        The reads (the pod in `reconcile`, the locks read back here, a namespace in `_break_of`) let
        watch events in, so the view is of mixed age: the claim (`record`) is taken first, each lock
        after it, each resource's other claims last. `Reconciler._gather` once revoked a claim Held of
        a grant newer than the lock it was decided with (a false LockBroken). No mix here leads to a
        wrong write (tests/unit/test_multiclaims_gather.py pins both directions):
        - Other claims newer than a lock: the decision writes only this claim and its own grants; the
          others only order the queue (`_blocked`, `_requeued`). One granted after the lock was read
          shows there as a request ahead, not holding: it only holds this claim back, or the add
          beside it fails on the lock's version. Whether it lost its grant is its resource's decision.
        - This claim older than its locks: every write of it is conditional on `record`'s version, and
          whatever changes its grants behind its back writes the claim first (an end, a give-back) or
          deletes it (then `_set_status` and `_create_lock` skip it, or the write meets a 404). So a
          Held write on locks read after a give-back began fails, and a LockBroken on a grant removed
          by its end does too. A Held claim's missing grant, and every grant before it is told Held,
          are read from the API server after `record` was taken: a lock the cache has not caught up
          with is never taken for broken, nor for complete. A grant (a create, an add) cannot be
          conditional on the claim; one made for a claim that ended meanwhile is removed by its
          resource's decision like the grant of any released claim ("A fresh view").
        - A waiter is not lost: an event that arrives during the reads schedules the key again (the
          resource's claims of several resources with it), and the work queue runs a key scheduled
          while it runs once more."""
        owner, cache = self.owner, self.owner.cache
        keys = [(namespace, r) for r in claim.every_resource]
        cached = {k: cache.locks.get(k) for k in keys}

        def has_grant(lock: LockRecord | None) -> bool:
            return lock is not None and any(g.claim_uid == claim.uid for g in lock.grants)

        if claim.phase is Phase.HELD:
            confirm = [k for k in keys if not has_grant(cached[k])]
        else:
            confirm = keys if all(has_grant(cached[k]) for k in keys) else []
        if confirm:
            fresh = await asyncio.gather(*(owner._confirm_lock(k) for k in confirm))
            cached.update(zip(confirm, fresh, strict=True))
        views: dict[str, ResourceView] = {}
        seens: dict[str, Seen] = {}
        for key in keys:
            resource, lock = key[1], cached[key]
            grants = lock.grants if lock is not None else ()
            capacity = owner.capacity(namespace, resource)
            cache.graphs[namespace].set_capacity(resource, capacity)
            views[resource] = ResourceView(
                resource=resource,
                claims=tuple(r.claim for r in cache.claims_for(key)),
                grants=grants,
                capacity=capacity,
                broken=await owner._break_of(key, [claim], grants),
                finished=tuple(cache.finished_for(key)),
                lock_policy=owner.policies.policy_for(namespace, resource),
            )
            seens[resource] = _reconciler.Seen({claim.uid: record}, lock)
        return views, seens

    async def _apply(self, namespace: str, claim: Claim, actions: tuple[Action, ...], seens: dict[str, Seen]) -> None:
        """Apply in order, each write on the version of its resource's lock the decision saw; stop at
        the first that fails (the claim is decided again on what the failure refreshed)."""
        for action in actions:
            if isinstance(action, SetStatus):
                resource = claim.every_resource[0]
            elif isinstance(action, CreateLock):
                resource = action.target
            elif isinstance(action, RenewLock | DeleteLock):
                resource = action.lock.resource
            else:
                raise TypeError(f"a claim of several resources does not decide {action!r}")
            if not await self.owner._apply_one(namespace, action, seens[resource]):
                return


def _lock_policies(claim: Claim, views: dict[str, ResourceView]) -> list[LockPolicy]:
    """The LockPolicies of the claim's resources that set quotas, each once."""
    return [p for p in dict.fromkeys(views[r].lock_policy for r in claim.every_resource) if p.quotas.any]
