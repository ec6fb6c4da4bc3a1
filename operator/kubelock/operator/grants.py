"""The grant store: every write of a grant, which is its ResourceLock, in one place.

The reconciler decides; this module stores. Its methods answer with an outcome instead of raising for
the answers the protocol expects (the lock was taken by another replica, the view the write rested
on is stale), so the caller decides what comes next; a failure of the API server itself (a lost
connection, a 5xx) is raised, and the caller's work loop retries the key with backoff. The same split
as client-go's leader election and its `resourcelock.Interface`: the election never talks to storage.

A grant costs one write here: the create. Its token is the lock's creation revision, which the
create's response carries and `kubelock.api.fencing` reads from any later version; a renewal records
it in the lock (admission requires the lock's first write to).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubelock.domain.model import CreateLock, Lock, RenewLock
from kubelock.domain.resource import lock_name
from kubelock.kube import codec, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.codec import ClaimRecord
from kubelock.kube.errors import Conflict, NotFound

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Written:
    """The write was made; `body` is the lock as stored (None after a deletion)."""

    body: Body | None = None


@dataclass(frozen=True, slots=True)
class Taken:
    """The create found the resource's lock already there (another replica's grant, or one the view
    had not shown yet): `body` is that lock, as read right after."""

    body: Body


@dataclass(frozen=True, slots=True)
class Stale:
    """The write rested on a version of the lock that is no longer the current one (or the lock is
    gone): decide again on a fresh view of it."""

    why: str


Outcome = Written | Taken | Stale


class GrantStore:
    """Creates, renews and deletes ResourceLocks with the preconditions that make each write safe
    on a stale view: the lock's name (one per resource) for the create, the version the decision saw
    for a renewal, the lock's uid for a deletion."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def create(self, namespace: str, action: CreateLock, record: ClaimRecord) -> Written | Taken | Stale:
        name = lock_name(action.claim.resource)
        try:
            body = await self.client.create(paths.locks(namespace), codec.lock_body(action, record, name))
        except Conflict as error:
            if not error.already_exists:
                raise
            current = await self.read(namespace, name)
            return Stale("lock deleted right after the create met it") if current is None else Taken(current)
        return Written(body)

    async def renew(self, namespace: str, action: RenewLock, version: str | None) -> Written | Stale:
        """Renew on the version the decision saw (None: the decision saw another lock, or none)."""
        if version is None:
            return Stale("the lock changed")
        try:
            body = await self.client.patch(paths.locks(namespace, action.lock.name), codec.renew_patch(action, version))
        except (Conflict, NotFound) as error:
            return Stale(str(error))
        return Written(body)

    async def delete(self, namespace: str, lock: Lock) -> Written | Stale:
        """Delete this lock (uid precondition: a newer lock of the resource survives). One already
        gone is deleted as far as the caller is concerned."""
        try:
            await self.client.delete(paths.locks(namespace, lock.name), uid=lock.uid)
        except NotFound:
            pass
        except Conflict as error:
            return Stale(str(error))
        return Written()

    async def read(self, namespace: str, name: str) -> Body | None:
        """The lock as the API server has it now, or None."""
        try:
            return await self.client.get(paths.locks(namespace, name))
        except NotFound:
            return None
