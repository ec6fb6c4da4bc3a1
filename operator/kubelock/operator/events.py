"""Kubernetes Events written by kubelock itself (kopf's own event posting is off).

Events are sent by one background task from a bounded queue, so recording one never delays a
grant; when the queue is full (an Event storm), the newest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kubelock.api.constants import CLAIM_KIND
from kubelock.domain.clock import Clock
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.codec import event_body
from kubelock.kube.errors import ApiError, Unreachable

log = logging.getLogger("kubelock.events")
COMPONENT = "kubelock-operator"


class EventRecorder:
    def __init__(self, client: KubeClient, clock: Clock, instance: str, capacity: int = 10_000) -> None:
        self._client = client
        self._clock = clock
        self._instance = instance
        self._queue: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue(capacity)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kubelock-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def record(
        self, namespace: str, name: str, uid: str, reason: str, message: str, *, warning: bool, kind: str = CLAIM_KIND
    ) -> None:
        body = event_body(
            namespace=namespace, kind=kind, name=name, uid=uid, reason=reason, message=message, warning=warning,
            now=self._clock.now(), component=COMPONENT, instance=self._instance,
        )
        try:
            self._queue.put_nowait((namespace, body))
        except asyncio.QueueFull:
            self.dropped += 1

    async def drain(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            namespace, body = await self._queue.get()
            try:
                await self._client.create(paths.events(namespace), body)
            except (ApiError, Unreachable) as error:
                # A namespace being deleted refuses new Events; that is expected, not worth a warning.
                terminating = isinstance(error, ApiError) and "being terminated" in error.message
                log.log(
                    logging.DEBUG if terminating else logging.WARNING,
                    "could not record event %s in %s: %s", body.get("reason"), namespace, error,
                )
            finally:
                self._queue.task_done()
