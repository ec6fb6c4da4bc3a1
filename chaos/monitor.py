"""What the API server shows while a scenario runs: every ResourceLock and LockClaim of its namespace,
followed by watches on a direct (never proxied) connection, stamped with the time each change arrived.

Watches resume from the last resourceVersion after a disconnect; when that is too old (410) the
collection is listed again, and objects that vanished meanwhile are taken as deleted at that moment.
Every stretch without a working watch is reported as an outage ("monitor"), so the checker does not
hold against the system what the monitor could not see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.history import ClaimLife, LockLife, Outage, Record
from kubelock.api import objects
from kubelock.domain.reasons import Phase
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient

Body = dict[str, Any]


@dataclass
class _Lock:
    """One grant of a ResourceLock (keyed by the lock's uid and its claim's uid)."""

    uid: str
    resource: str
    holder: str
    claim: str
    token: int
    version: int
    created: float
    expiry: float | None
    pod: str | None
    deleted: float | None = None
    created_version: int | None = None
    other_tokens: list[int] = field(default_factory=list)
    acquired: float | None = None
    deleted_version: int | None = None


@dataclass
class _Claim:
    uid: str
    resource: str
    holder: str
    wait: bool
    created: float
    decided: float | None = None
    answered: float | None = None
    deleted: float | None = None
    phase: str | None = None
    reason: str | None = None
    deleted_version: int | None = None
    created_version: int | None = None
    decided_version: int | None = None
    held: bool = False
    released: float | None = None
    resources: tuple[str, ...] = ()
    held_version: int | None = None
    ended: bool = False  # seen ending otherwise than Rejected (final phase, deletion begun or done)
    ended_version: int | None = None
    sequence: int | None = None
    name: str = ""
    expiry: float | None = None  # while Held: the last `expiresAt` its status showed (the holder's lease)
    answered_version: int | None = None
    released_version: int | None = None


class Monitor:
    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self.locks: dict[str, _Lock] = {}  # grants, by "<lock uid>/<claim uid>"
        self._live: dict[str, set[str]] = {}  # lock uid -> its grants not gone yet
        self.claims: dict[str, _Claim] = {}
        self.outages: list[Outage] = []
        self.events = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._listed = 0

    async def start(self) -> Monitor:
        self._tasks = [
            asyncio.create_task(self._follow(paths.locks(self._namespace), self._on_lock, "locks")),
            asyncio.create_task(self._follow(paths.claims(self._namespace), self._on_claim, "claims")),
        ]
        await asyncio.wait_for(self._ready.wait(), 60)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def held_resources(self) -> int:
        return len({lock.resource for lock in self.locks.values() if lock.deleted is None})

    def records(self) -> list[Record]:
        out: list[Record] = list(self.outages)
        for lock in self.locks.values():
            claim = self.claims.get(lock.claim)
            released = claim.released if claim is not None else None
            released_version = claim.released_version if claim is not None else None
            if released is not None and released < lock.created:
                released = released_version = None  # the claim's release belongs to an earlier grant
            # The lease in force is the later of the lock's expiry and the claim's: a grant's first
            # lease counts from its `Held` write, which the lock's times do not show (domain.leasestart).
            expiry = lock.expiry
            if claim is not None and claim.expiry is not None:
                expiry = claim.expiry if expiry is None else max(expiry, claim.expiry)
            out.append(
                LockLife(
                    uid=f"{lock.uid}/{lock.claim}", resource=lock.resource, holder=lock.holder, claim=lock.claim,
                    token=lock.token,
                    version=lock.version, created=lock.created, deleted=lock.deleted, expiry=expiry,
                    released=released, pod=lock.pod, created_version=lock.created_version,
                    other_tokens=tuple(lock.other_tokens), acquired=lock.acquired,
                    deleted_version=lock.deleted_version, released_version=released_version,
                )
            )
        for c in self.claims.values():
            out.append(
                ClaimLife(
                    uid=c.uid, resource=c.resource, holder=c.holder, wait=c.wait, created=c.created,
                    decided=c.decided, deleted=c.deleted, phase=c.phase, answered=c.answered,
                    reason=c.reason, deleted_version=c.deleted_version, created_version=c.created_version,
                    decided_version=c.decided_version, resources=c.resources, held_version=c.held_version,
                    ended_version=c.ended_version,
                    sequence=c.sequence, name=c.name, answered_version=c.answered_version,
                )
            )
        return out

    # ---- following a collection -------------------------------------------------------------

    async def _follow(self, path: str, observe: Callable[[str, Body, float], None], what: str) -> None:
        version: str | None = None
        blind_since: float | None = None
        known: set[str] = set()
        while True:
            try:
                if version is None:
                    items, version = await self._kube.list_all(path)
                    now = time.time()
                    current = {objects.Metadata.parse(i.get("metadata")).uid: i for i in items}
                    for uid in known - current.keys():
                        observe("DELETED", {"metadata": {"uid": uid}}, now)
                    for item in items:
                        observe("LISTED", item, now)
                    known = set(current)
                    self._listed += 1
                    if self._listed >= 2:
                        self._ready.set()
                stream = self._kube.watch(path, resource_version=version, timeout_seconds=120)
                async for event in stream:
                    if blind_since is not None:
                        self.outages.append(Outage(f"monitor {what}", blind_since, time.time()))
                        blind_since = None
                    kind = str(event.get("type"))
                    obj = event.get("object") or {}
                    version = objects.resource_version(obj) or version
                    if kind == "BOOKMARK":
                        continue
                    self.events += 1
                    uid = objects.Metadata.parse(obj.get("metadata")).uid
                    if kind == "DELETED":
                        known.discard(uid)
                    else:
                        known.add(uid)
                    observe(kind, obj, time.time())
            except kube_errors.ApiError as error:
                blind_since = blind_since or time.time()
                if error.status == 410:
                    version = None
                    continue
                await asyncio.sleep(0.2)
            except kube_errors.Unreachable:
                blind_since = blind_since or time.time()
                await asyncio.sleep(0.2)

    # ---- objects ----------------------------------------------------------------------------

    def _on_lock(self, kind: str, body: Body, now: float) -> None:
        """A lock's grants as this version shows them: new ones appear, missing ones are gone."""
        parsed = objects.LockObject.parse(body)
        uid = parsed.metadata.uid
        live = self._live.pop(uid, set())
        version = parsed.metadata.revision
        if kind == "DELETED":
            for key in live:
                self.locks[key].deleted = now
                # A DELETED event carries the deletion's version; a deletion found by a LIST does not.
                self.locks[key].deleted_version = version or None
            return
        present: set[str] = set()
        for spec in parsed.spec.every_grant:
            key = f"{uid}/{spec.claim_uid}"
            present.add(key)
            expiry = objects.seconds(spec.expires_at)
            token = spec.fencing_token or version  # as kubelock.api.fencing.grant_token reads it
            lock = self.locks.get(key)
            if lock is None:
                self.locks[key] = _Lock(
                    uid=uid,
                    resource=spec.resource,
                    holder=spec.holder,
                    claim=spec.claim_uid,
                    token=token,
                    version=version,
                    created=now,
                    expiry=expiry,
                    pod=spec.pod_name,
                    # Only the write that made a grant carries its own resourceVersion: a watch's
                    # ADDED event (the first grant), or a version where the grant's token is still 0.
                    created_version=version if kind == "ADDED" or not spec.fencing_token else None,
                    acquired=objects.seconds(spec.acquired_at),
                )
                continue
            if expiry is not None:
                lock.expiry = expiry
            # A grant's token is the revision of the write that made it, whatever version shows it:
            # one that reads otherwise is recorded, and the checker reports it.
            if not lock.token:
                lock.token = token  # first seen without a readable one (a malformed body)
            elif token != lock.token and token not in lock.other_tokens:
                lock.other_tokens.append(token)
        for key in live - present:
            self.locks[key].deleted = now  # the grant was removed from the lock
            self.locks[key].deleted_version = version if kind == "MODIFIED" else None
        self._live[uid] = present

    def _on_claim(self, kind: str, body: Body, now: float) -> None:
        parsed = objects.ClaimObject.parse(body)
        meta, status = parsed.metadata, parsed.status
        uid = meta.uid
        claim = self.claims.get(uid)
        if kind == "DELETED":
            if claim is not None and claim.deleted is None:
                claim.deleted = now
                claim.deleted_version = meta.revision or None
                _ended(claim, kind, meta.revision)
                if claim.held and claim.released is None:
                    _released(claim, now, meta.revision)
            return
        if claim is None:
            claim = self.claims[uid] = _Claim(
                uid=uid,
                resource=parsed.spec.resource,
                holder=parsed.spec.holder,
                wait=parsed.spec.wait,
                created=now,
                # Only a watch's ADDED event carries the creation's own resourceVersion.
                created_version=meta.revision if kind == "ADDED" else None,
                resources=parsed.spec.resources if len(parsed.spec.resources) > 1 else (),
                name=meta.name,
            )
        phase = status.phase
        if meta.deleting or phase not in (None, Phase.PENDING, Phase.HELD, Phase.REJECTED):
            _ended(claim, kind, meta.revision)
        if phase is None:
            return
        claim.phase = phase.value
        claim.reason = status.reason or claim.reason
        if status.sequence:
            claim.sequence = status.sequence  # the operator's order of arrival (a requeue moves it)
        if claim.answered is None:
            claim.answered = now
            # Stamps are when the event arrived; a watch event's version lets the checker place the
            # write itself on the revision clock (`chaos.history.retimed`). A listed body may be newer.
            claim.answered_version = meta.revision if kind == "MODIFIED" else None
        if phase is not Phase.PENDING and claim.decided is None:
            claim.decided = now
            # A watch event's version is the write that decided it; a listed body may be newer.
            claim.decided_version = meta.revision if kind == "MODIFIED" else None
        if phase is Phase.HELD:
            if not claim.held and kind == "MODIFIED":
                claim.held_version = meta.revision  # the write that told it Held
            claim.held = True
            claim.expiry = objects.seconds(status.expires_at) or claim.expiry
        elif claim.held and claim.released is None:
            _released(claim, now, meta.revision if kind == "MODIFIED" else None)
        if meta.deleting and claim.held and claim.released is None:
            _released(claim, now, meta.revision if kind == "MODIFIED" else None)


def _released(claim: _Claim, now: float, version: int | None) -> None:
    claim.released = now
    claim.released_version = version or None


def _ended(claim: _Claim, kind: str, version: int | None) -> None:
    """The first sign that the claim stopped counting toward quotas, with the version of that write when
    a watch event showed it (a LIST shows a later state, not the write)."""
    if not claim.ended:
        claim.ended = True
        claim.ended_version = (version or None) if kind in ("MODIFIED", "DELETED") else None
