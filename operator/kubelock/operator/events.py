"""Kubernetes Events written by kubelock itself (kopf's own event posting is off).

Every Event the operator emits goes through `EventRecorder.record`, which takes what happened (the
object, reason, message and type) and owns everything about how it is sent: call sites never build
Event bodies, so sending can change (for example aggregating routine Events into counts, as
client-go's EventCorrelator does) without touching them.

Recording an Event never delays a grant: it goes into a bounded queue that sender tasks drain.
The queue holds what an Event says, not its body (the body is built when it is sent): one sender
posting one Event at a time fell behind at a thousand decisions a minute, and its backlog of 10 000
bodies was most of the operator's memory. Events are for people and must not crowd out the writes
that grant locks, so a storm is not chased: when the queue is full, the newest Events are dropped
and counted (as client-go's recorder does).
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
SENDERS = 1
CAPACITY = 1_000


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
    def __init__(
        self, client: KubeClient, clock: Clock, instance: str, capacity: int = CAPACITY, senders: int = SENDERS
    ) -> None:
        self._client = client
        self._clock = clock
        self._instance = instance
        self._queue: asyncio.Queue[Occurrence] = asyncio.Queue(capacity)
        self._senders = senders
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"kubelock-events-{i}") for i in range(self._senders)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

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
