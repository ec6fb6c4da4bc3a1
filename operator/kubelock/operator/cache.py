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
from typing import Any

from kubelock.api.constants import BREAK_ACTOR_ANNOTATION, BREAK_REASON_ANNOTATION, POD_LABEL, POD_LABEL_VALUE
from kubelock.domain.model import Lock, LockBreak
from kubelock.domain.waitfor import WaitForGraph
from kubelock.kube.codec import ClaimRecord, claim_record, lock_view

Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, normalised resource)
TOMBSTONES = 10_000  # uids of claims seen deleted, so a release needs no confirming read
PodKey = tuple[str, str]  # (namespace, pod name)


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    terminated: bool
    watched: bool  # carries the label the operator's pod watch selects


def pod_info(body: Body) -> PodInfo:
    meta = body.get("metadata") or {}
    phase = (body.get("status") or {}).get("phase")
    return PodInfo(
        uid=str(meta.get("uid", "")),
        terminated=phase in ("Succeeded", "Failed") or bool(meta.get("deletionTimestamp")),
        watched=(meta.get("labels") or {}).get(POD_LABEL) == POD_LABEL_VALUE,
    )


def _rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


class Cache:
    def __init__(self) -> None:
        self.claims: dict[str, ClaimRecord] = {}
        self._by_key: dict[Key, set[str]] = defaultdict(set)
        self.locks: dict[Key, tuple[Lock, str]] = {}
        self.pods: dict[PodKey, PodInfo] = {}
        self._pod_claims: dict[PodKey, set[str]] = defaultdict(set)
        self.graphs: dict[str, WaitForGraph] = defaultdict(WaitForGraph)
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self.breaks: dict[Key, LockBreak] = {}  # what a deleted lock said about who broke it

    # ---- claims -----------------------------------------------------------------------------

    def upsert_claim(self, body: Body) -> Key | None:
        """Remember a claim; the key to reconcile, or None when nothing changed."""
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return self.delete_claim(body)
        record = claim_record(body)
        old = self.claims.get(record.claim.uid)
        if old is not None:
            if _rv(old.resource_version) >= _rv(record.resource_version):
                return None  # an older version than the one already known (e.g. our own write's response)
            if record.claim.status is None:
                # Queue order is fixed when the operator first sees a claim, not when it next changes.
                record = replace(record, claim=replace(record.claim, sequence=old.claim.sequence))
            self._unindex(old)
        self._index(record)
        return (record.namespace, record.claim.resource)

    def delete_claim(self, body: Body) -> Key | None:
        uid = (body.get("metadata") or {}).get("uid")
        if uid:
            self._deleted[uid] = None
            while len(self._deleted) > TOMBSTONES:
                self._deleted.popitem(last=False)
        old = self.claims.get(uid) if uid else None
        if old is None:
            return None
        self._unindex(old)
        return (old.namespace, old.claim.resource)

    def was_deleted(self, uid: str) -> bool:
        return uid in self._deleted

    def forget_claim(self, uid: str) -> Key | None:
        old = self.claims.get(uid)
        if old is None:
            return None
        self._unindex(old)
        return (old.namespace, old.claim.resource)

    def _index(self, record: ClaimRecord) -> None:
        claim = record.claim
        self.claims[claim.uid] = record
        self._by_key[(record.namespace, claim.resource)].add(claim.uid)
        if claim.pod_name:
            self._pod_claims[(record.namespace, claim.pod_name)].add(claim.uid)
        if claim.waiting:
            self.graphs[record.namespace].add_wait(claim.holder, claim.resource, claim.sequence)

    def _unindex(self, record: ClaimRecord) -> None:
        claim = record.claim
        self.claims.pop(claim.uid, None)
        key = (record.namespace, claim.resource)
        uids = self._by_key.get(key)
        if uids is not None:
            uids.discard(claim.uid)
            if not uids:
                del self._by_key[key]
        if claim.pod_name:
            pod_key = (record.namespace, claim.pod_name)
            users = self._pod_claims.get(pod_key)
            if users is not None:
                users.discard(claim.uid)
                if not users:
                    del self._pod_claims[pod_key]
        if claim.waiting:
            self.graphs[record.namespace].remove_wait(claim.holder, claim.resource, claim.sequence)

    def claims_for(self, key: Key) -> list[ClaimRecord]:
        return [self.claims[uid] for uid in self._by_key.get(key, ())]

    # ---- locks ------------------------------------------------------------------------------

    def upsert_lock(self, body: Body) -> Key:
        lock = lock_view(body)
        namespace = (body.get("metadata") or {}).get("namespace", "")
        rv = str((body.get("metadata") or {}).get("resourceVersion", ""))
        key = (namespace, lock.resource)
        old = self.locks.get(key)
        if old is not None and old[0].uid == lock.uid and _rv(old[1]) >= _rv(rv):
            return key
        self.locks[key] = (lock, rv)
        self.breaks.pop(key, None)
        self.graphs[namespace].set_holder(lock.resource, lock.holder)
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
        old = self.locks.get(key)
        if old is None or old[0].uid != uid:
            return None
        del self.locks[key]
        self.graphs[key[0]].set_holder(key[1], None)
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

    def _keys_of_pod(self, pod_key: PodKey) -> list[Key]:
        return sorted({(pod_key[0], self.claims[uid].claim.resource) for uid in self._pod_claims.get(pod_key, ())})

    # ---- resync -----------------------------------------------------------------------------

    def resync_claims(self, bodies: list[Body], list_version: int, in_scope: Callable[[str], bool]) -> set[Key]:
        """Bring the cache in line with a full LIST taken at `list_version`: a watch can miss a
        deletion (e.g. between the operator's own priming LIST and kopf's), and nothing else would
        ever tell the cache. Records newer than the LIST are left alone."""
        keys: set[Key] = set()
        listed = set()
        for body in bodies:
            if not in_scope(str((body.get("metadata") or {}).get("namespace", ""))):
                continue
            listed.add((body.get("metadata") or {}).get("uid"))
            key = self.upsert_claim(body)
            if key is not None:
                keys.add(key)
        for uid, record in list(self.claims.items()):
            if uid not in listed and _rv(record.resource_version) <= list_version:
                keys.add((record.namespace, record.claim.resource))
                self._deleted[uid] = None
                self._unindex(record)
        return keys

    def resync_locks(self, bodies: list[Body], list_version: int, in_scope: Callable[[str], bool]) -> set[Key]:
        keys: set[Key] = set()
        listed = set()
        for body in bodies:
            if not in_scope(str((body.get("metadata") or {}).get("namespace", ""))):
                continue
            meta = body.get("metadata") or {}
            listed.add(meta.get("uid"))
            key = (str(meta.get("namespace", "")), str((body.get("spec") or {}).get("resource")))
            before = self.locks.get(key)
            if self.locks.get(self.upsert_lock(body)) != before:
                keys.add(key)
        for key, (lock, rv) in list(self.locks.items()):
            if lock.uid not in listed and _rv(rv) <= list_version:
                self.forget_lock(key, lock.uid)
                keys.add(key)
        return keys

    def resync_pods(self, bodies: list[Body], in_scope: Callable[[str], bool]) -> set[Key]:
        keys: set[Key] = set()
        listed = set()
        for body in bodies:
            meta = body.get("metadata") or {}
            if not in_scope(str(meta.get("namespace", ""))):
                continue
            listed.add((meta.get("namespace", ""), meta.get("name", "")))
            keys.update(self.upsert_pod(body))
        for pod_key in [k for k in self.pods if k not in listed]:
            del self.pods[pod_key]
            keys.update(self._keys_of_pod(pod_key))
        return keys

    def keys(self) -> set[Key]:
        return set(self._by_key) | set(self.locks)
