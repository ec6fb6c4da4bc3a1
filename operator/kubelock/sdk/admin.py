"""Looking at a lock space, breaking locks and asking holders to give them back: what
`kubelock status|why|graph|unlock|revoke` are made of.

Breaking a lock is an audited act: the ResourceLock is first annotated with who broke it and why,
then deleted with a uid and resourceVersion precondition (so a lock granted afresh, or handed to the
next holder, in between is never hit). The
operator then marks the holder's claim Revoked (LockBroken) and grants the next waiter.

Asking a holder to give a lock back (a revocation request) is the gentler act: the holder's claim is
annotated with who asks, the grace and why (kubelock.dev/revoke-*; only those who may break locks
may write them), the operator records it in the claim's status.revocation with a deadline, the
holder's SDK or `kubelock run` sees it and releases; when the deadline passes first, the operator
breaks the lock (Revoked, RevocationGraceExpired).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from kubelock.api.constants import (
    BREAK_ACTOR_ANNOTATION,
    BREAK_CLAIMS_ANNOTATION,
    BREAK_REASON_ANNOTATION,
    DEFAULT_REVOKE_GRACE_SECONDS,
    GROUP,
    LOCK_PLURAL,
    REVOKE_BY_ANNOTATION,
    REVOKE_GRACE_ANNOTATION,
    REVOKE_REASON_ANNOTATION,
)
from kubelock.domain.reasons import Phase
from kubelock.domain.resource import lock_name, normalise
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.sdk import graph, validation
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import Forbidden, InvalidInput, NotFound, Unreachable, from_api
from kubelock.sdk.model import ClaimInfo, LockInfo

# Not (yet) in kubelock.kube.paths.
MAX_REASON_LENGTH = 1024
MAX_REVOKE_GRACE_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class LockStatus:
    lock: LockInfo
    waiters: int
    stale: bool
    # When the lock's grants end, from their holders' claims (`status.expiresAt`, the expiry the
    # operator enforces); the lock's own `spec.expireTime` may show up to a lease (at most 30 s) later
    # until the first renewal (`kubelock.domain.leasestart`). None: no claim of the lock was listed.
    expires_at: datetime | None = None

    @property
    def ends_at(self) -> datetime | None:
        """The end to show: the holders' when known, else the lock's own."""
        return self.expires_at if self.expires_at is not None else self.lock.expires_at


@dataclass(frozen=True, slots=True)
class Explanation:
    claim: ClaimInfo
    lock: LockInfo | None  # the resource's current lock, whoever holds it
    ahead: tuple[ClaimInfo, ...]  # claims queued before this one


@dataclass(frozen=True, slots=True)
class BrokenLock:
    lock: LockInfo
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    claim: ClaimInfo  # the holder's claim, as annotated
    actor: str
    grace_seconds: int
    reason: str


def check_grace(grace_seconds: object) -> None:
    """The grace of a revocation request: what the admission policy accepts."""
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int) or not (
        0 <= grace_seconds <= MAX_REVOKE_GRACE_SECONDS
    ):
        raise InvalidInput(f"the grace must be a whole number of seconds from 0 to {MAX_REVOKE_GRACE_SECONDS}, "
                           f"not {grace_seconds!r}")


# Unicode categories a reason may not hold, as the admission policies kubelock-break-actor and
# kubelock-revocation-request: controls (Cc), invisible formatting such as bidirectional overrides and
# zero-width characters (Cf), and the line and paragraph separators (Zl, Zp) that break lines in log
# viewers and browsers.
UNPRINTED = frozenset({"Cc", "Cf", "Zl", "Zp"})


def check_reason(reason: str, *, required: bool) -> None:
    """A reason goes into an Event, the claim's message and the operator's log, one line each."""
    if required and (not reason or not reason.strip()):
        raise InvalidInput("a reason is required: say why the lock is broken (it is recorded on the lock)")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"the reason is {len(reason)} characters long; at most {MAX_REASON_LENGTH} are allowed")
    if any(unicodedata.category(c) in UNPRINTED for c in reason):
        raise InvalidInput("the reason must be one line without control characters (newlines, tabs, escapes) or "
                           "invisible ones (line separators, bidirectional overrides, zero-width characters)")


class AsyncAdmin:
    """Read-only views for everyone with `kubelock-viewer`; `break_locks` needs `kubelock-admin`."""

    def __init__(self, client: AsyncLockClient) -> None:
        self.client = client
        self.kube = client.kube

    async def claims(self, namespace: str | None) -> list[ClaimInfo]:
        """Claims of one namespace (None: of all namespaces)."""
        items, _ = await self.client.call(
            f"list claims in {namespace or 'all namespaces'}", self.kube.list_all(paths.claims(namespace))
        )
        return [ClaimInfo.from_body(b) for b in items]

    async def locks(self, namespace: str | None) -> list[LockInfo]:
        items, _ = await self.client.call(
            f"list locks in {namespace or 'all namespaces'}", self.kube.list_all(paths.locks(namespace))
        )
        return [LockInfo.from_body(b) for b in items]

    async def status(self, namespace: str | None) -> list[LockStatus]:
        """The locks of `namespace` (None: of every namespace) and the claims on them. Raises NotFound
        (reason `NamespaceNotFound`) when there is none because the namespace does not exist: the API
        server lists nothing there rather than saying so, and "no locks held" would hide a typo."""
        locks = await self.locks(namespace)
        claims = await self.claims(namespace)
        if namespace is not None and not locks and not claims and await self.namespace_exists(namespace) is False:
            raise NotFound(f"namespace {namespace} does not exist", reason="NamespaceNotFound")
        return summarise(locks, claims)

    async def namespace_exists(self, namespace: str) -> bool | None:
        """Whether `namespace` exists; None when this identity may not read it (kubelock's roles do not
        grant reading namespaces; Kubernetes' `view` does)."""
        try:
            await self.kube.get(paths.namespace(namespace))
        except kube_errors.NotFound:
            return False
        except kube_errors.Forbidden:
            return None
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            raise from_api(error, f"read namespace {namespace}") from error
        return True

    async def explain(self, name_or_uri: str) -> Explanation:
        """Why a claim (by name, or your claim on a URI) is where it is."""
        namespace = self.client.namespace
        if "://" in name_or_uri:
            name = await self.client.claim_name_for(name_or_uri)
        else:
            name = name_or_uri
        try:
            body = await self.kube.get(paths.claims(namespace, name))
        except kube_errors.NotFound:
            if "://" in name_or_uri:  # the claim name was derived: say whose claim on what is missing
                holder = (await self.client.identity()).holder
                raise NotFound(
                    f"you ({holder}) have no claim on {name_or_uri} in namespace {namespace} (its name would be "
                    f"{name}); `kubelock status` lists who holds what"
                ) from None
            raise NotFound(f"no claim {name} in namespace {namespace}") from None
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            raise from_api(error, f"read claim {namespace}/{name}") from error
        claim = ClaimInfo.from_body(body)
        lock: LockInfo | None = None
        try:
            lock = LockInfo.from_body(await self.kube.get(paths.locks(namespace, lock_name(claim.resource))))
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            if not kube_errors.gone(error):
                raise from_api(error, f"read the lock of {claim.resource}") from error
            lock = None
        ahead: tuple[ClaimInfo, ...] = ()
        if claim.phase is Phase.PENDING and claim.queue_position and claim.queue_position > 1:
            others = [c for c in await self.claims(namespace) if c.resource == claim.resource]
            ahead = tuple(
                sorted(
                    (c for c in others if c.phase is Phase.PENDING and (c.queue_position or 0) < claim.queue_position),
                    key=lambda c: c.queue_position or 0,
                )
            )
        return Explanation(claim=claim, lock=lock, ahead=ahead)

    async def graph(self, namespace: str) -> graph.WaitGraph:
        return graph.build(await self.claims(namespace), await self.locks(namespace))

    async def can(self, verb: str, namespace: str | None) -> bool:
        """Whether this identity may `verb` ResourceLocks (SelfSubjectAccessReview)."""
        attributes = {"verb": verb, "group": GROUP, "resource": LOCK_PLURAL}
        if namespace:
            attributes["namespace"] = namespace
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        request = self.kube.create(paths.self_subject_access_review(), body)
        review = await self.client.call("check your permissions", request)
        return bool((review.get("status") or {}).get("allowed"))

    async def break_locks(
        self,
        *,
        reason: str,
        holders: Sequence[str] = (),
        uris: Sequence[str] = (),
        everything: bool = False,
        namespace: str | None = None,
    ) -> list[BrokenLock]:
        """Break the matching locks of one namespace, recording who and why on each first."""
        check_reason(reason, required=True)
        if sum((bool(holders), bool(uris), everything)) != 1:
            raise InvalidInput("name the locks to break: holders, URIs, or everything (exactly one of them)")
        resources = {normalise(validation.resource(u)) for u in uris}
        for holder in holders:
            validation.holder(holder)
        namespace = namespace or self.client.namespace
        actor = await self._lock_admin(namespace, "breaking a lock")
        locks = await self.locks(namespace)
        chosen = select(locks, holders=holders, resources=resources, everything=everything)
        if not chosen:
            raise NotFound(nothing_to_break(namespace, locks, holders=holders, resources=resources))
        broken: list[BrokenLock] = []
        for lock in chosen:
            # Naming holders breaks their grants only, not those of others holding the resource with them.
            only = _grants_of(lock, set(holders)) if holders and normalise(lock.resource) not in resources else None
            done = await self._break(lock, actor, reason, only)
            if done is not None:
                broken.append(BrokenLock(lock=done, actor=actor, reason=reason))
        return broken

    async def _lock_admin(self, namespace: str, doing: str) -> str:
        """This identity's user name, if it may break locks in `namespace` (Forbidden otherwise)."""
        missing = [v for v in ("patch", "delete") if not await self.can(v, namespace)]
        actor = await self.client.whoami()
        if missing:
            raise Forbidden(
                f"{actor} may not {' and '.join(missing)} ResourceLocks in namespace {namespace}: {doing} "
                "needs the kubelock-admin role"
            )
        return actor

    async def request_revocation(
        self,
        uri: str,
        *,
        holders: Sequence[str] = (),
        grace_seconds: int = DEFAULT_REVOKE_GRACE_SECONDS,
        reason: str = "",
        namespace: str | None = None,
    ) -> list[RevocationRequest]:
        """Ask the holders of `uri` (all of them, or those named) to give it back within
        `grace_seconds`; the operator breaks the lock of a holder that has not released by then."""
        check_reason(reason, required=False)
        check_grace(grace_seconds)
        resource = normalise(validation.resource(uri))
        for holder in holders:
            validation.holder(holder)
        namespace = namespace or self.client.namespace
        actor = await self._lock_admin(namespace, "asking a holder to give a lock back")
        held = [
            c for c in await self.claims(namespace)
            if resource in c.resources and c.phase is Phase.HELD and (not holders or c.holder in holders)
        ]
        if not held:
            whose = f" by {', '.join(holders)}" if holders else ""
            raise NotFound(f"{resource} is not held{whose} in namespace {namespace}")
        annotations = {
            REVOKE_BY_ANNOTATION: actor,
            REVOKE_GRACE_ANNOTATION: str(grace_seconds),
            REVOKE_REASON_ANNOTATION: reason,
        }
        asked: list[RevocationRequest] = []
        for claim in held:
            # The uid is a precondition: a claim of the same name made afresh is not asked (the API
            # server refuses the patch as a change of the immutable uid: `other_object`).
            patch = {"metadata": {"uid": claim.uid, "annotations": annotations}}
            try:
                body = await self.kube.patch(paths.claims(namespace, claim.name), patch)
            except (kube_errors.ApiError, kube_errors.Unreachable) as error:
                if kube_errors.gone(error) or kube_errors.other_object(error):
                    continue  # released meanwhile: nothing to ask
                raise from_api(error, f"ask {claim.holder} to give back {resource}") from error
            asked.append(RevocationRequest(ClaimInfo.from_body(body), actor, grace_seconds, reason))
        return asked

    async def _break(
        self, lock: LockInfo, actor: str, reason: str, only: frozenset[str] | None = None
    ) -> LockInfo | None:
        """Break the lock: record who and why, then delete it. With `only` (claim uids of some of its
        grants, not all), record them too and leave the lock: the operator removes those grants.
        Both writes rest on the lock's version: a lock object carries one holder after another (a
        handoff is an update of it), so a version that changed is read again, and the break goes on
        only while the lock still holds the grant that was chosen."""
        path = paths.locks(lock.namespace, lock.name)
        annotations = {BREAK_ACTOR_ANNOTATION: actor, BREAK_REASON_ANNOTATION: reason}
        if only is not None:
            annotations[BREAK_CLAIMS_ANNOTATION] = ",".join(sorted(only))
        current = lock
        for _ in range(5):
            # The token goes with the record: a lock's first write must record it (kubelock.api.fencing).
            patch = {
                "metadata": {"resourceVersion": current.resource_version, "annotations": annotations},
                "spec": current.token_record or {"fencingToken": current.fencing_token},
            }
            try:
                annotated = LockInfo.from_body(await self.kube.patch(path, patch))
                if only is not None:
                    return annotated
                await self.kube.delete(path, uid=lock.uid, resource_version=annotated.resource_version)
            except kube_errors.NotFound:
                return None  # released or expired meanwhile: nothing left to break
            except kube_errors.Conflict:
                # Renewed in between: break the newest version, but only of the same grant.
                fresh = await self._same_grant(path, lock)
                if fresh is None:
                    return None
                current = fresh
                continue
            except (kube_errors.ApiError, kube_errors.Unreachable) as error:
                raise from_api(error, f"break lock {lock.name}") from error
            return annotated
        raise Unreachable(f"lock {lock.name} kept changing while it was being broken; try again")

    async def _same_grant(self, path: str, lock: LockInfo) -> LockInfo | None:
        """The lock at `path` as it is now, if it still holds the first grant of `lock` (None when it
        is gone, or handed to another holder since)."""
        try:
            fresh = LockInfo.from_body(await self.kube.get(path))
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            if kube_errors.gone(error):
                return None
            raise from_api(error, f"read lock {lock.name}") from error
        return fresh if (fresh.uid, fresh.claim_uid) == (lock.uid, lock.claim_uid) else None


def summarise(locks: Iterable[LockInfo], claims: Iterable[ClaimInfo]) -> list[LockStatus]:
    """Each lock with its number of waiters and whether its holder's claim is marked Stale."""
    claims = list(claims)
    waiters: dict[tuple[str, str], int] = {}
    stale: set[tuple[str, str]] = set()
    held_until: dict[str, datetime] = {}  # a held claim's uid: its lease's end
    for claim in claims:
        if claim.held and claim.uid and claim.expires_at is not None:
            held_until[claim.uid] = claim.expires_at
        if claim.phase is Phase.PENDING:  # a claim of several waits for each of its resources
            for resource in claim.resources or (claim.resource,):
                key = (claim.namespace, resource)
                waiters[key] = waiters.get(key, 0) + 1
        if claim.held and claim.stale:
            stale.add((claim.namespace, claim.name))
    out = [
        LockStatus(
            lock=lock,
            waiters=waiters.get((lock.namespace, lock.resource), 0),
            stale=(lock.namespace, lock.claim_name) in stale,
            expires_at=_grants_end(lock, held_until),
        )
        for lock in locks
    ]
    return sorted(out, key=lambda s: (s.lock.namespace, s.lock.resource))


def _grants_end(lock: LockInfo, held_until: dict[str, datetime]) -> datetime | None:
    """When the last grant of `lock` ends by its holder's claim, if every grant's claim is known."""
    uids = [uid for uid, _ in lock.tokens] or ([lock.claim_uid] if lock.claim_uid else [])
    ends = [held_until.get(uid) for uid in uids]
    if not ends or None in ends:
        return None
    return max(end for end in ends if end is not None)


def _grants_of(lock: LockInfo, holders: set[str]) -> frozenset[str] | None:
    """The claim uids of the grants of `lock` that `holders` hold, when others hold it too (None: every
    grant is theirs, so the lock itself is broken)."""
    pairs = list(zip(lock.holders, (uid for uid, _ in lock.tokens), strict=False))
    mine = frozenset(uid for holder, uid in pairs if holder in holders)
    return mine if mine and len(mine) < len(pairs) else None


SHOWN_HOLDERS = 5  # of the namespace's holders, named when none of those asked for holds a lock


def nothing_to_break(
    namespace: str, locks: Sequence[LockInfo], *, holders: Sequence[str], resources: set[str]
) -> str:
    """Why `unlock` found nothing to break, and what to name instead. A holder is matched whole
    (`<identity>/<instance>`): an identity or an instance alone, the natural first guess, matches
    nothing, so the holders present are named."""
    if not holders:
        return f"no lock in namespace {namespace} matches: {', '.join(sorted(resources))} not held"
    text = f"no lock in namespace {namespace} is held by {', '.join(holders)}"
    if any("/" not in holder for holder in holders):
        text += " (name a whole holder, <identity>/<instance>, e.g. user:alice/laptop)"
    present = sorted({h for lock in locks for h in (lock.holders or (lock.holder,))})
    if not present:
        return f"{text}; no lock is held there"
    more = f" and {len(present) - SHOWN_HOLDERS} more" if len(present) > SHOWN_HOLDERS else ""
    return f"{text}; holders there: {', '.join(present[:SHOWN_HOLDERS])}{more} (kubelock status -n {namespace})"


def select(
    locks: Iterable[LockInfo], *, holders: Sequence[str], resources: set[str], everything: bool
) -> list[LockInfo]:
    if everything:
        return sorted(locks, key=lambda lock: lock.resource)
    wanted = set(holders)
    return sorted(
        (
            lock for lock in locks
            if wanted & set(lock.holders or (lock.holder,)) or normalise(lock.resource) in resources
        ),
        key=lambda lock: lock.resource,
    )
