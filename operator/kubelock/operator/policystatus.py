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
Both are ignored. Trouble (a restarting API server that does not serve the path yet, throttling, a
lost connection: `kube.errors.transient`) is retried by a work queue of policies, with backoff, until
the write is answered: dropped, the generation would go unrecorded until the policy next changed, and
its writer would wait in vain. Several replicas each write until one has: the others then see the
generation recorded and write nothing. Nothing else of the operator waits on these writes.
"""

from __future__ import annotations

import logging
from typing import Any

from kubelock.domain.clock import Clock, SystemClock
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import ApiError, Conflict, NotFound, Unreachable, transient
from kubelock.operator.workqueue import WorkQueue

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
    policy (a work queue keyed by policy), the latest body after the one in flight."""

    def __init__(self, client: KubeClient, clock: Clock | None = None, *, first_retry_delay: float = 0.1,
                 retry_delay: float = 1.0) -> None:
        self._client = client
        self._latest: dict[Name, Body] = {}  # the body to write next, per policy
        self._warned: set[Name] = set()
        self._queue: WorkQueue[Name] = WorkQueue(
            self._write, clock or SystemClock(), transient=(ApiError, Unreachable),
            describe=lambda name: f"observedGeneration write of LockPolicy {name[0]}/{name[1]}",
            first_retry_delay=first_retry_delay, retry_delay=retry_delay,
        )

    def observed(self, body: Body) -> None:
        """The index now governs with `body`: record its generation unless its status already does.
        Call only after the index took the body in."""
        if unobserved(body) is None:
            return
        meta = body.get("metadata") or {}
        name = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        self._latest[name] = body
        if not self._queue.running:
            self._queue.start()
        self._queue.schedule(name)

    async def _write(self, name: Name) -> None:
        body = self._latest.pop(name, None)
        if body is None or unobserved(body) is None:
            return
        try:
            await self._patch(name, body)
        except BaseException:
            self._latest.setdefault(name, body)  # retried, unless a newer body came meanwhile
            raise

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
            if transient(error):
                raise  # the work queue tries again with backoff
            # An older chart's role has no `lockpolicies/status`: the policy governs all the same,
            # only its writer cannot see since when. Said once per policy.
            if name not in self._warned:
                self._warned.add(name)
                log.warning("LockPolicy %s/%s: could not record observedGeneration %s: %s", *name, generation, error)
            return
        log.debug("LockPolicy %s/%s: observedGeneration %s recorded", *name, generation)

    async def stop(self) -> None:
        await self._queue.stop()
        self._latest.clear()
