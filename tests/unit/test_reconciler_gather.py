"""What a decision is taken on: the claims and the lock of a resource as the reconciler gathers them.
A read made while gathering (a grant's claim the view does not show yet) lets watch events in; the
claims that arrive meanwhile are newer than the lock read before them, and a claim told Held of a
grant that lock does not show yet must not be revoked as broken. Writes are asserted through the
recording fake API."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.resource import lock_name
from kubelock.kube import paths
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import FakeApi

T0 = 1_800_000_000.0
R = "chaos://pool/r11"


def claim(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "namespace": "a"},
        "spec": {"resource": R, "holder": f"agent-{name}", "wait": True},
    }


def test_a_held_claim_that_arrives_while_a_grants_claim_is_read_is_not_taken_for_broken() -> None:
    """A restarted replica's lock watch is ahead of its claim watch: its cache has the lock with the
    first permit's grant only, and none of the resource's claims. Deciding the resource, it reads
    that grant's claim from the API server; meanwhile the claim watch delivers both claims, the
    second already Held of the second permit (granted by the other replica, after the version of
    the lock in the cache). The decision must not revoke the second claim as LockBroken; the next one
    reads the lock back and leaves both grants be."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        events = EventRecorder(api, clock, "test")  # type: ignore[arg-type]
        lock_path = paths.locks("a", lock_name(R))

        # The other replica grants two permits of a semaphore of three, one after the other.
        other = Reconciler(api, Cache(), Policy(), clock, events, capacity=lambda _ns, _r: 3)  # type: ignore[arg-type]
        other.cache.upsert_claim(api.put(paths.claims("a", "first"), claim("first")))
        await other.reconcile(("a", R))
        lock_of_first_only = copy.deepcopy(api.objects[lock_path])
        other.cache.upsert_claim(api.put(paths.claims("a", "second"), claim("second")))
        await other.reconcile(("a", R))
        await other.stop()
        assert [api.objects[paths.claims("a", n)]["status"]["phase"] for n in ("first", "second")] == ["Held", "Held"]
        assert len(api.objects[lock_path]["spec"]["grants"]) == 1  # the second grant

        # The restarted replica: the lock's first version only, no claims yet.
        cache = Cache()
        cache.upsert_lock(lock_of_first_only)
        reconciler = Reconciler(api, cache, Policy(), clock, events, capacity=lambda _ns, _r: 3)  # type: ignore[arg-type]

        async def get_claim_while_the_watch_catches_up(path: str, body: Any, default: Any) -> dict[str, Any]:
            read = default()
            if path == paths.claims("a", "first"):
                for name in ("first", "second"):  # the claim watch delivers while the read is under way
                    cache.claim_event(copy.deepcopy(api.objects[paths.claims("a", name)]))
            return read  # type: ignore[no-any-return]

        api.react("get", get_claim_while_the_watch_catches_up)
        api.requests.clear()
        await reconciler.reconcile(("a", R))
        # The second claim's event scheduled the key again: decided now, on the lock read back.
        await reconciler.reconcile(("a", R))
        await reconciler.stop()
        assert ("get", lock_path) in api.requests

        assert ("update", paths.claims("a", "second", status=True)) not in api.writes
        status = api.objects[paths.claims("a", "second")]["status"]
        assert (status["phase"], status["reason"]) == ("Held", "Granted")
        assert len(api.objects[lock_path]["spec"]["grants"]) == 1

    asyncio.run(scenario())
