"""The asynchronous lock client: acquire, wait, renew and release through LockClaims.

Every lock operation is a write to the caller's own claim, whose name is derived from (holder,
resource): asking twice for the same resource finds the same claim, so acquire is idempotent and
a retried create can never queue a second claim. Waiting follows the claim through a watch; the
operator's verdict (Held, Rejected, TimedOut, Deadlocked ...) ends the wait.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import itertools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Literal, TypeVar

from pydantic import ValidationError

from kubelock.api import objects
from kubelock.api.constants import (
    API_VERSION,
    CLAIM_KIND,
    HOLDER_HASH_LABEL,
    PROCESS_ANNOTATION,
    RENEW_ANNOTATION,
    REQUEST_ANNOTATION,
)
from kubelock.api.fencing import grant_tokens
from kubelock.api.types import LockClaimSpec, PodRef
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.refusal import RETRY_CLAUSE
from kubelock.domain.resource import digest, lock_name
from kubelock.kube import config, paths
from kubelock.kube import errors as kube_errors
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials, Impersonation
from kubelock.sdk import identity, process, signals, validation
from kubelock.sdk.errors import (
    Deadlock,
    Expired,
    Forbidden,
    HeldByAnotherProcess,
    InvalidInput,
    LockError,
    NotFound,
    Rejected,
    Revoked,
    TimedOut,
    Unreachable,
    from_api,
)
from kubelock.sdk.identity import Identity, UserInfo
from kubelock.sdk.lease import AsyncLease
from kubelock.sdk.listing import holder_claims
from kubelock.sdk.model import (
    AcquireResult,
    Body,
    ClaimInfo,
    GrantInfo,
    LockInfo,
    ReleaseResult,
    RenewResult,
    RevocationInfo,
    format_time,
    parse_time,
)
from kubelock.sdk.targets import Target, Uris, listed
from kubelock.sdk.watching import backoff, follow_claim

EXCLUSIVE, SHARED = "Exclusive", "Shared"  # the modes of a claim (spec.mode)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
MANAGED_BY = "kubelock-sdk"
# How long to wait for the operator's first word on a new claim before calling it unreachable.
DECISION_TIMEOUT = 60.0
# Seconds after its claim was made with no operator's first word before `on_unanswered` is called:
# well above an operator's usual first answer (milliseconds, a second or two on a loaded cluster),
# far below DECISION_TIMEOUT, which a caller would otherwise wait out in silence.
UNANSWERED_NOTICE_SECONDS = 5.0
# After the caller's own wait timeout, how long the operator's TimedOut verdict (which names the
# holder) may take before the client gives up on its own.
TIMEOUT_SLACK = 1.0
CREATE_ATTEMPTS = 4
# How long a delete of one's own claim is tried again while the API server refuses it or cannot be
# reached (see delete_claim).
DELETE_SECONDS = 10.0

log = logging.getLogger("kubelock.sdk")


class AsyncLockClient:
    """Locks for one holder in one namespace (lock space).

    Construct it with no arguments in a pod (see `kubelock.sdk.identity`), or give `kubeconfig`,
    `namespace` and `instance` explicitly (`holder` only as a lock admin acting for someone else).
    Outside a pod, without `instance` or KUBELOCK_INSTANCE, each process is its own instance;
    `generate_instance=False` makes that an error instead. `impersonate` acts as another user (as
    kubectl's --as; the kubeconfig's own `as` otherwise): the identity, and so the holder, is then
    that user's. Use it as an async context manager, or call `close()`.
    """

    def __init__(
        self,
        *,
        namespace: str | None = None,
        holder: str | None = None,
        instance: str | None = None,
        generate_instance: bool = True,
        kubeconfig: str | None = None,
        context: str | None = None,
        credentials: Credentials | None = None,
        impersonate: Impersonation | None = None,
        retries: int = 4,
        request_timeout: float = 30.0,
        decision_timeout: float = DECISION_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if holder is not None:
            validation.holder(holder)
        if instance is not None:
            validation.instance(instance)
        validation.timeout(decision_timeout, "decision_timeout")
        if credentials is None:
            try:
                credentials = config.load(kubeconfig, context)
            except Exception as error:  # a missing or unreadable kubeconfig: never a silent success
                raise Unreachable(f"no Kubernetes API server configured: {error}", reason="NotConfigured") from error
        if impersonate is not None:
            credentials = dataclasses.replace(credentials, impersonate=impersonate)
        self.credentials = credentials
        self.namespace = identity.namespace_from(namespace, credentials.namespace, env)
        self.decision_timeout = decision_timeout
        self.kube = KubeClient(credentials, timeout=request_timeout, retries=retries, user_agent="kubelock-sdk")
        self._holder = holder
        self._instance = instance
        self._generate_instance = generate_instance
        self._env = env
        self._identity: Identity | None = None
        self._identity_lock = asyncio.Lock()
        self._renewals = itertools.count(1)
        # The last state this client saw of each claim it holds, by claim name: `release` deletes
        # exactly that version without reading the claim first (see _release_seen).
        self._seen: dict[str, ClaimInfo] = {}
        # Claims this client gave up on (a wait that timed out, failed or was stopped) but could not
        # delete, by "namespace/name": what the caller is told instead of "nothing is left queued".
        self.unwithdrawn: dict[str, str] = {}

    async def __aenter__(self) -> AsyncLockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.kube.close()

    # ---- identity ---------------------------------------------------------------------------

    async def identity(self) -> Identity:
        """The holder, namespace and pod this client acts as (resolved once)."""
        async with self._identity_lock:
            if self._identity is None:
                self._identity = await identity.resolve(
                    self.kube,
                    holder=self._holder,
                    namespace=self.namespace,
                    instance=self._instance,
                    generate_instance=self._generate_instance,
                    env=self._env,
                )
            return self._identity

    async def whoami(self) -> str:
        """The authenticated user name, as the API server sees it."""
        return await identity.whoami(self.kube)

    async def who(self) -> UserInfo:
        """The authenticated user as the API server sees it, with the identity holders begin with."""
        return await identity.user_info(self.kube)

    async def claim_name_for(self, uri: Uris) -> str:
        """The name of your claim on `uri` (or on a list of URIs taken together)."""
        target = Target.of(uri)
        return target.claim_name((await self.identity()).holder)

    # ---- acquire ----------------------------------------------------------------------------

    async def try_acquire(
        self, uri: Uris, ttl: int | None = None, *, mode: str = EXCLUSIVE, permits: int = 1,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> AcquireResult:
        """Take the lock if it is free (in `mode`, with `permits`); never waits. `ok` is False when
        another holder has it. A list of URIs: all of them or none (see `acquire_all`).
        `on_unanswered` as for `acquire`."""
        target = Target.of(uri)
        try:
            return await self.acquire(uri, wait=False, ttl=ttl, mode=mode, permits=permits,
                                      on_unanswered=on_unanswered)
        except Rejected as rejected:
            if rejected.reason != Reason.HELD_BY_ANOTHER.value:
                raise
            ident = await self.identity()
            return AcquireResult(
                ok=False,
                resource=target.label,
                holder=rejected.holder,
                namespace=ident.namespace,
                claim_name=target.claim_name(ident.holder),
                held_since=parse_time(rejected.held_since),
                message=rejected.message,
                resources=target.resources,
            )

    async def try_acquire_all(
        self, uris: Sequence[str], ttl: int | None = None, *, mode: str = EXCLUSIVE, permits: int = 1
    ) -> AcquireResult:
        """`try_acquire` of several resources at once: all of them, or none (`ok` False)."""
        return await self.try_acquire(listed(uris), ttl, mode=mode, permits=permits)

    async def acquire(
        self,
        uri: Uris,
        *,
        wait: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (sent to the operator as waitTimeoutSeconds)
        ttl: int | None = None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> AcquireResult:
        """Take the lock, waiting in the queue (first come, first served) when `wait` is true.

        `mode`: "Exclusive" (default) or "Shared" (held together with every other Shared holder, never
        with an Exclusive one). `permits`: how many of the resource's permits an Exclusive claim takes
        (the resource's capacity is 1 unless a LockPolicy sets more).

        `on_update` is called with the claim each time its state changes while it waits (its queue
        position and the holder ahead), e.g. to show progress. `priority` (-1000..1000) orders the
        queue: higher first, aged while waiting; above 0 needs the RBAC verb `prioritize`.

        `on_unanswered` is called once with the claim when no operator has acted on it
        UNANSWERED_NOTICE_SECONDS after it was made (none running, or none watching its namespace),
        e.g. to say so rather than wait out `decision_timeout` in silence.

        Raises Rejected (held by another, with `wait=False`), TimedOut, Deadlock, Forbidden,
        InvalidInput or Unreachable; returns only when the lock is held.

        A list of URIs asks for all of them in one claim (see `acquire_all`).
        """
        return _acquired(
            await self.acquire_claim(
                uri, wait=wait, timeout=timeout, ttl=ttl, on_update=on_update, mode=mode, permits=permits,
                priority=priority, on_unanswered=on_unanswered,
            )
        )

    async def acquire_all(
        self,
        uris: Sequence[str],
        *,
        wait: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (as acquire)
        ttl: int | None = None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        priority: int = 0,
    ) -> AcquireResult:
        """Take every resource of `uris` (1-16) at once, in one claim, or none of them.

        The claim is granted only when every resource can be granted together; while it waits it
        holds none of them (so it is never part of a deadlock as a holder). Mode and permits apply
        to each resource. The result has one grant, with its own fencing token, per resource
        (`grants`, `fencing_tokens`). Raises as `acquire`.
        """
        return await self.acquire(listed(uris), wait=wait, timeout=timeout, ttl=ttl, on_update=on_update,
                                  mode=mode, permits=permits, priority=priority)

    async def acquire_claim(
        self,
        uri: Uris,
        *,
        wait: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 (as acquire)
        ttl: int | None = None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> ClaimInfo:
        """As `acquire`, returning the Held claim itself (the building block of `lock`)."""
        target = Target.of(uri).to_claim()
        validation.need(mode, permits)
        wait = validation.flag(wait, "wait")
        priority = validation.priority(priority)
        ttl = validation.ttl(ttl)
        timeout = validation.timeout(timeout)
        if timeout is not None and not wait:
            raise InvalidInput("timeout only applies when waiting (wait=True)")
        ident = await self.identity()
        async with signals.cancelling():  # SIGTERM/SIGHUP: withdraw, then end the process (see sdk.signals)
            info = await self._claim(
                ident, target, wait=wait, wait_timeout=timeout, ttl=ttl, on_update=on_update, mode=mode,
                permits=permits, priority=priority, on_unanswered=on_unanswered,
            )
        if info.phase is Phase.PENDING:  # a try-lock that found an earlier waiting claim of ours
            raise Rejected(
                f"{info.label} is held by {info.current_holder}; you already wait for it "
                f"(position {info.queue_position})",
                holder=info.current_holder,
            )
        self._seen[info.name] = info
        return info

    async def _claim(
        self,
        ident: Identity,
        target: Target,
        *,
        wait: bool,
        wait_timeout: float | None,
        ttl: int | None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> ClaimInfo:
        resource = target.label
        name = target.claim_name(ident.holder)
        body = self._claim_body(
            ident, name, target, wait=wait, ttl=ttl, wait_timeout=wait_timeout, mode=mode, permits=permits,
            priority=priority,
        )
        for _ in range(CREATE_ATTEMPTS):
            try:
                created = await self.kube.create(paths.claims(ident.namespace), body, fieldValidation="Strict")
                info, fresh = ClaimInfo.from_body(created), True
            except asyncio.CancelledError:
                # The claim may have been made although its answer never came (a signal, Ctrl-C):
                # withdraw it, or the operator would grant it to nobody.
                await asyncio.shield(self._withdraw_unanswered(ident.namespace, name, body))
                raise
            except kube_errors.Unreachable as error:  # the same for an answer lost to a timeout
                note = await self._withdraw_unanswered(ident.namespace, name, body)
                raise _noted(from_api(error, f"create claim {name} for {resource}"), note) from error
            except kube_errors.Conflict as error:
                if not error.already_exists:
                    raise from_api(error, f"create claim {name}") from error
                existing = await self._own_claim(ident, target)
                if existing is None:
                    continue  # deleted in between: create again
                info, fresh = existing, False
                if not info.terminal:
                    _refuse_other_process(info)
                if not info.terminal and (info.mode, info.permits) != (mode, permits):
                    raise InvalidInput(
                        f"you already have claim {name} on {resource} ({info.mode}, {info.permits} permit(s)), "
                        f"not {mode} with {permits}: release it first"
                    ) from None
                if info.terminal:
                    # A finished record of an earlier attempt: replace it (only that very object).
                    await self.delete_claim(info, quiet=True)
                    continue
                if wait and info.lease_over(self._server_now()):
                    # An earlier attempt's grant whose lease has run out before the operator said
                    # so (its holder gone, the operator busy or cut off from etcd). Adopted, it
                    # would answer this wait with that lease's `Expired`, and the waiter would not
                    # wait: delete it (only that very object) and wait afresh. A try-lock is still
                    # told (`LeaseExpired`, the record removed): asking again is how an agent checks
                    # that it still holds, and the gap must not pass unseen.
                    await self.delete_claim(info, quiet=True)
                    continue
                adopted = await self._adopt(ident, target, info)
                if adopted is None:
                    continue  # deleted or replaced while adopting: start again
                info = adopted
                if info.held_at(self._server_now()) or (info.phase is Phase.PENDING and not wait):
                    return await self._checked(info, adopted=True)
            except kube_errors.ApiError as error:
                raise from_api(error, f"create claim {name} for {resource}") from error
            decided = await self._await_decision(info, wait=wait, wait_timeout=wait_timeout, on_update=on_update,
                                                 on_unanswered=on_unanswered)
            if not fresh and decided.terminal and decided.wait != wait:
                # We adopted someone's claim of ours with other terms (try vs wait): ask again on ours.
                await self.delete_claim(decided, quiet=True)
                continue
            if decided.terminal:
                raise await self.error_for(decided)
            try:
                return await self._checked(decided, adopted=not fresh)
            except BaseException as error:
                if fresh:  # granted during this call, and the caller will not learn of it: give it back
                    _noted(error, await asyncio.shield(self._withdraw(decided)))
                raise
        raise Unreachable(f"claim {name} kept being replaced while acquiring {resource}; try again")

    async def _adopt(self, ident: Identity, target: Target, info: ClaimInfo) -> ClaimInfo | None:
        """Make this process the maker of a claim of its instance that it takes over (its maker has
        ended, or cannot be checked from here): the process mark is rewritten to this process's, so
        that a sibling of the instance may no more renew or release the adopted lock than it may the
        lock of a process that made its own claim (sdk.process).

        One write, preconditioned on the version read: of two processes adopting at once, one
        writes, the other's write conflicts, and reading the claim again it finds the winner's mark
        naming a live process, and is refused (`HeldByAnotherProcess`, "not adopted"). A conflict
        from any other write (a verdict, a renewal) is retried on the claim as it now is. The
        fencing token, the grant and the lease are the claim's as before: only the annotation
        changes, which the operator does not read. None when the claim was deleted or replaced
        meanwhile (the caller starts again)."""
        own = process.current()
        raced = False
        for _ in range(CREATE_ATTEMPTS):
            _refuse_other_process(info, doing="adopt" if raced else "acquire")
            if own is None or info.process == str(own):
                return info  # nothing to write: no mark of this process can be made, or it is already its
            patch: Body = {"metadata": {"resourceVersion": info.resource_version,
                                        "annotations": {PROCESS_ANNOTATION: str(own)}}}
            try:
                body = await self.kube.patch(paths.claims(info.namespace, info.name), patch)
            except kube_errors.Conflict:
                again = await self._own_claim(ident, target)
                if again is None or again.uid != info.uid or again.terminal:
                    return None
                info, raced = again, True
                continue
            except (kube_errors.ApiError, kube_errors.Unreachable) as error:
                if kube_errors.gone(error):
                    return None
                raise from_api(error, f"adopt claim {info.namespace}/{info.name}") from error
            return ClaimInfo.from_body(body)
        raise Unreachable(f"claim {info.name} kept changing while adopting it for {info.label}; try again")

    async def _withdraw_unanswered(self, namespace: str, name: str, sent: Body) -> str | None:
        """Delete the claim `sent` if a create made it: the request mark tells it from an older claim.
        What could not be done is noted (see `_withdraw`) and returned."""
        mark = sent["metadata"]["annotations"][REQUEST_ANNOTATION]
        spec = sent.get("spec") or {}
        resource = str(spec.get("resource") or ", ".join(spec.get("resources") or ()))
        try:
            body = await self.kube.get(paths.claims(namespace, name))
        except kube_errors.NotFound:
            return None  # never made
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            return self._not_withdrawn(namespace, name, resource, str(error), made="may have been made and")
        if ((body.get("metadata") or {}).get("annotations") or {}).get(REQUEST_ANNOTATION) == mark:
            return await self._withdraw(ClaimInfo.from_body(body))
        return None

    async def _withdraw(self, info: ClaimInfo) -> str | None:
        """Delete a claim given up on (a wait that timed out, failed or was stopped, a grant nobody
        will learn of). When that fails (the API server away, the credentials refused or lapsed) the
        claim stays queued, and may be granted to nobody until its wait timeout or lease ends: that
        is returned as a sentence for the caller's error, kept in `unwithdrawn` and logged, never
        passed over as if nothing were left."""
        try:
            await self.delete_claim(info)
        except LockError as error:
            return self._not_withdrawn(info.namespace, info.name, info.label, error.message)
        return None

    def _not_withdrawn(self, namespace: str, name: str, resource: str, why: str, *, made: str = "") -> str:
        note = (f"claim {namespace}/{name} {made + ' ' if made else ''}was not withdrawn ({why}): it stays queued "
                f"for {resource}, may be granted to nobody, and ends with its wait timeout or lease; release it "
                "once the API server answers")
        self.unwithdrawn[f"{namespace}/{name}"] = note
        log.warning("%s", note)
        return note

    async def _checked(self, info: ClaimInfo, *, adopted: bool) -> ClaimInfo:
        """Fail closed: a Held claim counts only while its lease lasts, and a claim found rather than
        made here (an earlier acquire of this instance) only if its lock still names it."""
        if info.phase is Phase.PENDING:
            return info
        if not info.held_at(self._server_now()):
            await self.delete_claim(info, quiet=True)  # an expired lease is no lock: leave no record behind
            raise await self.error_for(info)
        if adopted:
            await self._confirm_lock(info)
        return info

    async def _confirm_lock(self, info: ClaimInfo) -> None:
        """Every grant of the claim must still be on its resource's lock: losing any is losing all."""
        grants = info.held_grants or (GrantInfo(info.resource, "", info.fencing_token or 0),)
        missing = set(info.resources) - {g.resource for g in grants}
        if missing:  # a claim is never held with part of its set
            raise Revoked(f"claim {info.name} has no grant on {', '.join(sorted(missing))}: not held",
                          reason=Reason.LOCK_BROKEN.value)
        for grant in grants:
            await self._confirm_grant(info, grant.resource, grant.lock_name or lock_name(grant.resource),
                                      grant.fencing_token)

    async def _confirm_grant(self, info: ClaimInfo, resource: str, name: str, token: int) -> None:
        try:
            body = await self.kube.get(paths.locks(info.namespace, name))
        except kube_errors.NotFound:
            raise Revoked(
                f"claim {info.name} says it holds {resource}, but its lock {name} is gone (broken or "
                "expired while the operator could not say so): not held",
                reason=Reason.LOCK_BROKEN.value,
            ) from None
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            raise from_api(error, f"read lock {info.namespace}/{name}") from error
        lock = LockInfo.from_body(body)
        # The claim's own grant among the lock's (a Shared or semaphore lock has several).
        grant = next((g for g in objects.LockObject.parse(body).spec.every_grant if g.claim_uid == info.uid), None)
        recorded = grant_tokens(body).get(info.uid)
        # Token 0: the operator writes the lock's token right after creating it, alongside the claim's
        # Held status, so for an instant the claim may know the token before the lock does.
        if grant is None or recorded not in (0, token):
            raise Revoked(
                f"claim {info.name} says it holds {resource} with fencing token {token}, but the "
                f"lock now belongs to {lock.holder} (token {lock.fencing_token}): not held",
                reason=Reason.LOCK_BROKEN.value,
            )
        # Past for certain by the API server's clock: a machine whose clock runs fast must not take a
        # fresh grant for an ended one.
        if grant.expires_at is None or grant.expires_at.timestamp() <= self.kube.server_clock.earliest_now():
            raise Expired(f"the lease on {resource} ran out at {format_time(grant.expires_at)}: not held",
                          reason=Reason.LEASE_EXPIRED.value)

    def _claim_body(
        self,
        ident: Identity,
        name: str,
        target: Target,
        *,
        wait: bool,
        ttl: int | None,
        wait_timeout: float | None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        priority: int = 0,
    ) -> Body:
        try:
            spec = LockClaimSpec(
                resource=None if target.several else target.uris[0],
                resources=list(target.uris) if target.several else None,
                holder=ident.holder,
                wait=wait,
                ttl_seconds=ttl,
                priority=priority,
                wait_timeout_seconds=math.ceil(wait_timeout) if wait_timeout is not None else None,
                pod_ref=PodRef(name=ident.pod_name, uid=ident.pod_uid) if ident.pod_name else None,
                mode=mode,  # checked by the model (Exclusive or Shared)
                permits=permits,
            )
        except ValidationError as error:
            raise InvalidInput(f"invalid lock request: {_first_error(error)}") from None
        # Fields at their defaults are left out: an exclusive claim is the same object as ever, and a
        # cluster whose CRD predates the holder-policy fields still accepts it (strict field validation).
        fields = spec.model_dump(
            by_alias=True, exclude_none=True, mode="json",
            exclude={f for f in ("priority", "on_busy") if f not in spec.model_fields_set},
        )
        if (spec.mode, spec.permits) == (EXCLUSIVE, 1):
            del fields["mode"], fields["permits"]
        metadata: Body = {
            "name": name,
            "namespace": ident.namespace,
            "labels": {HOLDER_HASH_LABEL: digest(ident.holder), "app.kubernetes.io/managed-by": MANAGED_BY},
            # Which create made the claim: lets an acquire interrupted before the answer find its own.
            "annotations": {REQUEST_ANNOTATION: secrets.token_hex(8)},
        }
        made_by = process.current()
        if made_by is not None:  # which process made it: another live one must not adopt it (sdk.process)
            metadata["annotations"][PROCESS_ANNOTATION] = str(made_by)
        if ident.pod_name and ident.pod_uid:
            # The garbage collector removes the claim with its pod even when the operator is down.
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": ident.pod_name, "uid": ident.pod_uid}
            ]
        return {
            "apiVersion": API_VERSION,
            "kind": CLAIM_KIND,
            "metadata": metadata,
            "spec": fields,
        }

    async def _await_decision(
        self,
        info: ClaimInfo,
        *,
        wait: bool,
        wait_timeout: float | None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> ClaimInfo:
        """Follow the claim until it is Held or terminal (or Pending, for a try-lock). On timeout,
        error or cancellation the claim is deleted: nobody is left queued unawares."""
        loop = asyncio.get_running_loop()
        # A timer rather than a timeout on the watch: a timeout would cancel the watch's generator.
        notice = None
        if on_unanswered is not None and info.phase is None:
            notice = loop.call_later(UNANSWERED_NOTICE_SECONDS, tell_unanswered, on_unanswered, info)
        started = loop.time()
        wait_deadline = None if wait_timeout is None else started + wait_timeout + TIMEOUT_SLACK
        decision_deadline = started + self.decision_timeout
        state = info
        # What the last refusal (LockRefused) said. A caller that follows the wait (`on_update`) sees it
        # there (`ClaimInfo.refused`); one that does not is told by a warning, once per episode.
        refused: str | None = None
        try:
            stream = follow_claim(self.kube, state.namespace, state.name, state.resource_version)
            async with contextlib.aclosing(stream) as states:
                while not _settled(state, wait):
                    if state.refused is not None and refused is None and on_update is None:
                        log.warning("waiting for %s: %s", state.label, state.refused)
                    refused = state.refused
                    if on_update is not None and state.phase is not None:
                        on_update(state)
                    deadline = decision_deadline if state.phase is None else math.inf
                    if wait_deadline is not None:
                        deadline = min(deadline, wait_deadline)
                    try:
                        async with asyncio.timeout(None if deadline == math.inf else deadline - loop.time()):
                            body = await anext(states)
                    except TimeoutError:
                        raise self._silence(state, wait_deadline, wait_timeout, loop.time()) from None
                    if body is None:
                        raise NotFound(f"claim {state.name} was deleted while waiting for {state.label}")
                    state = ClaimInfo.from_body(body)
                    if notice is not None and state.phase is not None:
                        notice.cancel()  # the operator's first word came
        except BaseException as error:
            # Timed out, failed or cancelled (Ctrl-C): leave the queue, or give back a grant that
            # arrived too late for anyone to learn of it.
            _noted(error, await asyncio.shield(self._withdraw(state)))
            raise
        finally:
            if notice is not None:
                notice.cancel()
        return state

    def _silence(
        self, state: ClaimInfo, wait_deadline: float | None, wait_timeout: float | None, now: float
    ) -> LockError:
        if wait_deadline is not None and now >= wait_deadline:
            refused = state.refused
            return TimedOut(
                f"gave up after waiting {wait_timeout or 0:g}s for {state.label}"
                + (f" (held by {state.current_holder})" if state.current_holder else "")
                + (f"; not granted because {refused.split(RETRY_CLAUSE)[0]}" if refused else "")
                # A wait shorter than the decision timeout that no operator ever looked at: it was not
                # queued behind anyone, and "gave up" alone would hide that nothing answers claims.
                + ("" if state.phase is not None else
                   f"; no kubelock operator acted on claim {state.namespace}/{state.name} in that time: "
                   f"is the operator running and watching namespace {state.namespace}?"),
                holder=state.current_holder,
            )
        return Unreachable(
            f"no kubelock operator acted on claim {state.namespace}/{state.name} within "
            f"{self.decision_timeout:g}s; is the operator running and watching namespace {state.namespace}?",
            reason="OperatorUnavailable",
        )

    def _server_now(self) -> float:
        """The earliest the API server's clock can read now: a lease's end before it is past for
        certain, however far this machine's clock is off (`kube.serverclock`)."""
        return self.kube.server_clock.earliest_now()

    async def error_for(self, info: ClaimInfo) -> LockError:
        reason = info.reason or ""
        message = info.message or f"claim {info.name} is {info.phase}"
        if info.deleting:  # released at the delete request, though a finalizer keeps the object
            return Revoked(f"claim {info.name} was deleted: its lock on {info.label} was released when its deletion "
                           "was asked for (a finalizer keeps the object for now)", reason=Reason.RELEASED.value)
        # Held with part of its set: never held
        if info.phase is Phase.HELD and not info.lease_over(self._server_now()):
            missing = sorted(set(info.resources) - {g.resource for g in info.grants})
            return Revoked(f"claim {info.name} is Held without a grant on {', '.join(missing)}: a claim of several "
                           "resources holds all of them or none, so it holds none", reason=Reason.LOCK_BROKEN.value)
        if info.phase is Phase.HELD:  # Held, but its lease has run out: the operator has not said so yet
            return Expired(
                f"the lease on {info.label} ran out at {format_time(info.expires_at)} and the operator has not "
                "answered since (is it running?): not held",
                reason=Reason.LEASE_EXPIRED.value,
            )
        if info.phase is Phase.REJECTED:
            if reason == Reason.INVALID_SPEC.value:
                return InvalidInput(message, reason=reason)
            if reason == Reason.LOCK_REFUSED.value:  # the API server refused the operator's grant
                return Forbidden(message, reason=reason)
            since = None
            if reason == Reason.HELD_BY_ANOTHER.value:
                since = await self._held_since(info)
            return Rejected(message, holder=info.current_holder, held_since=since, reason=reason)
        if info.phase is Phase.TIMED_OUT:
            return TimedOut(message, holder=info.current_holder, reason=reason)
        if info.phase is Phase.DEADLOCKED:
            return Deadlock(info.cycle or (), reason=reason, message=message)
        if info.phase is Phase.EXPIRED:
            return Expired(message, reason=reason)
        return Revoked(message, reason=reason or None)

    async def _held_since(self, info: ClaimInfo) -> str | None:
        """When the other holder acquired the resource (best effort: it may be gone already). Of a
        claim of several: the first of its resources that holder holds."""
        for resource in sorted(info.resources or (info.resource,)):
            try:
                body = await self.kube.get(paths.locks(info.namespace, lock_name(resource)))
            except (kube_errors.ApiError, kube_errors.Unreachable):
                continue
            lock = LockInfo.from_body(body)
            if not info.current_holder or lock.holder == info.current_holder:
                return _rfc3339(body, "acquireTime")
        return None

    # ---- release, renew, inspect ------------------------------------------------------------

    async def release(self, uri: Uris) -> ReleaseResult:
        """Release the lock (or leave the queue). Raises NotFound when you hold nothing on `uri`,
        Expired/Revoked when the lock had been lost before (the record is removed either way).
        A list of URIs releases the claim of all of them (taken with `acquire_all`/`lock_all`)."""
        target = Target.of(uri)
        ident = await self.identity()
        resource = target.label
        info, unsure = await self._release_seen(target.claim_name(ident.holder))
        if info is None:
            info = await self._own_claim(ident, target)
            if info is None and unsure is not None:
                info = unsure  # gone: the delete whose answer was lost went through
            elif info is None:
                raise _nothing_held(ident, target)
            else:
                if not info.terminal:
                    # Another live process of this instance (the one `kubelock run` started, a second
                    # container's, a sibling given the same instance) must not end the lock its
                    # maker holds and goes on using: only the maker releases it, or its end does.
                    _refuse_other_process(info, doing="release")
                await self.delete_claim(info)
        if info.phase in (None, Phase.PENDING) or info.held_at(self._server_now()):
            return ReleaseResult(resource=resource, claim_name=info.name, previous_phase=info.phase,
                                 resources=target.resources)
        if info.phase in (Phase.EXPIRED, Phase.REVOKED, Phase.HELD):
            raise await self.error_for(info)
        raise NotFound(f"you ({ident.holder}) did not hold {resource}: your last claim ended {_ending(info)}")

    async def _release_seen(self, name: str) -> tuple[ClaimInfo | None, ClaimInfo | None]:
        """Delete the claim `name` if it is still exactly as this client last saw it (same uid and
        resourceVersion, as the acquire returned it): that state is then the claim's last, and no
        read is needed to know how the release ends. Returns (that state, None) when it was deleted.

        (None, None) when there is no such state, or the claim changed since (a verdict, a renewal)
        or is gone; (None, state) when the delete failed without saying whether it went through (no
        answer, 5xx: it is not retried, since a retry of a delete that went through would answer
        404 and hide that). Either way the caller reads the claim and deletes what it finds, as for
        a claim never seen."""
        seen = self._seen.pop(name, None)
        if seen is None or not seen.uid or not seen.resource_version:
            return None, None
        try:
            await self.kube.delete(paths.claims(seen.namespace, name), uid=seen.uid,
                                   resource_version=seen.resource_version, retry=False)
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            unanswered = kube_errors.transient(error) and getattr(error, "status", 0) != 429
            return None, seen if unanswered else None
        return seen, None

    async def heartbeat(self, uri: Uris, *, confirm: bool = True) -> RenewResult:
        """Renew the lease: it then lasts ttl seconds from the moment the operator sees this.

        With `confirm` (the default) waits until the operator has acted on the renewal and returns
        the new expiry. Raises Expired/Revoked if the lock was lost, NotFound if not held. A list of
        URIs renews the claim of all of them: one renewal renews every grant.
        """
        target = Target.of(uri)
        ident = await self.identity()
        resource = target.label
        name = target.claim_name(ident.holder)
        for _ in range(CREATE_ATTEMPTS):
            info = await self._own_claim(ident, target)
            if info is None:
                raise _nothing_held(ident, target)
            if not info.held_at(self._server_now()):
                raise await self._not_held(info)
            # A renewal tells the caller it holds the lock (and its fencing token), and keeps alive a
            # lease that stands for the process that made the claim: another live process of this
            # instance renews it no more than it adopts or releases it.
            _refuse_other_process(info, doing="renew")
            marker = self.renewal_marker()
            try:
                patched = await self.renew_claim(info, marker, conditional=True)
            except kube_errors.Conflict:
                continue  # the claim changed since it was read (a renewal or a verdict): read it again
            if patched.deleting:  # the patch of a claim being deleted is admitted, and renews nothing
                raise await self._not_held(patched)
            if not confirm:
                return _renewed(patched, confirmed=False)
            return await self._await_renewal(patched)
        raise Unreachable(f"claim {name} kept changing while renewing {resource}; try again")

    def renewal_marker(self) -> str:
        # Any new value renews; a readable time plus a counter keeps two renewals in one
        # microsecond distinct.
        return f"{time.time():.6f}-{next(self._renewals)}"

    async def renew_claim(self, info: ClaimInfo, marker: str, *, conditional: bool) -> ClaimInfo:
        """Write a new renewal marker on the claim. With `conditional`, only onto the version read
        (kube Conflict otherwise), so a verdict written in between is never overlooked.

        Always only onto the claim read (its uid): a claim's name is derived from its holder and
        resource, so once it ended, the next claim of this instance on the resource has its name. A
        lease that has not heard of the end yet must not renew that claim, another grant with
        another fencing token (the API server refuses a merge patch whose uid is not the object's:
        `metadata.uid` is immutable, 422); it is told NotFound, as for a claim gone."""
        meta: Body = {"annotations": {RENEW_ANNOTATION: marker}}
        if info.uid:
            meta["uid"] = info.uid
        if conditional:
            meta["resourceVersion"] = info.resource_version
        try:
            body = await self.kube.patch(paths.claims(info.namespace, info.name), {"metadata": meta})
        except kube_errors.Conflict:
            raise
        except kube_errors.Invalid as error:
            if not kube_errors.other_object(error):
                raise from_api(error, f"renew the lock on {info.label}") from error
            raise NotFound(
                f"claim {info.name} for {info.label} no longer exists: the claim of that name now is another "
                f"(the one renewed, uid {info.uid}, ended)"
            ) from error
        except kube_errors.NotFound as error:
            raise NotFound(f"claim {info.name} for {info.label} no longer exists") from error
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            raise from_api(error, f"renew the lock on {info.label}") from error
        return ClaimInfo.from_body(body)

    async def _await_renewal(self, info: ClaimInfo) -> RenewResult:
        state = info
        try:
            async with asyncio.timeout(self.decision_timeout):
                stream = follow_claim(self.kube, state.namespace, state.name, state.resource_version)
                async with contextlib.aclosing(stream) as states:
                    # Done once the operator has acted on the annotation as it now reads: ours, or a
                    # later renewal (another heartbeat of this holder), which extends the lease further.
                    while state.held_at(self._server_now()) and (
                        state.observed_renew != state.renew_request or state.renew_request is None
                    ):
                        body = await anext(states)
                        if body is None:
                            raise Revoked(f"claim {state.name} was deleted", reason=Reason.RELEASED.value)
                        state = ClaimInfo.from_body(body)
        except TimeoutError:
            raise Unreachable(
                f"no kubelock operator confirmed the renewal of {state.label} within "
                f"{self.decision_timeout:g}s; the lease may run out",
                reason="OperatorUnavailable",
            ) from None
        if not state.held_at(self._server_now()):
            raise await self._not_held(state)
        if state.name in self._seen:
            self._seen[state.name] = state
        return _renewed(state, confirmed=True)

    async def _not_held(self, info: ClaimInfo) -> LockError:
        if info.phase in (Phase.EXPIRED, Phase.REVOKED, Phase.HELD):
            return await self.error_for(info)
        if info.phase is Phase.PENDING:
            return NotFound(
                f"you do not hold {info.label} yet: you wait at position {info.queue_position} "
                f"behind {info.current_holder}",
                reason="NotHeld",
            )
        state = f"ended {_ending(info)}" if info.phase else "not been decided yet"
        return NotFound(f"you do not hold {info.label}: your claim has {state}", reason="NotHeld")

    async def get(self, uri: Uris) -> ClaimInfo:
        """Your claim on `uri` (or on a list of URIs taken together) as it is now. Raises NotFound
        when there is none."""
        target = Target.of(uri)
        ident = await self.identity()
        info = await self._own_claim(ident, target)
        if info is None:
            raise NotFound(f"you ({ident.holder}) have no claim on {target.label} in namespace {ident.namespace}")
        return info

    async def list(self, *, all_instances: bool = False) -> builtins.list[ClaimInfo]:
        """Your own claims in this namespace (held, waiting and finished records); with
        `all_instances`, those of every instance of your identity (no instance needs to be known)."""
        if all_instances:
            mine = (await self.who()).identity + "/"
            listing = self.kube.list_all(paths.claims(self.namespace))
            listed = await self.call(f"list claims in {self.namespace}", listing)
            found = [ClaimInfo.from_body(b) for b in listed[0]]
            return sorted((c for c in found if c.holder.startswith(mine) and "/" not in c.holder[len(mine):]),
                          key=lambda c: (c.resource, c.holder, c.name))
        ident = await self.identity()
        # Selected by `spec.holder`, not by the SDK's holder-hash label, which the claims of this
        # holder written as YAML (kubectl apply) lack (`listing`).
        selected = holder_claims(self.kube, ident.namespace, ident.holder)
        bodies = await self.call(f"list your claims in {ident.namespace}", selected)
        return sorted((ClaimInfo.from_body(b) for b in bodies), key=lambda c: (c.resource, c.name))

    def lock(
        self,
        uri: Uris,
        *,
        ttl: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_lost: Callable[[LockError], object] | None = None,
        renew_deadline: float | None = None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        on_revocation: Callable[[RevocationInfo], object] | None = None,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> AsyncLease:
        """`async with client.lock(uri) as lease:` — acquire, renew in the background, release on exit.
        With `renew_deadline` (seconds, less than `ttl`) the lease is lost when no renewal was accepted
        within it, before the TTL runs out. `mode` and `permits` as for `acquire`. `on_revocation` is
        called when the holder is asked to give the lock back (see `AsyncLease.revocation_requested`).
        `on_unanswered` as for `acquire`; by default (None) a warning is logged, once, on the
        `kubelock.sdk` logger (`warn_unanswered`): without it a block entered with no operator running
        waits out `decision_timeout` in silence. Pass `lambda claim: None` for silence."""
        return AsyncLease(self, uri, ttl=ttl, wait=wait, timeout=timeout, on_lost=on_lost,
                          renew_deadline=renew_deadline, mode=mode, permits=permits,
                          on_revocation=on_revocation, priority=priority,
                          on_unanswered=warn_unanswered if on_unanswered is None else on_unanswered)

    def lock_all(
        self,
        uris: Sequence[str],
        *,
        ttl: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_lost: Callable[[LockError], object] | None = None,
        renew_deadline: float | None = None,
        mode: str = EXCLUSIVE,
        permits: int = 1,
        on_revocation: Callable[[RevocationInfo], object] | None = None,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> AsyncLease:
        """`async with client.lock_all([uri1, uri2]) as lease:` — every resource at once or none (see
        `acquire_all`), renewed, watched and released as one. `lease.fencing_tokens` gives each
        resource's token (`lease.fencing_token` is None for several); losing any grant loses the lease.
        Other arguments as for `lock`."""
        return self.lock(listed(uris), ttl=ttl, wait=wait, timeout=timeout, on_lost=on_lost,
                         renew_deadline=renew_deadline, mode=mode, permits=permits, on_revocation=on_revocation,
                         priority=priority, on_unanswered=on_unanswered)

    # ---- helpers ----------------------------------------------------------------------------

    async def call(self, doing: str, awaitable: Awaitable[T]) -> T:
        """Await a Kubernetes request, turning its failure into the SDK's error."""
        try:
            return await awaitable
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            raise from_api(error, doing) from error

    async def _own_claim(self, ident: Identity, target: Target) -> ClaimInfo | None:
        """The claim at this holder's conventional name for `resource`, or None.

        Anyone who may create claims in the namespace can create one under that name first. Such a
        claim is someone else's: adopting it would report their lock as ours, and releasing it would
        delete it. It is refused instead, naming who made it.
        """
        name = target.claim_name(ident.holder)
        resource = target.label
        info = await self._get_claim(ident.namespace, name)
        if info is not None and (info.holder != ident.holder or not target.matches(info.resources)):
            raise Forbidden(
                f"claim {ident.namespace}/{name}, the name kubelock uses for your ({ident.holder}) claim on "
                f"{resource}, was made by someone else: it is {info.holder}'s claim on {info.label}. "
                f"You do not hold {resource}; ask a lock admin to delete that claim",
                reason="ClaimNameTaken",
            )
        return info

    async def _get_claim(self, namespace: str, name: str) -> ClaimInfo | None:
        try:
            body = await self.kube.get(paths.claims(namespace, name))
        except kube_errors.NotFound:
            return None
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            raise from_api(error, f"read claim {namespace}/{name}") from error
        return ClaimInfo.from_body(body)

    async def delete_claim(self, info: ClaimInfo, *, quiet: bool = False) -> None:
        """Delete exactly this claim (uid precondition): a newer claim of the same name survives.

        A refusal (401/403) or an unreachable API server is tried again for up to DELETE_SECONDS: a
        kube-apiserver that has just started serves requests before its RBAC authorizer has caught
        up, and refuses them meanwhile, and a restart takes seconds. A claim left behind stays in
        its queue, ahead of live waiters, and may be granted to nobody, until its wait timeout or
        lease ends. Trying again only ever takes a claim away: it never fails open.

        DELETE_SECONDS bounds the whole of it, requests in flight included: on a connection a
        partition left silent (no error, no answer) each request would otherwise wait for its own
        timeout, retried by the client (minutes), and the caller, whose lease may already be lost,
        with it."""
        self._seen.pop(info.name, None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETE_SECONDS
        refused: kube_errors.ApiError | kube_errors.Unreachable | None = None  # what the last try met
        for attempt in itertools.count(1):
            try:
                async with asyncio.timeout_at(deadline):
                    await self.kube.delete(paths.claims(info.namespace, info.name), uid=info.uid or None)
                return
            except kube_errors.Conflict:
                return
            except kube_errors.NotFound:
                return  # gone already
            except TimeoutError:
                if not quiet:
                    # The deadline came in a try or in the wait before it. Tries refused until then
                    # (a pod's token invalidated with its pod: 401 each time) say more than silence.
                    silent = kube_errors.Unreachable(f"no answer from the API server within {DELETE_SECONDS:g}s")
                    raise from_api(refused or silent, f"delete claim {info.namespace}/{info.name}") from None
                return
            except (kube_errors.ApiError, kube_errors.Unreachable) as error:
                if _passing(error) and loop.time() < deadline:
                    refused = error
                    await backoff(attempt)
                    continue
                if not quiet:
                    raise from_api(error, f"delete claim {info.namespace}/{info.name}") from error
                return


Doing = Literal["acquire", "adopt", "release", "renew"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Refusal:
    prefix: str  # what was not done, before the message
    advice: str  # what to do instead; `{pid}` is the live process's


# One row for each thing a process may not do to a claim another live process of its instance made.
_REFUSALS: Final[Mapping[Doing, _Refusal]] = {
    "acquire": _Refusal("", "give each process its own KUBELOCK_INSTANCE (or instance=)"),
    "adopt": _Refusal(
        "not adopted: ",
        "it adopted this claim at the same time and won; give each process its own KUBELOCK_INSTANCE "
        "(or instance=)",
    ),
    "release": _Refusal(
        "not released: ",
        "only that process releases it (or its end does); to release it from here, end pid {pid}",
    ),
    "renew": _Refusal(
        "not renewed: ",
        "only that process renews it (`kubelock run` and the SDK's lock() renew their own); once pid "
        "{pid} has ended this instance may renew it",
    ),
}


def _refuse_other_process(info: ClaimInfo, *, doing: Doing = "acquire") -> None:
    """An existing claim of this instance is adopted ("the same instance asking again") unless
    another live process here made it (or adopted it): then two processes would hold one lock (see
    sdk.process). Releasing it is refused alike: the process that made it still uses the lock, and
    would be told it lost it (`Revoked`) while the releasing process thought it gave back its own.
    Renewing it too: the renewal would hand this process the lock's fencing token as if it held it,
    and keep the lease alive for a process that may have stopped renewing (hung, stopped): the
    lease's expiry, which ends such a holder's grant, would never come. `adopt`: this process lost a
    race to adopt the claim of an ended maker to another live process."""
    other = process.live_other(info.process)
    if other is None:
        return
    state = "holds" if info.held else "awaits"  # words of a message
    refusal = _REFUSALS[doing]
    raise HeldByAnotherProcess(
        f"{refusal.prefix}another live process (pid {other.pid}) of holder "
        f"{info.holder} {state} this claim ({info.namespace}/{info.name} on {info.label}); "
        f"{refusal.advice.format(pid=other.pid)}",
        holder=info.holder,
        held_since=format_time(info.acquired_at),
    )


def unanswered_message(info: ClaimInfo) -> str:
    """What a claim no operator has acted on after UNANSWERED_NOTICE_SECONDS waits for."""
    return (f"waiting for a kubelock operator to act on claim {info.namespace}/{info.name} "
            f"(is it running and watching {info.namespace}?)")


def tell_unanswered(hook: Callable[[ClaimInfo], object], info: ClaimInfo) -> None:
    """Call an `on_unanswered` hook; one that raises is logged and the wait goes on as it would have
    (the hook is a notice: the claim's outcome is the acquire's, not the hook's). A claim answered in
    the instant of the notice may still be told as unanswered: the answer was on its way."""
    try:
        hook(info)
    except Exception as error:  # any failure of a caller's notice: reported and survived
        log.warning("the on_unanswered hook for claim %s/%s failed: %r", info.namespace, info.name, error)


def warn_unanswered(info: ClaimInfo) -> None:
    """`lock()`'s default `on_unanswered`: a warning on the `kubelock.sdk` logger (called once a claim)."""
    log.warning("%s", unanswered_message(info))


def _noted(error: E, note: str | None) -> E:
    """The error, its message followed by `note` when there is one (a LockError's; others as they are)."""
    if note is not None and isinstance(error, LockError):
        error.message = f"{error.message}; {note}"
        error.args = (error.message,)
    return error


def _passing(error: kube_errors.ApiError | kube_errors.Unreachable) -> bool:
    """A refusal by an authorizer that may still be catching up, or an API server away for a moment."""
    return isinstance(error, kube_errors.Forbidden | kube_errors.Unauthorized) or kube_errors.transient(error)


def _first_error(error: ValidationError) -> str:
    message = str(error.errors()[0]["msg"])
    return message.removeprefix("Value error, ")


def _ending(info: ClaimInfo) -> str:
    """How a finished claim ended, for a caller of the SDK: a rejection names the holder without
    the operator's advice on the claim's fields (`wait: true`), which is for kubectl users."""
    if info.phase is Phase.REJECTED and info.reason == Reason.HELD_BY_ANOTHER.value and info.current_holder:
        return f"{info.phase}: {info.label} was held by {info.current_holder}"
    return f"{info.phase}: {info.message}"


def _settled(state: ClaimInfo, wait: bool) -> bool:
    if state.phase is None:
        return False
    return state.phase is not Phase.PENDING or not wait


def _rfc3339(body: Body, field: str) -> str | None:
    value = (body.get("spec") or {}).get(field)
    return value if isinstance(value, str) else None


def _acquired(info: ClaimInfo) -> AcquireResult:
    return AcquireResult(
        ok=True,
        resource=info.label,
        holder=info.holder,
        namespace=info.namespace,
        claim_name=info.name,
        lock_name=None if info.several else info.lock_name,
        fencing_token=None if info.several else info.fencing_token,
        acquired_at=info.acquired_at,
        expires_at=info.expires_at,
        held_since=info.acquired_at,
        message=info.message,
        resources=tuple(sorted(info.resources)),
        grants=info.held_grants,
    )


def _renewed(info: ClaimInfo, *, confirmed: bool) -> RenewResult:
    return RenewResult(
        resource=info.label,
        claim_name=info.name,
        fencing_token=None if info.several else info.fencing_token,
        expires_at=info.expires_at,
        confirmed=confirmed,
        resources=tuple(sorted(info.resources)),
        fencing_tokens=info.tokens,
    )


def _nothing_held(ident: Identity, target: Target) -> NotFound:
    """NotFound for a release or renewal of what `ident` holds no claim of. Several URIs name the one
    claim that took them together; locks taken one by one are not found under their list."""
    message = f"you ({ident.holder}) hold no lock on {target.label} in namespace {ident.namespace}"
    if target.several:
        message += (
            " taken together (several URIs name the one claim that took them all at once; locks taken one "
            "by one are released and renewed one by one)"
        )
    return NotFound(message)
