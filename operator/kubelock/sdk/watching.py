"""Following one claim through a watch: every new state as it happens, no polling.

The watch starts at a known resourceVersion (from the create or get that returned the claim), so no
change in between is missed. When the server ends the watch it is resumed from the last version
seen; when that version is too old (410 Gone) the claim is read again. The server ends each watch
after a minute (`kube.client.WATCH_SECONDS`), and one that has not ended shortly after is taken for
dead and resumed: a waiter behind a path that went silent learns its verdict within that bound.
Connection failures, and a path the API server does not serve yet (right after it restarted, until
its CRD informer has synced: "404 page not found", which names no claim), are retried with backoff a
bounded number of times, then reported as `Unreachable`: only a 404 naming the claim, or a DELETED
event, ends the claim. A watch the API server throttled (429, API Priority and Fairness) starts again when
its Retry-After says, as every other request of the client does (`kubelock.kube.client.retry_delay`):
coming back sooner only adds to the queue that refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator
from typing import Any

from kubelock.api import objects
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import WATCH_SECONDS, KubeClient, retry_delay
from kubelock.sdk.errors import from_api

Body = dict[str, Any]
MAX_FAILURES = 6


async def backoff(attempt: int) -> None:
    # Full jitter, capped: about 0.2, 0.4, 0.8 ... 3.2 s.
    await asyncio.sleep(random.uniform(0.05, min(3.2, 0.2 * 2 ** (attempt - 1))))


def being_deleted(body: Body) -> bool:
    """Its deletion was asked for (`deletionTimestamp`): the operator released its grant then, at the
    request, though a finalizer (a lock admin's, or the garbage collector's for a foreground
    deletion held up by a dependent) may keep the object, its status unchanged, for as long as it
    likes. For its holder and its waiter that is the claim's end, as its disappearance is."""
    return objects.Metadata.parse(body.get("metadata")).deleting


async def follow_claim(
    kube: KubeClient, namespace: str, name: str, resource_version: str, *, max_failures: int = MAX_FAILURES
) -> AsyncGenerator[Body | None, None]:
    """Yields each new state of the claim after `resource_version`; None (and stops) once it is deleted
    or its deletion was asked for (`being_deleted`)."""
    version = resource_version
    failures = 0
    while True:
        try:
            stream = kube.watch(
                paths.claims(namespace),
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                fieldSelector=f"metadata.name={name}",
            )
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    failures = 0
                    obj = event.get("object") or {}
                    version = objects.resource_version(obj) or version
                    kind = event.get("type")
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED" or being_deleted(obj):
                        yield None
                        return
                    yield obj
            continue  # the server ended the watch (its timeout): resume where it stopped
        except kube_errors.ApiError as error:
            if error.status == 429:
                delay = retry_delay(error, failures, max_failures)
                if delay is None:
                    raise from_api(error, f"watch claim {namespace}/{name}") from error
                failures += 1
                await asyncio.sleep(delay)
                continue
            if error.status != 410:
                if not kube_errors.transient(error) or failures >= max_failures:
                    raise from_api(error, f"watch claim {namespace}/{name}") from error
                failures += 1
                await backoff(failures)
                continue
        except kube_errors.Unreachable as error:
            if failures >= max_failures:
                raise from_api(error, f"watch claim {namespace}/{name}") from error
            failures += 1
            await backoff(failures)
            continue
        # 410 Gone: the version is too old to resume from; read the claim as it is now.
        try:
            current = await kube.get(paths.claims(namespace, name))
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            if kube_errors.gone(error):
                yield None
                return
            if failures >= max_failures or not kube_errors.transient(error):
                raise from_api(error, f"read claim {namespace}/{name}") from error
            failures += 1
            await backoff(failures)
            continue
        if being_deleted(current):
            yield None
            return
        version = objects.resource_version(current)
        yield current
