"""A held lock as a context manager: renewed in the background, watched, released on exit.

While the body runs, three tasks keep the lease honest:
- the renewer writes a new renewal marker every third of the lease (or of the renew deadline, when
  one is set), so two renewals can fail before the lease is at risk;
- the watcher follows the claim and reports the loss the moment it leaves Held (expired, revoked
  by an administrator, its pod gone, or the claim deleted);
- the guard declares the lease lost when the last expiry the operator confirmed has passed, or,
  with a renew deadline, when no renewal was accepted within it (see `kubelock.sdk.renewal`), so an
  unreachable API server can never leave a caller believing it still holds the lock.

Every loss is reported once: `lost` is set, `error` says why, and each listener (`on_lost=`,
`add_listener`) is called with the error, in the order added.

A revocation request (an administrator's `kubelock revoke --request`, or preemption by a waiter of
higher priority) is reported once too, while the lock is still held: `revocation_requested` says
who asks and by when to release, `revocation_seen` is set, and each revocation listener
(`on_revocation=`, `add_revocation_listener`) is called with it. Honour it by leaving the `with`
block (releasing) before its deadline; after it the operator breaks the lock and the lease is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from kubelock.domain.reasons import Reason
from kubelock.sdk.errors import Expired, LockError, NotFound, Revoked
from kubelock.sdk.model import ClaimInfo, GrantInfo, RevocationInfo
from kubelock.sdk.renewal import (
    first_renewal_in,
    loss_moment,
    ran_out_message,
    renew_interval,
    validate_renew_deadline,
)
from kubelock.sdk.targets import Target, Uris
from kubelock.sdk.watching import backoff, follow_claim

if TYPE_CHECKING:
    from kubelock.sdk.client import AsyncLockClient

log = logging.getLogger("kubelock.sdk")
LostCallback = Callable[[LockError], object]
RevocationCallback = Callable[[RevocationInfo], object]


class AsyncLease:
    """`async with client.lock(uri, ttl=60) as lease:`; see the module docstring."""

    def __init__(
        self,
        client: AsyncLockClient,
        uri: Uris,
        *,
        ttl: int | None,
        wait: bool,
        timeout: float | None,
        on_lost: LostCallback | None = None,
        renew_deadline: float | None = None,
        mode: str = "Exclusive",
        permits: int = 1,
        on_revocation: RevocationCallback | None = None,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> None:
        self._renew_deadline = validate_renew_deadline(renew_deadline, ttl)
        Target.of(uri).to_claim()  # bad input is refused at once, not on entry
        self._client = client
        self._uri = uri
        self._ttl = ttl
        self._wait = wait
        self._timeout = timeout
        self._mode = mode
        self._permits = permits
        self._priority = priority
        self._on_unanswered = on_unanswered
        self._listeners: list[LostCallback] = [on_lost] if on_lost else []
        self._info: ClaimInfo | None = None
        self._task: asyncio.Task[None] | None = None
        self._deadline = 0.0  # loop time at which the last confirmed lease ends
        self._renewed = 0.0  # loop time at which the last accepted renewal (or the grant) was asked for
        self._renew_failure: str | None = None  # what the last renewal was told, until one succeeds
        self._deadline_moved = asyncio.Event()
        self.lost = asyncio.Event()
        self.error: LockError | None = None
        # The refusal of the release on exit when it was not raised (the lease was lost already, or the
        # body raised): the claim stays until its lease runs out.
        self.release_error: LockError | None = None
        self._revocation_listeners: list[RevocationCallback] = [on_revocation] if on_revocation else []
        self._revocation: RevocationInfo | None = None
        self.revocation_seen = asyncio.Event()

    # ---- what the holder reads --------------------------------------------------------------

    @property
    def claim(self) -> ClaimInfo:
        if self._info is None:
            raise RuntimeError("the lease is not acquired yet: use it in an `async with` block")
        return self._info

    @property
    def fencing_token(self) -> int | None:
        """Pass it with every write to the protected system; it refuses smaller tokens than it has seen.
        None for a lease of several resources: each has its own (`fencing_tokens`)."""
        return None if self.claim.several else self.claim.fencing_token

    @property
    def fencing_tokens(self) -> dict[str, int]:
        """The fencing token of each resource held (one entry for a lease of one resource)."""
        return self.claim.tokens

    @property
    def grants(self) -> tuple[GrantInfo, ...]:
        """One grant per resource held: its resource, lock name and fencing token (and mode, permits)."""
        return self.claim.held_grants

    @property
    def resource(self) -> str:
        """The resource held; for a lease of several, all of them for a message (`a, b and c`)."""
        return self.claim.label

    @property
    def resources(self) -> tuple[str, ...]:
        """Every resource held (normalised, sorted)."""
        return tuple(sorted(self.claim.resources))

    @property
    def claim_name(self) -> str:
        return self.claim.name

    @property
    def expires_at(self) -> datetime | None:
        return self.claim.expires_at

    @property
    def renew_deadline(self) -> float | None:
        """Seconds after the last accepted renewal at which the lease calls itself lost (None: only
        the confirmed expiry counts)."""
        return self._renew_deadline

    @property
    def revocation_requested(self) -> RevocationInfo | None:
        """The request to give the lock back, once seen (None: nobody asked)."""
        return self._revocation

    def add_revocation_listener(self, callback: RevocationCallback) -> None:
        """Also call `callback(revocation)` when a revocation request is seen (not for one seen before
        it was added: read `revocation_requested`)."""
        self._revocation_listeners.append(callback)

    def loss_at(self) -> float:
        """When the lease calls itself lost unless a renewal is accepted meanwhile, in event loop time
        (the monotonic clock): the confirmed expiry, or the renew deadline after the last accepted
        renewal when that is earlier."""
        return loss_moment(self._deadline, self._renewed, self._renew_deadline)[0]

    def cluster_now(self) -> float:
        """The latest the cluster's clock (the API server's, which the operator's follows) can read
        now, in seconds since the epoch: what the operator's stamps (a lease's end, a revocation's
        deadline) are compared with, whatever this machine's clock says."""
        return self._client.kube.server_clock.latest_now()

    def check(self) -> None:
        """Raise the loss (Expired, Revoked ...) if the lock is no longer held."""
        if self.error is not None:
            raise self.error

    def add_listener(self, callback: LostCallback) -> None:
        self._listeners.append(callback)

    # ---- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncLease:
        info = await self._client.acquire_claim(
            self._uri, wait=self._wait, timeout=self._timeout, ttl=self._ttl, mode=self._mode, permits=self._permits,
            priority=self._priority, on_unanswered=self._on_unanswered,
        )
        self._info = info
        self._renewed = asyncio.get_running_loop().time()
        self._move_deadline(info)
        self._task = asyncio.create_task(self._keep(), name=f"kubelock lease {info.name}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._info is None:
            return
        try:
            await asyncio.shield(self._client.delete_claim(self._info))
        except LockError as error:
            if exc is None and self.error is None:
                raise
            # Never hide the body's own exception, nor repeat a loss already reported; an unreleased
            # lease runs out by itself.
            self.release_error = error
            log.warning("could not release %s: %s", self._info.resource, error)

    # ---- background -------------------------------------------------------------------------

    async def _keep(self) -> None:
        if self.claim.revocation is not None:  # asked already when granted (the watch starts after it)
            await self._revocation_requested(self.claim.revocation)
        tasks = [asyncio.create_task(t) for t in (self._renew(), self._watch(), self._guard())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _lease_seconds(self) -> float:
        if self._ttl is not None:
            return float(self._ttl)
        info = self.claim
        if info.expires_at and (start := info.renewed_at or info.acquired_at):
            return max(1.0, info.expires_at.timestamp() - start.timestamp())
        return 1800.0  # the operator's documented default

    def _lease_age(self) -> float:
        """Seconds since the lease (or its last renewal) started, by the operator's stamp."""
        start = self.claim.renewed_at or self.claim.acquired_at
        return 0.0 if start is None else self.cluster_now() - start.timestamp()

    async def _renew(self) -> None:
        loop = asyncio.get_running_loop()
        interval = renew_interval(self._lease_seconds(), self._renew_deadline)
        wait = first_renewal_in(interval, self._lease_age())
        while True:
            await asyncio.sleep(wait)
            wait = interval
            asked = loop.time()
            try:
                renewed = await self._client.renew_claim(self.claim, self._client.renewal_marker(), conditional=False)
                if renewed.deleting:  # admitted, but released at the delete request (the watch may not know yet)
                    await self._lose(await self._client.error_for(renewed))
                    return
                self._renewed = asked
                self._renew_failure = None
                self._deadline_moved.set()
            except NotFound:
                await self._lose(Revoked(f"claim {self.claim.name} was deleted", reason=Reason.RELEASED.value))
                return
            except LockError as error:  # transient trouble outlasted the retries: the guard decides
                self._renew_failure = str(error)
                log.warning("renewal of %s failed: %s", self.claim.label, error)

    async def _watch(self) -> None:
        failures = 0
        while True:
            try:
                stream = follow_claim(self._client.kube, self.claim.namespace, self.claim.name,
                                      self.claim.resource_version)
                async with contextlib.aclosing(stream) as states:
                    async for body in states:
                        failures = 0
                        if body is None:
                            message = f"claim {self.claim.name} for {self.claim.label} was deleted"
                            await self._lose(Revoked(message, reason=Reason.RELEASED.value))
                            return
                        info = ClaimInfo.from_body(body)
                        self._info = info
                        if not info.held_at(self._client.kube.server_clock.earliest_now()):
                            await self._lose(await self._client.error_for(info))
                            return
                        self._move_deadline(info)
                        if info.revocation is not None:
                            await self._revocation_requested(info.revocation)
            except LockError as error:
                failures += 1
                log.warning("watch of %s failed (%s); retrying", self.claim.label, error)
                await backoff(min(failures, 5))

    async def _guard(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            moment, by_renew_deadline = loss_moment(self._deadline, self._renewed, self._renew_deadline)
            remaining = moment - loop.time()
            if remaining <= 0:
                await self._lose(self._ran_out(by_renew_deadline))
                return
            self._deadline_moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._deadline_moved.wait()

    def _ran_out(self, by_renew_deadline: bool) -> Expired:
        deadline = self._renew_deadline if by_renew_deadline else None
        return Expired(ran_out_message(self.claim.label, renew_deadline=deadline, last_failure=self._renew_failure))

    def _move_deadline(self, info: ClaimInfo) -> None:
        if info.expires_at is None:
            return
        # The operator's expiry in this process's monotonic clock, counted against the latest the
        # API server's clock can read now, not this machine's wall clock: a machine whose clock is
        # slow would otherwise hold on past the end the operator enforces (`kube.serverclock`).
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._deadline = now + (info.expires_at.timestamp() - self._client.kube.server_clock.latest_now(now))
        self._deadline_moved.set()

    async def _revocation_requested(self, revocation: RevocationInfo) -> None:
        if self._revocation is not None:
            return
        self._revocation = revocation
        self.revocation_seen.set()
        why = f": {revocation.reason}" if revocation.reason else ""
        log.warning("%s asks to give back the lock on %s by %s%s", revocation.requested_by, self.claim.label,
                    revocation.deadline.isoformat(), why)
        for callback in self._revocation_listeners:
            try:
                result = callback(revocation)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_revocation callback failed")

    async def _lose(self, error: LockError) -> None:
        if self.error is not None:
            return
        self.error = error
        self.lost.set()
        log.warning("lost the lock on %s: %s", self.claim.label, error.message)
        for callback in self._listeners:
            try:
                result = callback(error)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_lost callback failed")
