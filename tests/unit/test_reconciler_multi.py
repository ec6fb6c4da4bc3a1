"""The reconcile of a claim of several resources, through a recording fake API: the writes of an
all-or-nothing grant in sorted order, Held written last, and the give-back when the rest was taken
meanwhile (its status written before any grant is removed)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.resource import lock_name
from kubelock.kube import paths
from kubelock.operator.cache import Cache, multi_key
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import Body, FakeApi

A, B = "git://acme/app/branch/fix-1", "github://acme/app/issues/1"  # sorted: A first


def _multi(name: str = "m", uid: str = "um") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "namespace": "a"},
            "spec": {"resources": [B, A], "holder": "agent", "wait": True}}


def _setup(api: FakeApi) -> tuple[Cache, Reconciler]:
    clock = ManualClock(1_800_000_000.0)
    cache = Cache()
    cache.upsert_claim(api.put(paths.claims("a", "m"), _multi()))
    reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
    return cache, reconciler


def test_grants_are_written_in_sorted_order_and_held_last_with_one_token_each() -> None:
    async def scenario() -> None:
        api = FakeApi()
        _, reconciler = _setup(api)
        await reconciler.reconcile(multi_key("a", "um"))
        assert api.writes == [
            ("create", paths.locks("a")), ("create", paths.locks("a")),
            ("patch", paths.claims("a", "m", status=True)),
        ]
        created = [api.objects[paths.locks("a", lock_name(r))] for r in (A, B)]
        assert [lk["spec"]["resource"] for lk in created] == [A, B]
        status = api.objects[paths.claims("a", "m")]["status"]
        assert status["phase"] == "Held" and status.get("fencingToken") is None
        assert status["grants"] == [
            {"resource": r, "lockName": lock_name(r), "fencingToken": int(lk["metadata"]["resourceVersion"]),
             "mode": "Exclusive", "permits": 1}
            for r, lk in zip((A, B), created, strict=True)
        ]
        # Held rests on a fresh read of every lock, made after the last grant was written.
        last_create = max(i for i, (verb, _) in enumerate(api.requests) if verb == "create")
        reads = {path for verb, path in api.requests[last_create:] if verb == "get"}
        assert reads == {paths.locks("a", lock_name(r)) for r in (A, B)}
        await reconciler.stop()

    asyncio.run(scenario())


def test_the_rest_taken_meanwhile_gives_back_what_it_holds_after_writing_its_status() -> None:
    async def scenario() -> None:
        api = FakeApi()
        cache, reconciler = _setup(api)
        other = api.put(paths.claims("a", "x"), {"metadata": {"name": "x", "uid": "ux", "namespace": "a"},
                                                 "spec": {"resource": B, "holder": "other"}})

        async def create(path: str, body: Body | None, default: Any) -> Body:
            assert body is not None
            if body["spec"]["resource"] == B and paths.locks("a", lock_name(B)) not in api.objects:
                # Another replica grants B to another claim just before this create.
                api.put(paths.locks("a", lock_name(B)), {
                    "metadata": {"name": lock_name(B), "namespace": "a"},
                    "spec": {"resource": B, "holder": "other", "claimRef": {"name": "x", "uid": "ux"},
                             "fencingToken": 0, "acquireTime": "2027-01-15T08:00:00Z",
                             "renewTime": "2027-01-15T08:00:00Z", "leaseDurationSeconds": 3600},
                })
                cache.upsert_claim(other)
            result: Body = default()
            return result

        api.react("create", create)
        await reconciler.reconcile(multi_key("a", "um"))
        writes = [w for w in api.writes if w[1] != paths.claims("a", "x", status=True)]
        claim_status = ("patch", paths.claims("a", "m", status=True))
        lock_a = ("delete", paths.locks("a", lock_name(A)))
        assert writes[:2] == [("create", paths.locks("a")), ("create", paths.locks("a"))]
        assert lock_a in writes and claim_status in writes[:writes.index(lock_a)], writes
        assert paths.locks("a", lock_name(A)) not in api.objects  # given back
        status = api.objects[paths.claims("a", "m")]["status"]
        assert (status["phase"], status["reason"]) == ("Pending", "Queued") and B in status["message"], status
        await reconciler.stop()

    asyncio.run(scenario())
