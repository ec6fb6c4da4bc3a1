"""Kubernetes Events written by kubelock itself (kopf's own event posting is off).

Every Event the operator emits goes through `EventRecorder.record`, which takes what happened (the
object, reason, message and type) and owns everything about how it is sent: call sites never build
Event bodies, so sending can change (for example aggregating routine Events into counts, as
client-go's EventCorrelator does) without touching them. Events are sent by one background task from
a bounded queue, so recording one never delays a grant; when the queue is full (an Event storm), the
newest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from kubelock.api.constants import CLAIM_KIND
from kubelock.domain.clock import Clock
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.codec import event_body
from kubelock.kube.errors import ApiError, Unreachable

log = logging.getLogger("kubelock.events")
COMPONENT = "kubelock-operator"


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One thing to report: about which object, why, and when it happened."""

    namespace: str
    kind: str
    name: str
    uid: str
    reason: str
    message: str
    warning: bool
    at: float


class EventRecorder:
    def __init__(self, client: KubeClient, clock: Clock, instance: str, capacity: int = 10_000) -> None:
        self._client = client
        self._clock = clock
        self._instance = instance
        self._queue: asyncio.Queue[Occurrence] = asyncio.Queue(capacity)
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
        occurrence = Occurrence(namespace, kind, name, uid, reason, message, warning, self._clock.now())
        try:
            self._queue.put_nowait(occurrence)
        except asyncio.QueueFull:
            self.dropped += 1

    async def drain(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            occurrence = await self._queue.get()
            try:
                await self._send(occurrence)
            finally:
                self._queue.task_done()

    async def _send(self, event: Occurrence) -> None:
        body = event_body(
            namespace=event.namespace, kind=event.kind, name=event.name, uid=event.uid, reason=event.reason,
            message=event.message, warning=event.warning, now=event.at, component=COMPONENT, instance=self._instance,
        )
        try:
            await self._client.create(paths.events(event.namespace), body)
        except (ApiError, Unreachable) as error:
            # A namespace being deleted refuses new Events; that is expected, not worth a warning.
            terminating = isinstance(error, ApiError) and "being terminated" in error.message
            log.log(
                logging.DEBUG if terminating else logging.WARNING,
                "could not record event %s in %s: %s", event.reason, event.namespace, error,
            )
