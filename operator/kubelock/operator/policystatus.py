"""Telling a LockPolicy's writer that the operator governs with it: `status.observedGeneration`.

A policy has a watch of its own, apart from the claims' (`operator/watches.py`), and the API server
orders no stream against another: a claim created just after a policy may reach the operator, and
be decided, before the policy does. Whoever creates or changes a policy and then makes (or lets
agents make) claims it must govern therefore waits until `status.observedGeneration` equals
`metadata.generation` (`kubectl wait --for=jsonpath='{.status.observedGeneration}'=1 lockpolicy/x`):
it is written only after the operator's index holds that generation, so every claim whose create
is answered after it is decided under it (docs/api.md, "When a policy starts to govern").

The write is a merge patch of the status with the body's resourceVersion as precondition: a policy
changed meanwhile answers 409 and its own event writes the newer generation; one deleted answers 404.
Both are ignored. Several replicas each write until one has: the others then see the generation
recorded and write nothing. Nothing else of the operator waits on these writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import ApiError, Conflict, NotFound, Unreachable

log = logging.getLogger("kubelock.policies")
Body = dict[str, Any]
Name = tuple[str, str]


def unobserved(body: Body) -> int | None:
    """The policy's generation when its status does not record it yet; None when it does (or the body
    has no generation to record)."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool):
        return None
    status = body.get("status")
    observed = status.get("observedGeneration") if isinstance(status, dict) else None
    return None if observed == generation else generation


class PolicyStatus:
    """Writes `observedGeneration` of the policies the index has taken in, one write at a time per
    policy, the latest body after the one in flight."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._writing: dict[Name, asyncio.Task[None]] = {}
        self._next: dict[Name, Body] = {}
        self._warned: set[Name] = set()

    def observed(self, body: Body) -> None:
        """The index now governs with `body`: record its generation unless its status already does.
        Call only after the index took the body in."""
        if unobserved(body) is None:
            return
        meta = body.get("metadata") or {}
        name = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if name in self._writing:
            self._next[name] = body
            return
        self._writing[name] = asyncio.create_task(self._write(name, body), name=f"kubelock-policy-status {name[1]}")

    async def _write(self, name: Name, body: Body) -> None:
        try:
            while True:
                await self._patch(name, body)
                following = self._next.pop(name, None)
                if following is None or unobserved(following) is None:
                    return
                body = following
        finally:
            self._writing.pop(name, None)

    async def _patch(self, name: Name, body: Body) -> None:
        meta = body.get("metadata") or {}
        generation = unobserved(body)
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                 "status": {"observedGeneration": generation}}
        try:
            await self._client.patch(paths.policies(name[0], name[1], status=True), patch)
        except (Conflict, NotFound):
            return  # changed or deleted meanwhile: the newer event writes the newer generation
        except (ApiError, Unreachable) as error:
            # An older chart's role has no `lockpolicies/status`: the policy governs all the same,
            # only its writer cannot see since when. Said once per policy.
            if name not in self._warned:
                self._warned.add(name)
                log.warning("LockPolicy %s/%s: could not record observedGeneration %s: %s", *name, generation, error)
            return
        log.debug("LockPolicy %s/%s: observedGeneration %s recorded", *name, generation)

    async def stop(self) -> None:
        tasks = list(self._writing.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
