"""Runs kubelock's operator with stamps on the steps of a grant, for `bench/acquire_stages.py`:
`python bench/stage_probe.py OUT -n NS ...` (the operator's own arguments after OUT).

Every stamp is a wall-clock time (`time.time()`, the same clock the bench client stamps with on this
machine), one JSON line appended to OUT:

- `ev`: a watch event delivered to the operator (kind, type, name, resourceVersion);
- `run`: one reconcile of a key (start and end);
- `decide`: the arbiter called for a resource;
- `req`: one API request of the operator (method, path, the created object's name for a POST,
  start, end, status);
- `gc`: a garbage-collection pause over 0.5 ms (generation, start, end);
- `slow`: one event-loop callback that ran over 5 ms (what it ran: a task's coroutine or the
  callback), start and end: while it ran, nothing else in the operator moved.

Measurement only: the operator's code is not changed, its functions are wrapped from outside before
it starts. The wrappers cost a few microseconds per request and callback.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import json
import sys
import time
from typing import Any

OUT = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115  # one line per stamp, kept open for the process' life
del sys.argv[1]

SLOW_CALLBACK = 0.005
GC_REPORTED = 0.0005


def stamp(kind: str, **fields: Any) -> None:
    OUT.write(json.dumps({"k": kind, **fields}) + "\n")


def _gc_probe() -> None:
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.time()
        else:
            end = time.time()
            if end - started[0] >= GC_REPORTED:
                stamp("gc", gen=info.get("generation"), t0=started[0], t1=end, collected=info.get("collected"))

    gc.callbacks.append(callback)


def _what(handle: asyncio.events.Handle) -> str:
    """Names what a callback ran, never by repr(): a repr can have side effects (aiohttp's
    `ClientResponse.__repr__` reads its `headers`, a cached property, and a response not started yet
    keeps None there for good: its request then fails with an AttributeError)."""
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', type(coro).__name__)}"
    return str(getattr(callback, "__qualname__", type(callback).__name__))


def _loop_probe() -> None:
    run = asyncio.events.Handle._run

    def timed(self: asyncio.events.Handle) -> None:
        t0 = time.time()
        run(self)
        t1 = time.time()
        if t1 - t0 >= SLOW_CALLBACK:
            stamp("slow", what=_what(self), t0=t0, t1=t1)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]


def _client_probe() -> None:
    from kubelock.kube.client import KubeClient

    once = KubeClient._request_once

    async def timed(self: KubeClient, method: str, path: str, params: Any, body: Any, content_type: str,
                    verb: str) -> Any:
        t0 = time.time()
        status = 0
        name = ((body or {}).get("metadata") or {}).get("name") if isinstance(body, dict) else None
        try:
            result = await once(self, method, path, params, body, content_type, verb)
            status = 200
            return result
        except Exception as error:
            status = int(getattr(error, "status", 0) or 0)
            raise
        finally:
            stamp("req", m=method, p=path, name=name, t0=t0, t1=time.time(), s=status,
                  bytes=len(json.dumps(body)) if body is not None else 0)

    KubeClient._request_once = timed  # type: ignore[method-assign]


def _watch_probe() -> None:
    from kubelock.operator.watches import ListWatch

    deliver = ListWatch._deliver

    def timed(self: ListWatch, event: dict[str, Any], version: int) -> int:
        t0 = time.time()
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        result = deliver(self, event, version)
        stamp("ev", noun=self.noun, type=event.get("type"), name=meta.get("name"), rv=meta.get("resourceVersion"),
              t0=t0, t1=time.time())
        return result

    ListWatch._deliver = timed  # type: ignore[method-assign]


def _reconciler_probe() -> None:
    from kubelock.domain import arbiter
    from kubelock.operator import reconciler

    decide = arbiter.decide

    def timed_decide(resource: str, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        result = decide(resource, *args, **kwargs)
        stamp("decide", resource=resource, t0=t0, t1=time.time())
        return result

    reconciler.decide = timed_decide  # type: ignore[attr-defined]  # the name the reconciler calls
    reconcile = reconciler.Reconciler.reconcile

    async def timed_reconcile(self: reconciler.Reconciler, key: tuple[str, str]) -> None:
        t0 = time.time()
        try:
            await reconcile(self, key)
        finally:
            stamp("run", resource=key[1], t0=t0, t1=time.time())

    reconciler.Reconciler.reconcile = timed_reconcile  # type: ignore[method-assign]


_gc_probe()
_loop_probe()
_client_probe()
_watch_probe()
_reconciler_probe()

from kubelock.operator.launch import main  # noqa: E402  # after the wrappers are in place

main()
