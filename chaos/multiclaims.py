"""Claims of several resources made by chaos agents straight through the API (`spec.resources`),
without the SDK: create the claim, wait for its verdict, renew it with the renew annotation while it
is held, notice its loss, delete it to release. What the agent believed is recorded by the caller
(`chaos.agents`), one hold per resource with that resource's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

from kubelock.api import objects
from kubelock.api.constants import API_VERSION, CLAIM_KIND, RENEW_ANNOTATION
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.sdk import AsyncLockClient
from kubelock.sdk.model import ClaimInfo

Body = dict[str, Any]
# How often a holder or waiter reads its claim. A holder's belief is bounded by the lease expiry it
# last saw (and its pod's death), so a loss noticed late counts no longer than that; reading more
# often would only add load to the API server every other client shares.
POLL_SECONDS = 0.25


class MultiLease:
    """One claim of several resources: acquired, renewed, watched for loss and released as one."""

    def __init__(self, client: AsyncLockClient, uris: list[str], *, ttl: int, wait: bool,
                 wait_timeout: int | None, decision_timeout: float) -> None:
        self.client = client
        self.uris = uris
        self.ttl = ttl
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.decision_timeout = decision_timeout
        self.lost = asyncio.Event()
        self.lost_at: float | None = None
        self.known_expiry: float | None = None
        self.uid = ""
        self.name = f"multi-{secrets.token_hex(6)}"
        self.namespace = client.namespace
        self.tokens: dict[str, int] = {}  # resource -> fencing token, as status.grants said
        self._task: asyncio.Task[None] | None = None

    async def acquire(self) -> tuple[str, str]:
        """Create the claim and wait for its verdict: ("Held", detail), or the phase it ended in
        ("Rejected" for a busy try-lock, "Rejected:<reason>" otherwise), or "Unanswered"."""
        ident = await self.client.identity()
        spec: Body = {"resources": self.uris, "holder": ident.holder, "wait": self.wait, "ttlSeconds": self.ttl}
        if self.wait and self.wait_timeout is not None:
            spec["waitTimeoutSeconds"] = self.wait_timeout
        metadata: Body = {"name": self.name}
        if ident.pod_name:
            spec["podRef"] = {"name": ident.pod_name, **({"uid": ident.pod_uid} if ident.pod_uid else {})}
            if ident.pod_uid:
                metadata["ownerReferences"] = [
                    {"apiVersion": "v1", "kind": "Pod", "name": ident.pod_name, "uid": ident.pod_uid}]
        body = {"apiVersion": API_VERSION, "kind": CLAIM_KIND, "metadata": metadata, "spec": spec}
        try:
            try:
                created = await self.client.kube.create(paths.claims(self.namespace), body)
            except kube_errors.Conflict as error:
                if not error.already_exists:
                    raise
                # A retried create whose first attempt went through (the name is this lease's own).
                created = await self.client.kube.get(paths.claims(self.namespace, self.name))
            self.uid = str((created.get("metadata") or {}).get("uid", ""))
            return await self._verdict()
        except BaseException:
            # Given up (an error, a lost answer, cancelled): take the claim back as the SDK does, or
            # it stays queued for nobody and may be granted to nobody.
            await asyncio.shield(self._withdraw(body))
            raise

    async def _withdraw(self, sent: Body) -> None:
        """Delete the claim, if made (the name is this lease's own), through the SDK's delete."""
        meta = {**sent["metadata"], "namespace": self.namespace, "uid": self.uid or None}
        await self.client.delete_claim(ClaimInfo.from_body({**sent, "metadata": meta}), quiet=True)

    async def _verdict(self) -> tuple[str, str]:
        patience = self.decision_timeout + ((self.wait_timeout or 0) if self.wait else 0)
        limit = time.time() + patience
        while True:
            try:
                status = await self._status()
            except kube_errors.Unserved:  # a restarting API server: nothing known yet, look again
                status = {}
            phase = status.get("phase")
            if phase == "Held":
                self._held(status)
                self._task = asyncio.create_task(self._keep())
                return "Held", f"tokens {self.tokens}"
            if phase not in (None, "Pending"):
                reason = str(status.get("reason") or "")
                message = str(status.get("message") or "")
                if phase == "Rejected" and reason not in ("HeldByAnotherHolder", "LockDelay"):
                    return f"Rejected:{reason}", message
                return str(phase), message
            if time.time() > limit:
                await self.release()
                return "Unanswered", f"no verdict within {patience:.0f}s"
            await asyncio.sleep(POLL_SECONDS)

    async def _status(self) -> Body:
        try:
            body = await self.client.kube.get(paths.claims(self.namespace, self.name))
        except kube_errors.NotFound:
            return {"phase": "Gone"}
        return dict(body.get("status") or {})

    def _held(self, status: Body) -> None:
        self.tokens = {str(g["resource"]): int(g["fencingToken"]) for g in status.get("grants") or []}
        expires = objects.seconds(objects.time_of(status.get("expiresAt")))
        if expires is not None:
            self.known_expiry = expires

    async def _keep(self) -> None:
        """Renew every third of the lease; look at the claim often, and mark the loss when it leaves Held."""
        next_renewal = time.time() + self.ttl / 3
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                if time.time() >= next_renewal:
                    marker = f"{time.time():.6f}"
                    await self.client.kube.patch(paths.claims(self.namespace, self.name),
                                                 {"metadata": {"annotations": {RENEW_ANNOTATION: marker}}})
                    next_renewal = time.time() + self.ttl / 3
                status = await self._status()
            except (kube_errors.ApiError, kube_errors.Unreachable):
                continue  # as a holder whose renewal failed: its known expiry bounds its belief
            if status.get("phase") != "Held":
                self.lost_at = time.time()
                self.lost.set()
                return
            self._held(status)

    async def abandon(self) -> None:
        """Stop renewing and watching without releasing: what a killed process does."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def release(self) -> None:
        await self.abandon()
        with contextlib.suppress(kube_errors.NotFound):
            await self.client.kube.delete(paths.claims(self.namespace, self.name))
