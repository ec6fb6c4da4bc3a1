"""The grant store: every write of a grant, which is its ResourceLock, in one place.

The reconciler decides; this module stores. Its methods answer with an outcome instead of raising for
the answers the protocol expects (the lock was taken by another replica, the view the write rested
on is stale), so the caller decides what comes next; a failure of the API server itself (a lost
connection, a 5xx) is raised, and the caller's work loop retries the key with backoff. The same split
as client-go's leader election and its `resourcelock.Interface`: the election never talks to storage.

A resource's grants are recorded in one ResourceLock. The first grant costs one write: the create.
Its token is the lock's creation revision, which the create's response carries and
`kubelock.api.fencing` reads from any later version; a renewal records it in the lock (admission
requires the lock's first write to). An exclusive lock is that one object, written again only to renew
it, to hand it to the next waiter when its holder releases it, or to delete it.

A handoff (a release and the grant it lets in) is one update of the lock, conditional on the version
the decision saw, whatever is left of it: the leaving grant goes and the new one comes in the same
write, and the new grant's token is that write's revision, above every token the lock carried. So a
lock object may carry one holder after another; its uid names the object, never a grant (a grant is
named by its claim's uid, as `kubelock.api.fencing` and the chaos monitor read it).

A further grant (a Shared holder, semaphore permits) is an update of that lock conditional on the
version the decision saw: when another replica (or a release, a renewal) wrote the lock since, the
update fails (`Stale`) and the grant is decided again on the lock as it now is. So two replicas can
never both add a grant that does not fit: the API server serialises the writes of one resource.
Every write of a lock with several grants records the version it rests on as the token of the grant
that version added (its token was 0), and adds its own grant with 0 (`kubelock.api.fencing`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubelock.domain.model import CreateLock, Lock, RenewLock
from kubelock.domain.resource import lock_name
from kubelock.kube import codec, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.codec import ClaimRecord
from kubelock.kube.errors import Conflict, Forbidden, NotFound

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


class LockRefused(Forbidden):
    """The API server refused (403) to create the lock that would grant `claim_uid` the resource: a
    ResourceQuota on `count/resourcelocks.kubelock.dev` that is used up, an admission webhook, or RBAC
    the operator lacks. Not a stale view, and not fixed by trying again at once: the reconciler tells
    the claim and tries again later (`Reconciler.reconcile`). Still a `Forbidden`, so a caller that
    does not look for it retries it as it retries any refusal."""

    def __init__(self, refusal: Forbidden, *, claim_uid: str, claim_name: str, lock: str) -> None:
        super().__init__(refusal.status, refusal.reason, refusal.message, refusal.body)
        self.claim_uid = claim_uid
        self.claim_name = claim_name
        self.lock = lock

    @property
    def explanation(self) -> str:
        """What the claim is told (its status message, the Event)."""
        return f"the API server refused to create lock {self.lock}, so nothing is granted: {self.message}"


class LockNameTaken(LockRefused):
    """The resource's lock name is the name of another resource's lock: a lock name is a readable
    start and 48 bits of a digest of the URI (`kubelock.domain.resource.lock_name`), so two URIs that
    share the start and collide in the digest (anyone can find such a pair in seconds) name one lock.
    Nothing is granted while the other resource's lock exists, and the claim is told so as it is told
    any refused create: a try-lock ends `Rejected` `LockRefused`, a waiter waits and is tried again.
    Taking the other lock for this resource's would answer the claim from the wrong lock; deciding
    again from it met the same lock at every round, for ever (the create refused, the view unchanged).
    The name cannot be made longer for new locks only: an operator of an older version, or one that
    did not see the other lock, would grant the same resource under the shorter name too."""

    def __init__(self, *, claim_uid: str, claim_name: str, lock: str, resource: str, other: str) -> None:
        message = (
            f"lock {lock} of {resource} is already the lock of another resource, {other}: their lock names "
            f"collide; nothing is granted on {resource} while that lock exists (claim it under another "
            "spelling to lock it apart)"
        )
        super().__init__(
            Forbidden(409, "AlreadyExists", message), claim_uid=claim_uid, claim_name=claim_name, lock=lock
        )

    @property
    def explanation(self) -> str:
        return self.message


class GrantStore:
    """Creates, renews and deletes ResourceLocks with the preconditions that make each write safe
    on a stale view: the lock's name (one per resource) for the create, the version the decision saw
    for a renewal, the lock's uid for a deletion."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def create(self, namespace: str, action: CreateLock, record: ClaimRecord) -> Written | Taken | Stale:
        name = lock_name(action.target)
        try:
            body = await self.client.create(paths.locks(namespace), codec.lock_body(action, record, name))
        except Forbidden as error:
            raise LockRefused(error, claim_uid=action.claim.uid, claim_name=action.claim.name, lock=name) from error
        except Conflict as error:
            if not error.already_exists:
                raise
            current = await self.read(namespace, name)
            if current is None:
                return Stale("lock deleted right after the create met it")
            other = str((current.get("spec") or {}).get("resource", ""))
            if other != action.target:
                raise LockNameTaken(
                    claim_uid=action.claim.uid, claim_name=action.claim.name, lock=name, resource=action.target,
                    other=other,
                ) from error
            return Taken(current)
        return Written(body)

    async def add(
        self, namespace: str, action: CreateLock, record: ClaimRecord, grants: Sequence[Lock], version: str | None
    ) -> Written | Stale:
        """Add a grant for `action`'s claim to the lock that holds `grants`, read at `version`."""
        return await self.hand_over(namespace, (), action, record, grants, version)

    async def hand_over(
        self,
        namespace: str,
        released: Collection[str],
        action: CreateLock,
        record: ClaimRecord,
        grants: Sequence[Lock],
        version: str | None,
    ) -> Written | Stale:
        """Remove the grants of the claims `released` from the lock that holds `grants`, read at
        `version`, and add a grant for `action`'s claim, in one write: a permit handed from one
        holder to the next costs one update of the lock, not two. One grant per write: a grant's token
        is the revision of the write that adds it, so two grants added by one write would share it.
        When no grant is left (an exclusive lock, or a lock's last permit, handed to the next waiter),
        the new grant takes the lock's top-level fields: the same object, a new holder, and its token
        that write's revision like any added grant's; the write drops any break record of the holder
        that left (an admin's break of it is moot, and must not be taken for one of the new holder)."""
        if version is None or not grants:
            return Stale("the lock changed")
        left = codec.without(grants, released)
        patch = codec.grants_patch([*left, codec.new_grant(action, record)], version)
        if not left:
            patch["metadata"]["annotations"] = dict.fromkeys(codec.BREAK_ANNOTATIONS)
        return await self._write(namespace, grants[0].name, patch)

    async def renew(
        self, namespace: str, action: RenewLock, version: str | None, grants: Sequence[Lock] = ()
    ) -> Written | Stale:
        """Renew on the version the decision saw (None: the decision saw another lock, or none).
        `grants`: every grant of the lock (a lock of one grant is renewed as it always was)."""
        if version is None:
            return Stale("the lock changed")
        if len(grants) > 1:
            renewed = replace(action.lock, renewed_at=action.renewed_at, lease_seconds=action.lease_seconds)
            merged = [renewed if g.claim_uid == action.lock.claim_uid else g for g in grants]
            return await self._write(namespace, action.lock.name, codec.grants_patch(merged, version))
        return await self._write(namespace, action.lock.name, codec.renew_patch(action, version))

    async def remove(
        self, namespace: str, lock: Lock, grants: Sequence[Lock] = (), version: str | None = None
    ) -> Written | Stale:
        """Remove the grant `lock` from its lock, which holds `grants` at `version`: delete the lock
        when no other grant is left, else update it to hold the others."""
        left = codec.without(grants, {lock.claim_uid})
        if not left:
            return await self.delete(namespace, lock, version)
        if len(left) == len(grants):
            return Written()  # that grant is gone already
        if version is None:
            return Stale("the lock changed")
        return await self._write(namespace, lock.name, codec.grants_patch(left, version))

    async def break_grants(
        self, namespace: str, grants: Sequence[Lock], claim_uids: frozenset[str], version: str
    ) -> Written | Stale:
        """Carry out an admin's break of some grants (`kubelock.dev/break-claims`): remove them and the
        break annotations in one write (the lock's deletion when none is left; it keeps the record)."""
        left = codec.without(grants, claim_uids)
        if not left:
            return await self.delete(namespace, grants[0], version)
        patch = codec.grants_patch(left, version)
        patch["metadata"]["annotations"] = dict.fromkeys(codec.BREAK_ANNOTATIONS)
        return await self._write(namespace, grants[0].name, patch)

    async def _write(self, namespace: str, name: str, patch: Body) -> Written | Stale:
        try:
            body = await self.client.patch(paths.locks(namespace, name), patch)
        except (Conflict, NotFound) as error:
            return Stale(str(error))
        return Written(body)

    async def delete(self, namespace: str, lock: Lock, version: str | None = None) -> Written | Stale:
        """Delete this lock (uid precondition: a newer lock of the resource survives; and with
        `version`, that version: a grant added since survives too). One already gone is deleted as
        far as the caller is concerned."""
        try:
            await self.client.delete(paths.locks(namespace, lock.name), uid=lock.uid, resource_version=version)
        except NotFound:
            pass  # gone already
        except Conflict as error:
            return Stale(str(error))
        return Written()

    async def read(self, namespace: str, name: str) -> Body | None:
        """The lock as the API server has it now, or None."""
        try:
            return await self.client.get(paths.locks(namespace, name))
        except NotFound:
            return None
