"""A write that failed on a stale view is read again only when the watch has not already brought
the write that made it fail (`kubelock.operator.moved`): under load the watch event of the other
replica's (or the holder's) write often arrives before the failed write's own response."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Lock, Policy
from kubelock.kube import paths
from kubelock.kube.codec import claim_record
from kubelock.operator.cache import Cache, LockRecord
from kubelock.operator.events import EventRecorder
from kubelock.operator.moved import claim_moved, lock_moved
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import FakeApi

R = "github://acme/app/issues/42"


def _claim(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": "u1", "namespace": "a"}, "spec": {"resource": R, "holder": "agent"}}


def _claim_body(version: str) -> dict[str, Any]:
    body = _claim("c1")
    body["metadata"]["resourceVersion"] = version
    return body


def _lock(uid: str, version: str) -> LockRecord:
    grant = Lock(
        name="lock", uid=uid, resource=R, holder="agent", claim_name="c1", claim_uid="u1", fencing_token=1,
        acquired_at=0.0, renewed_at=0.0, lease_seconds=60,
    )
    return LockRecord(grants=(grant,), version=version)


def test_a_claim_has_moved_when_the_cache_holds_a_later_version_or_saw_it_deleted() -> None:
    seven = claim_record(_claim_body("7"))
    nine = claim_record(_claim_body("9"))
    assert claim_moved(seven, nine)
    assert not claim_moved(seven, seven)
    assert not claim_moved(nine, seven)  # the cache never goes back; were it older, read again
    assert claim_moved(seven, None)  # its deletion was seen
    assert not claim_moved(None, nine)  # nothing was written on
    opaque = claim_record(_claim_body("x"))
    assert not claim_moved(opaque, claim_record(_claim_body("y")))  # versions not numbers: read again


def test_a_lock_has_moved_when_the_cache_shows_any_later_write_of_it() -> None:
    assert lock_moved(None, _lock("l1", "5"))  # created by someone else
    assert lock_moved(_lock("l1", "5"), None)  # deleted
    assert lock_moved(_lock("l1", "5"), _lock("l2", "4"))  # another lock object
    assert lock_moved(_lock("l1", "5"), _lock("l1", "6"))
    assert not lock_moved(_lock("l1", "5"), _lock("l1", "5"))
    assert not lock_moved(None, None)


def _granted_once(watch_brings_it: bool) -> list[tuple[str, str]]:
    """A free resource, one claim: the lock is created, then the claim's `Held` write meets a
    write of the claim made meanwhile (the holder's, or the other replica's) and fails with 409."""

    async def scenario() -> list[tuple[str, str]]:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        cache = Cache()
        claim_path = paths.claims("a", "c1")
        cache.upsert_claim(api.put(claim_path, _claim("c1")))
        raced = False

        async def update(path: str, body: Any, default: Any) -> Any:
            nonlocal raced
            if not raced:
                raced = True
                theirs = copy.deepcopy(api.objects[claim_path])
                theirs["metadata"].setdefault("annotations", {})["kubelock.dev/renew"] = "r1"
                stored = api.put(claim_path, theirs)  # their write lands first
                if watch_brings_it:
                    cache.upsert_claim(stored)  # ... and its watch event before our response
            return default()

        api.react("update", update)
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        await reconciler.reconcile(("a", R))
        if not watch_brings_it:
            assert raced
        await reconciler.stop()
        assert api.objects[claim_path]["status"]["phase"] == "Held"
        return [r for r in api.requests if r[1].startswith(claim_path)]

    return asyncio.run(scenario())


def test_a_status_write_that_lost_to_a_write_the_watch_already_brought_is_not_read_again() -> None:
    status = paths.claims("a", "c1", status=True)
    assert _granted_once(watch_brings_it=True) == [("update", status), ("update", status)]


def test_a_status_write_that_lost_to_a_write_the_cache_has_not_seen_reads_the_claim_again() -> None:
    status = paths.claims("a", "c1", status=True)
    assert _granted_once(watch_brings_it=False) == [
        ("update", status), ("get", paths.claims("a", "c1")), ("update", status),
    ]
