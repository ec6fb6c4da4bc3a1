"""The operator's memory: slim records of claims, locks and holder pods, indexed by resource key,
and the wait-for graph of each namespace.

It is only a cache. Everything in it comes from watch events, list results and the responses to the
operator's own writes, and it can be rebuilt from the API at any time; the API server arbitrates
every grant.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from sys import intern
from typing import Any

from kubelock.api.constants import (
    BREAK_ACTOR_ANNOTATION,
    BREAK_CLAIMS_ANNOTATION,
    BREAK_REASON_ANNOTATION,
    POD_LABEL,
    POD_LABEL_VALUE,
)
from kubelock.api.objects import revision_of
from kubelock.domain.arbiter import finished_record, queue_place
from kubelock.domain.grants import Need
from kubelock.domain.model import Claim, ClaimStatus, FinishedClaim, Lock, LockBreak
from kubelock.domain.quotas import Count
from kubelock.domain.reasons import Phase
from kubelock.domain.resource import normalise
from kubelock.domain.waitfor import WaitForGraph
from kubelock.kube.codec import ClaimRecord, claim_record, lock_views

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, normalised resource), or a claim of several resources (`multi_key`)
TOMBSTONES = 10_000  # uids of claims and locks seen deleted (see Cache._bury)
PodKey = tuple[str, str]  # (namespace, pod name)


# A claim of several resources is decided as a whole, under a key of its own: (namespace, this + uid).
# Resource URIs contain no whitespace, so no resource key can take this form.
MULTI_KEY_PREFIX = "claim of several resources "


def multi_key(namespace: str, uid: str) -> Key:
    return (namespace, MULTI_KEY_PREFIX + uid)


def multi_claim_uid(key: Key) -> str | None:
    """The uid of the claim of several resources a key stands for (None: a resource key)."""
    return key[1][len(MULTI_KEY_PREFIX):] if key[1].startswith(MULTI_KEY_PREFIX) else None


def key_of(record: ClaimRecord) -> Key:
    """The key a claim is decided under: its resource's, or its own for a claim of several."""
    claim = record.claim
    return multi_key(record.namespace, claim.uid) if claim.multi else (record.namespace, claim.resource)


@dataclass(frozen=True, slots=True)
class LockRecord:
    """A resource's ResourceLock as last seen: its grants (the first grant first) and the
    resourceVersion they were read at (writes of the lock are conditional on it)."""

    grants: tuple[Lock, ...]
    version: str
    # An admin's break of some of the grants (`kubelock.dev/break-claims`): their claims' uids, and who
    # broke them and why.
    breaking: tuple[frozenset[str], LockBreak] | None = None

    @property
    def uid(self) -> str:
        return self.grants[0].uid


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    terminated: bool  # Succeeded or Failed: its containers have stopped
    watched: bool  # carries the label the operator's pod watch selects
    # A pod being deleted (it has a deletionTimestamp): its containers had SIGTERM and may still be
    # running, until the kubelet reports them stopped or the pod is removed.
    deleting: bool = False


def pod_info(body: Body) -> PodInfo:
    meta = body.get("metadata") or {}
    phase = (body.get("status") or {}).get("phase")
    return PodInfo(
        uid=str(meta.get("uid", "")),
        terminated=phase in ("Succeeded", "Failed"),
        watched=(meta.get("labels") or {}).get(POD_LABEL) == POD_LABEL_VALUE,
        deleting=bool(meta.get("deletionTimestamp")),
    )


class Cache:
    def __init__(self) -> None:
        self.claims: dict[str, ClaimRecord] = {}
        # The uids of each key's claims: a tuple, not a set: nearly every key has one claim, and there
        # is a key per held lock (a set of one takes four times a tuple's memory).
        self._by_key: dict[Key, tuple[str, ...]] = {}
        self.locks: dict[Key, LockRecord] = {}
        self.pods: dict[PodKey, PodInfo] = {}
        self._pod_claims: dict[PodKey, set[str]] = defaultdict(set)
        self.graphs: dict[str, WaitForGraph] = defaultdict(WaitForGraph)
        # Uids of deleted claims and locks, and of terminal claims. A release then needs no confirming
        # read, and an event or a write's response that arrives after the deletion (or the end)
        # cannot bring the object back to life.
        self._deleted: OrderedDict[str, None] = OrderedDict()
        # Uids of claims that ended refused (`Rejected`). Another replica may have reserved such a
        # claim in a quota ledger and still be writing its grant (a lock create cannot be conditional
        # on the claim's status), so its reservation keeps counting (`reservation_ended`).
        self._refused: OrderedDict[str, None] = OrderedDict()
        self.breaks: dict[Key, LockBreak] = {}  # what a deleted lock said about who broke it
        # Terminal claims, by resource key: only what their removal after ttlSecondsAfterFinished
        # needs. They take no part in arbitration and their bodies stay in the API, not here.
        self._finished: dict[Key, dict[str, FinishedClaim]] = defaultdict(dict)
        self._finished_multi: dict[str, tuple[Key, ...]] = {}  # the keys of such a claim of several resources
        # Per scope of the claim watches (a namespace, or None for all): the resourceVersion up to
        # which every claim created has been seen. First come, first served rests on it.
        self._horizons: dict[str | None, int] = {}
        # Claims of several resources: the uids on each resource key, and the resource keys of each
        # (kept after the claim is gone until its key is reconciled: its resources need a look).
        self._multis: dict[Key, set[str]] = defaultdict(set)
        self._multi_keys: dict[str, tuple[Key, ...]] = {}

    # ---- claims -----------------------------------------------------------------------------

    def claim_event(self, body: Body) -> Key | None:
        """A watch event about a claim (not a LIST item, not a write's response).

        An event about a claim the cache does not know, at a version the cache is complete up to, is
        old news of a claim deleted since: a LIST taken after it (after a stall, say) did not have
        it, while the watch was still delivering what it had queued."""
        meta = body.get("metadata") or {}
        if (
            not meta.get("deletionTimestamp")
            and str(meta.get("uid", "")) not in self.claims
            and revision_of(str(meta.get("resourceVersion", ""))) <= self.complete_at(str(meta.get("namespace", "")))
        ):
            return None
        return self.upsert_claim(body)

    def upsert_claim(self, body: Body) -> Key | None:
        """Remember a claim; the key to reconcile, or None when nothing changed."""
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return self.delete_claim(body)
        record = self._claim_record(body)
        if record.claim.uid in self._deleted:
            return None  # late news of a claim already deleted
        old = self.claims.get(record.claim.uid)
        if old is not None:
            if revision_of(old.resource_version) >= revision_of(record.resource_version):
                return None  # an older version than the one already known (e.g. our own write's response)
            if record.claim.status is None:
                # Queue order is fixed when the operator first sees a claim, not when it next changes.
                record = replace(record, claim=replace(record.claim, sequence=old.claim.sequence))
            self._unindex(old)
        if record.claim.multi:
            self._multi_keys[record.claim.uid] = tuple((record.namespace, r) for r in record.claim.every_resource)
        if not record.claim.active:
            # A terminal claim takes no further part in arbitration; its record stays in the API for
            # its holder to read (and delete), not in the operator's memory.
            self._bury(record.claim.uid)
            if record.claim.status is not None:
                self._finish(record.namespace, record.claim, record.claim.status)
                if record.claim.status.phase is Phase.REJECTED:
                    _remember(self._refused, record.claim.uid)
        else:
            self._index(record)
        return key_of(record)

    # A held lock's claim and its grant name the same claim (name, uid) and lock (name): the records
    # keep one string of each between them instead of a copy each (about 220 B a held lock; the
    # decoder makes a new string of every value of every event).

    def _claim_record(self, body: Body) -> ClaimRecord:
        """The claim's record, sharing the strings kept already (`codec.claim_record`'s `shared`)."""
        old = self.claims.get(str((body.get("metadata") or {}).get("uid", "")))
        if old is not None:
            return claim_record(body, self._strings_of_claim(old.claim.uid, key_of(old), old))
        record = claim_record(body)
        # A new claim has no lock yet, except when a restart's LIST of locks came first: parsed again.
        shared = self._strings_of_claim(record.claim.uid, key_of(record), None)
        return claim_record(body, shared) if shared else record

    def _strings_of_claim(self, uid: str, key: Key, old: ClaimRecord | None) -> dict[str, str]:
        """The strings of a claim's previous record and of its grant in its lock."""
        shared: dict[str, str] = {}
        if old is not None:
            _keep_claim(shared, old)
        lock = self.locks.get(key)
        for grant in lock.grants if lock is not None else ():
            if grant.claim_uid == uid:
                _keep(shared, grant.name, grant.claim_name, grant.claim_uid)
        return shared

    def _strings_of_lock(self, body: Body) -> dict[str, str]:
        """The strings kept already that a new record of this lock can share (`lock_views`)."""
        spec = body.get("spec") or {}
        grants = spec.get("grants")
        refs = [spec.get("claimRef"), *(g.get("claimRef") for g in grants if isinstance(g, dict))] if isinstance(
            grants, list
        ) else [spec.get("claimRef")]
        shared: dict[str, str] = {}
        for ref in refs:
            record = self.claims.get(str(ref.get("uid", ""))) if isinstance(ref, dict) else None
            if record is not None:
                _keep_claim(shared, record)
        return shared

    def delete_claim(self, body: Body) -> Key | None:
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        finished: tuple[Key, ...] = ()
        if uid:
            self._bury(uid)
            finished = self._unfinish(uid, meta.get("namespace"), _first_resource(body.get("spec") or {}))
        old = self.claims.get(uid) if uid else None
        if old is None:
            # A terminal claim (Rejected, Expired, ...) deleted: its key is decided again, which forgets
            # what was kept for it once nothing is left there (its removal deadline, its capacity)
            # instead of keeping that until the deadline comes. A claim of several resources kept under
            # each of them (its lock-delay) ends the rest of every one: its own key is scheduled, whose
            # reconcile, the claim being gone, decides again each of `_multi_keys` (`resource_keys_of`).
            if uid and len(finished) > 1:
                self._multi_keys[uid] = finished
                return multi_key(finished[0][0], uid)
            return finished[0] if finished else None
        self._unindex(old)
        return key_of(old)

    def _finish(self, namespace: str, claim: Claim, status: ClaimStatus) -> None:
        """Remember a terminal claim under its resource; a claim of several resources whose end left a
        lock-delay, under each of its resources (each of them rests)."""
        record = finished_record(claim, status)
        resources = claim.every_resource if claim.multi and status.available_at is not None else (claim.resource,)
        for resource in resources:
            self._finished[(namespace, resource)][claim.uid] = record
        if len(resources) > 1:
            self._finished_multi[claim.uid] = tuple((namespace, r) for r in resources)

    def finished_for(self, key: Key) -> list[FinishedClaim]:
        """The terminal claims of a key still in the API, as far as the operator knows (with the
        claims of several resources that name it and left a lock-delay)."""
        return list(self._finished.get(key, {}).values())

    def forget_finished(self, key: Key, uid: str) -> None:
        """Forget a terminal claim (removed from the API) under `key`, and under every other resource
        it was remembered under."""
        for each in self._finished_multi.pop(uid, (key,)):
            records = self._finished.get(each)
            if records is not None:
                records.pop(uid, None)
                if not records:
                    del self._finished[each]

    def _unfinish(self, uid: str, namespace: object, resource: object) -> tuple[Key, ...]:
        """Forget a terminal claim deleted from the API; every key it was remembered under."""
        keys = self._finished_multi.get(uid)
        if keys is not None:
            self.forget_finished(keys[0], uid)
            return keys
        if isinstance(namespace, str) and isinstance(resource, str):
            key = (namespace, normalise(resource))
            known = uid in self._finished.get(key, {})
            self.forget_finished(key, uid)
            return (key,) if known else ()
        found = [k for k, records in self._finished.items() if uid in records]
        for key in found:
            self.forget_finished(key, uid)
        return tuple(found)

    def was_deleted(self, uid: str) -> bool:
        return uid in self._deleted

    def was_refused(self, uid: str) -> bool:
        """The claim ended `Rejected` (whether or not it was deleted since), as far as the last
        TOMBSTONES refusals go. By uid: a claim of several resources is refused on all of them."""
        return uid in self._refused

    def reservation_ended(self, uid: str, count: Count) -> bool:
        """Whether a quota-ledger reservation of this claim, counting as `count`, stops counting before
        its bound: the claim was deleted or ended, but a held reservation not if the claim was refused.
        Another replica whose view still has a refused claim waiting may have reserved it as held and
        be creating its lock (a create cannot be conditional on the claim's status), until the bound.

        Not sooner, neither when no lock of it is seen (the reserving replica creates the lock after
        its ledger write, at any time until the bound) nor when its lock is seen deleted (one live
        entry covers every grant of the claim: the reserving replica does not write it again to
        create another lock under it, for another resource of a claim of several or on deciding the
        claim again). A waiting reservation only precedes a Pending status write, which is
        conditional on the claim's version and so fails on a refused claim: it ends with the claim.
        docs/architecture.md, "Quotas", gives the whole argument."""
        if uid not in self._deleted:
            return False
        return count is Count.WAITING or uid not in self._refused

    def _bury(self, uid: str) -> None:
        _remember(self._deleted, uid)

    def claim_gone(self, uid: str) -> Key | None:
        """The API server has no claim of this one's name any more (a write to it found it gone, before
        its deletion's watch event came): forget it, and take later news of it for old news, as after
        that event. The key it was decided under, which its deletion's event will not schedule now."""
        self._bury(uid)
        return self.forget_claim(uid)

    def forget_claim(self, uid: str) -> Key | None:
        old = self.claims.get(uid)
        if old is None:
            return None
        self._unindex(old)
        return key_of(old)

    def multis_on(self, key: Key) -> list[Key]:
        """The keys of the claims of several resources that name the resource of `key`."""
        return [multi_key(key[0], uid) for uid in sorted(self._multis.get(key, ()))]

    def resource_keys_of(self, uid: str) -> tuple[Key, ...]:
        """The resource keys of a claim of several resources, also once it is gone (then forgotten)."""
        record = self.claims.get(uid)
        if record is not None:
            return tuple((record.namespace, r) for r in record.claim.every_resource)
        return self._multi_keys.pop(uid, ())

    def _index(self, record: ClaimRecord) -> None:
        claim = record.claim
        self.claims[claim.uid] = record
        for resource in claim.every_resource:
            _append(self._by_key, (record.namespace, resource), claim.uid)
            if claim.multi:
                self._multis[(record.namespace, resource)].add(claim.uid)
            if claim.waiting:
                self.graphs[record.namespace].add_wait(
                    claim.holder, resource, claim.sequence, claim.need, queue_place(claim), reserves=claim.multi
                )
        if claim.pod_name:
            self._pod_claims[(record.namespace, claim.pod_name)].add(claim.uid)
        if claim.multi:
            self._regraph(record)

    def _unindex(self, record: ClaimRecord) -> None:
        claim = record.claim
        self.claims.pop(claim.uid, None)
        for resource in claim.every_resource:
            key = (record.namespace, resource)
            _remove(self._by_key, key, claim.uid)
            _discard(self._multis, key, claim.uid)
            if claim.waiting:
                self.graphs[record.namespace].remove_wait(claim.holder, resource, claim.sequence)
        if claim.pod_name:
            pod_key = (record.namespace, claim.pod_name)
            users = self._pod_claims.get(pod_key)
            if users is not None:
                users.discard(claim.uid)
                if not users:
                    del self._pod_claims[pod_key]
        if claim.multi or claim.uid in self._deleted:
            self._regraph(record)

    def _regraph(self, record: ClaimRecord) -> None:
        """The wait-for graph's grants of the claim's resources, again: a claim of several resources'
        grants count there only once it is Held, a deleted claim's not at all (see `_graph_grants`)."""
        for resource in record.claim.every_resource:
            lock = self.locks.get((record.namespace, resource))
            if lock is not None:
                self.graphs[record.namespace].set_grants(resource, self._graph_grants(lock.grants))

    def _graph_grants(self, grants: tuple[Lock, ...]) -> tuple[tuple[str, Need], ...]:
        """The grants that are edges of the wait-for graph: not those of a claim of several resources
        that is not Held yet. Those are the writes of a grant under way, or given back soon: the claim
        waits holding nothing (`multiclaim`), and an edge to it could name a deadlock that is none.
        Nor those of a deleted claim: that grant is released, and goes whatever its holder does (its
        holder, often waiting already for its next resource, is waited for by nobody). Counted until
        the lock's write is seen, such a grant closed cycles that were none under churn, a waiter told
        `Deadlocked` while every hold in its cycle was being given back."""
        out = []
        for grant in grants:
            if grant.claim_uid in self._deleted:
                continue
            record = self.claims.get(grant.claim_uid)
            if record is not None and record.claim.multi and record.claim.phase is not Phase.HELD:
                continue
            out.append((grant.holder, grant.need))
        return tuple(out)

    # ---- completeness -----------------------------------------------------------------------

    def advance(self, scope: str | None, version: int) -> bool:
        """Every claim of `scope` (a namespace, or None: every namespace) created at or before
        `version` is known: a LIST at that version was absorbed, or a watch stream, which delivers
        in commit order, reached it. True when the horizon moved."""
        if version <= self._horizons.get(scope, 0):
            return False
        self._horizons[scope] = version
        return True

    def complete_at(self, namespace: str) -> int:
        """The version up to which every claim of `namespace` created has been seen (0: none yet)."""
        return max(self._horizons.get(namespace, 0), self._horizons.get(None, 0))

    def awaits_decision(self, key: Key) -> bool:
        """Some claim of the key has no answer yet, or waits in a queue."""
        return any(
            self.claims[uid].claim.status is None or self.claims[uid].claim.waiting for uid in self._by_key.get(key, ())
        )

    def awaiting_keys(self) -> set[Key]:
        """Every key that `awaits_decision`: the resources of the claims with no answer yet or waiting."""
        return {
            (record.namespace, resource)
            for record in self.claims.values()
            if record.claim.status is None or record.claim.waiting
            for resource in record.claim.every_resource
        }

    def claims_for(self, key: Key) -> list[ClaimRecord]:
        return [self.claims[uid] for uid in self._by_key.get(key, ())]

    # ---- locks ------------------------------------------------------------------------------

    def upsert_lock(self, body: Body) -> Key | None:
        """Remember a lock; the key to reconcile, or None when nothing changed."""
        grants = lock_views(body, self._strings_of_lock(body))
        first = grants[0]
        namespace = intern(str((body.get("metadata") or {}).get("namespace", "")))
        rv = str((body.get("metadata") or {}).get("resourceVersion", ""))
        key = (namespace, first.resource)
        if first.uid in self._deleted:
            return None  # e.g. the watch's ADDED event of a lock the operator has already deleted
        old = self.locks.get(key)
        if old is not None and old.uid == first.uid and revision_of(old.version) >= revision_of(rv):
            return None
        self.locks[key] = LockRecord(grants, rv, _breaking(body))
        self.breaks.pop(key, None)
        self.graphs[namespace].set_grants(first.resource, self._graph_grants(grants))
        return key

    def delete_lock(self, body: Body) -> Key | None:
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace", "")
        resource = str((body.get("spec") or {}).get("resource", ""))
        annotations = meta.get("annotations") or {}
        key = self.forget_lock((namespace, resource), str(meta.get("uid", "")))
        if key is not None:
            actor, why = annotations.get(BREAK_ACTOR_ANNOTATION), annotations.get(BREAK_REASON_ANNOTATION)
            self.breaks[key] = LockBreak(actor, why)
        return key

    def forget_lock(self, key: Key, uid: str) -> Key | None:
        """The lock `uid` is gone from the API server."""
        if uid:
            self._bury(uid)
        old = self.locks.get(key)
        if old is None or old.uid != uid:
            return None
        del self.locks[key]
        self.graphs[key[0]].set_grants(key[1], ())
        return key

    # ---- pods -------------------------------------------------------------------------------

    def upsert_pod(self, body: Body) -> list[Key]:
        meta = body.get("metadata") or {}
        pod_key = (meta.get("namespace", ""), meta.get("name", ""))
        info = pod_info(body)
        if self.pods.get(pod_key) == info:
            return []
        self.pods[pod_key] = info
        return self._keys_of_pod(pod_key)

    def delete_pod(self, body: Body) -> list[Key]:
        meta = body.get("metadata") or {}
        pod_key = (meta.get("namespace", ""), meta.get("name", ""))
        if self.pods.get(pod_key, PodInfo("", False, False)).uid != meta.get("uid"):
            return []
        del self.pods[pod_key]
        return self._keys_of_pod(pod_key)

    def keys_of_pod(self, namespace: str, name: str) -> list[Key]:
        """The keys of the active claims that name this pod."""
        return self._keys_of_pod((namespace, name))

    def _keys_of_pod(self, pod_key: PodKey) -> list[Key]:
        return sorted({key_of(self.claims[uid]) for uid in self._pod_claims.get(pod_key, ())})

    # ---- resync -----------------------------------------------------------------------------

    # A resync compares the cache with a full LIST, page by page (never more than a page of bodies
    # in memory): `absorb_*` takes in each page and notes what it listed, `prune_*` then drops what
    # the LIST, taken at `list_version`, no longer has. Records newer than the LIST are left alone.

    def absorb_claims(self, bodies: list[Body], listed: set[str], in_scope: Callable[[str], bool]) -> set[Key]:
        return _absorb(bodies, listed, in_scope, self.upsert_claim)

    def prune_claims(
        self, listed: set[str], list_version: int, within: Callable[[str], bool] = lambda _: True
    ) -> set[Key]:
        """Drop the claims of the listed namespaces (`within`) that a LIST taken at `list_version`
        no longer had: deleted while no watch was there to say so (a watch broken, a stall)."""
        keys: set[Key] = set()
        for uid, record in list(self.claims.items()):
            if not within(record.namespace):
                continue
            if uid not in listed and revision_of(record.resource_version) <= list_version:
                keys.add(key_of(record))
                self._bury(uid)
                self._unindex(record)
        return keys

    def absorb_locks(self, bodies: list[Body], listed: set[str], in_scope: Callable[[str], bool]) -> set[Key]:
        return _absorb(bodies, listed, in_scope, self.upsert_lock)

    def prune_locks(
        self, listed: set[str], list_version: int, within: Callable[[str], bool] | None = None
    ) -> set[Key]:
        """Forget the locks a LIST at `list_version` did not have (only those of namespaces `within`
        the LIST's scope, when given)."""
        keys: set[Key] = set()
        for key, record in list(self.locks.items()):
            if within is not None and not within(key[0]):
                continue
            if record.uid not in listed and revision_of(record.version) <= list_version:
                self.forget_lock(key, record.uid)
                keys.add(key)
        return keys

    def absorb_pods(self, bodies: list[Body], listed: set[PodKey], in_scope: Callable[[str], bool]) -> set[Key]:
        keys: set[Key] = set()
        for body in bodies:
            meta = body.get("metadata") or {}
            if not in_scope(str(meta.get("namespace", ""))):
                continue
            listed.add((meta.get("namespace", ""), meta.get("name", "")))
            keys.update(self.upsert_pod(body))
        return keys

    def prune_pods(self, listed: set[PodKey]) -> set[Key]:
        keys: set[Key] = set()
        for pod_key in [k for k in self.pods if k not in listed]:
            del self.pods[pod_key]
            keys.update(self._keys_of_pod(pod_key))
        return keys

    def keys(self) -> set[Key]:
        return set(self._by_key) | set(self.locks)


def _first_resource(spec: Body) -> object:
    """The resource a terminal claim is kept under (`Cache._finish`): `spec.resource`, or the first of
    `spec.resources` (a claim of several has no `spec.resource`; without it `_unfinish` looked for the
    claim under every key, a walk of them all for each such claim deleted)."""
    listed = spec.get("resources")
    if spec.get("resource") is None and isinstance(listed, list) and listed:
        return listed[0]
    return spec.get("resource")


def _remember(tombstones: OrderedDict[str, None], uid: str) -> None:
    tombstones[uid] = None
    while len(tombstones) > TOMBSTONES:
        tombstones.popitem(last=False)


def _keep(shared: dict[str, str], *strings: str | None) -> None:
    for each in strings:
        if each:
            shared[each] = each


def _keep_claim(shared: dict[str, str], record: ClaimRecord) -> None:
    """The strings of a claim's record that its lock's grant names too: its name, uid and lock name."""
    claim = record.claim
    _keep(shared, claim.name, claim.uid, claim.status.lock_name if claim.status else None)


def _append(index: dict[Key, tuple[str, ...]], key: Key, uid: str) -> None:
    uids = index.get(key, ())
    if uid not in uids:
        index[key] = (*uids, uid)


def _remove(index: dict[Key, tuple[str, ...]], key: Key, uid: str) -> None:
    uids = index.get(key, ())
    if uid in uids:
        rest = tuple(u for u in uids if u != uid)
        if rest:
            index[key] = rest
        else:
            del index[key]


def _discard(index: dict[Key, set[str]], key: Key, uid: str) -> None:
    uids = index.get(key)
    if uids is not None:
        uids.discard(uid)
        if not uids:
            del index[key]


def _breaking(body: Body) -> tuple[frozenset[str], LockBreak] | None:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    named = annotations.get(BREAK_CLAIMS_ANNOTATION)
    if not isinstance(named, str) or not named:
        return None
    uids = frozenset(u.strip() for u in named.split(",") if u.strip())
    actor, why = annotations.get(BREAK_ACTOR_ANNOTATION), annotations.get(BREAK_REASON_ANNOTATION)
    return uids, LockBreak(actor if isinstance(actor, str) else None, why if isinstance(why, str) else None)


def _absorb(
    bodies: list[Body], listed: set[str], in_scope: Callable[[str], bool], upsert: Callable[[Body], Key | None]
) -> set[Key]:
    """Upsert one LIST page of claims or locks, noting their uids; the keys that changed."""
    keys: set[Key] = set()
    for body in bodies:
        meta = body.get("metadata") or {}
        if not in_scope(str(meta.get("namespace", ""))):
            continue
        listed.add(str(meta.get("uid")))
        key = upsert(body)
        if key is not None:
            keys.add(key)
    return keys
