"""A status write that finds its claim deleted does not hold up the rest of its decision.

In the full loaded chaos run most locks that outlived their lease or their release by more than 5 s
waited on this: the decision that removed a released grant also told waiters that had given up
meanwhile `TimedOut`; their claims were gone (404), the round ended there as on a stale view, and the
next round met the next waiter that had given up. A 404 that names the claim means nobody is left to
tell; one that does not (a path not served, as right after an API server restart) still ends the
round as a stale view.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.resource import lock_name
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import paths
from kubelock.kube.errors import Unserved
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import FakeApi

R = "github://acme/app/issues/42"
T0 = 1_800_000_000.0
KEY = ("a", R)


def _claim(name: str, *, wait: bool = False, created: float = T0) -> dict[str, Any]:
    spec: dict[str, Any] = {"resource": R, "holder": f"agent-{name}"}
    if wait:
        spec |= {"wait": True, "waitTimeoutSeconds": 6}
    meta = {"name": name, "uid": f"u-{name}", "namespace": "a", "creationTimestamp": to_rfc3339(created)}
    return {"metadata": meta, "spec": spec}


def _released_holder_and_a_waiter_that_gave_up(*, gone: bool = True) -> tuple[FakeApi, Cache, Reconciler]:
    """`h` holds the lock and has just released it (its deletion is in the cache); `w` waited behind
    it past its timeout and gave up: its claim is deleted in the API, its deletion not seen yet (with
    `gone=False`: still there, to be told `TimedOut`)."""
    clock = ManualClock(T0)
    api, cache = FakeApi(), Cache()
    reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]

    async def set_up() -> None:
        cache.upsert_claim(api.put(paths.claims("a", "h"), _claim("h")))
        await reconciler.reconcile(KEY)  # h granted and told Held
        cache.upsert_claim(api.put(paths.claims("a", "w"), _claim("w", wait=True, created=T0 + 1)))
        await reconciler.reconcile(KEY)  # w told Pending
        assert api.objects[paths.claims("a", "w")]["status"]["phase"] == "Pending"
        clock.advance(30)  # past w's wait timeout
        cache.delete_claim(api.objects.pop(paths.claims("a", "h")))
        if gone:
            del api.objects[paths.claims("a", "w")]
        api.requests.clear()

    asyncio.run(set_up())
    return api, cache, reconciler


def test_a_waiter_gone_before_its_timed_out_status_does_not_hold_up_the_release() -> None:
    api, cache, reconciler = _released_holder_and_a_waiter_that_gave_up()
    asyncio.run(reconciler.reconcile(KEY))
    lock = paths.locks("a", lock_name(R))
    # The TimedOut write meets the 404 and the lock is deleted in the same round: no GET of the
    # claim, no second decision before the release.
    assert api.requests == [("update", paths.claims("a", "w", status=True)), ("delete", lock)]
    assert lock not in api.objects and KEY not in cache.locks
    assert "u-w" not in cache.claims and cache.was_deleted("u-w")
    asyncio.run(reconciler.stop())


def test_a_released_lock_is_deleted_beside_a_slow_status_write_not_after_it() -> None:
    """The decision that removes a released grant also tells a waiter `TimedOut`; on a busy API server
    that write takes seconds. The released grant's deletion rests on nothing it says (its claim is
    deleted), so it is sent while that write is under way, not after it."""
    api, cache, reconciler = _released_holder_and_a_waiter_that_gave_up(gone=False)
    seen: list[str] = []

    async def slow_update(path: str, body: Any, default: Any) -> Any:
        seen.append(f"status {body['status']['phase']} sent")
        await asyncio.sleep(0.2)
        seen.append("status done")
        return default()

    async def delete(path: str, body: Any, default: Any) -> Any:
        seen.append("lock delete sent")
        return default()

    api.react("update", slow_update)
    api.react("delete", delete)
    asyncio.run(reconciler.reconcile(KEY))
    assert seen[:3] == ["status TimedOut sent", "lock delete sent", "status done"]
    assert paths.locks("a", lock_name(R)) not in api.objects and KEY not in cache.locks
    assert api.objects[paths.claims("a", "w")]["status"]["phase"] == "TimedOut"
    asyncio.run(reconciler.stop())


def test_a_404_that_names_no_claim_is_trouble_retried_never_a_claim_gone() -> None:
    """A path the API server does not serve (a custom resource not registered yet, right after it
    restarted) says nothing of the claim: the round fails as on any API trouble (the work queue
    retries the key with backoff), nothing is forgotten and nothing is read in its place (a read
    would meet the same 404). Once the path is served the next round decides as usual."""
    api, cache, reconciler = _released_holder_and_a_waiter_that_gave_up()
    unserved = [Unserved(404, "NotFound", "the server could not find the requested resource", {"details": {}})]

    async def once_unserved(path: str, body: Any, default: Any) -> Any:
        if unserved:
            raise unserved.pop()
        return default()

    api.react("update", once_unserved)
    with pytest.raises(Unserved):
        asyncio.run(reconciler.reconcile(KEY))
    lock = paths.locks("a", lock_name(R))
    # The released holder's lock went beside the status write (its claim is deleted: nothing that
    # write meets changes that), and is known gone when the round fails.
    assert api.requests == [("update", paths.claims("a", "w", status=True)), ("delete", lock)]
    assert lock not in api.objects and KEY not in cache.locks
    assert "u-w" in cache.claims and not cache.was_deleted("u-w")
    asyncio.run(reconciler.reconcile(KEY))  # served again: w found gone
    assert "u-w" not in cache.claims and cache.was_deleted("u-w")
    asyncio.run(reconciler.stop())


def test_an_unserved_404_on_the_read_after_a_stale_write_forgets_nothing() -> None:
    """The read after a conflicting write meets an unserved path: the claim stays in the cache (an
    API server restarting is no deletion), and the trouble is raised for the work queue to retry."""
    from kubelock.kube.errors import Conflict

    api, cache, reconciler = _released_holder_and_a_waiter_that_gave_up()
    api.objects[paths.claims("a", "w")] = _claim("w", wait=True, created=T0 + 1)  # w still there after all

    async def conflict(path: str, body: Any, default: Any) -> Any:
        raise Conflict(409, "Conflict", "the object has been modified")

    async def unserved(path: str, body: Any, default: Any) -> Any:
        raise Unserved(404, "", "404 page not found", {})

    api.react("update", conflict)
    api.react("get", unserved)
    with pytest.raises(Unserved):
        asyncio.run(reconciler.reconcile(KEY))
    assert "u-w" in cache.claims and not cache.was_deleted("u-w")
    asyncio.run(reconciler.stop())


def test_a_claim_found_gone_has_its_key_decided_again_and_its_late_news_ignored() -> None:
    """Its deletion's watch event finds it forgotten and schedules nothing: the write that found it
    gone schedules its key (a grant of it made by the early path is removed then)."""
    _, cache, reconciler = _released_holder_and_a_waiter_that_gave_up()

    scheduled: list[Any] = []
    reconciler.schedule = scheduled.append  # type: ignore[method-assign]

    async def go() -> None:
        gone = cache.claims["u-w"]
        await reconciler.decide_and_apply(KEY, lambda claims, decision: decision.actions)
        assert scheduled == [KEY]
        assert cache.claim_event({**_claim("w", wait=True), "metadata": {
            "name": "w", "uid": "u-w", "namespace": "a", "resourceVersion": gone.resource_version}}) is None
        await reconciler.stop()

    asyncio.run(go())
