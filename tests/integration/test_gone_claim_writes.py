"""Against the real API server: a status write to a claim deleted meanwhile fails with a 404 that names
the claim, and the reconciler takes it for a claim gone, not for a stale view: the lock it was
releasing in the same decision is deleted, and the claim is out of its view for good.

The reconciler runs on a cache the test fills (no watch), so the waiter's deletion stays unseen, as
it did for seconds in the loaded chaos run (docs/reliability.md, "The full run, loaded")."""

from __future__ import annotations

import asyncio
import time

from kubernetes.client import ApiClient

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import NotFound
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.claims import GROUP, VERSION, Locks, phase_of

R = "deploy://gone-waiter"


def test_a_waiter_deleted_unseen_does_not_hold_up_the_release(
    control_plane, admin_api: ApiClient, iso_ns: str  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)

    async def scenario() -> None:
        kube = KubeClient(config.load(str(control_plane.kubeconfig)))
        cache = Cache()
        clock = ManualClock(time.time())
        reconciler = Reconciler(kube, cache, Policy(), clock, EventRecorder(kube, clock, "test"))
        key = (iso_ns, R)
        try:
            cache.upsert_claim(await asyncio.to_thread(locks.claim, "h", R, "agent-h"))
            await reconciler.reconcile(key)  # h granted and told Held
            waiter = await asyncio.to_thread(locks.claim, "w", R, "agent-w", wait=True, wait_timeout=5)
            cache.upsert_claim(waiter)
            await reconciler.reconcile(key)  # w told Pending
            assert phase_of(await asyncio.to_thread(locks.get, "w")) == "Pending"
            cache.upsert_claim(await asyncio.to_thread(locks.get, "w"))
            # w gives up and goes (unseen); h releases (seen); w's wait is over by the clock.
            await asyncio.to_thread(locks.delete, "w")
            released = await asyncio.to_thread(locks.get, "h")
            await asyncio.to_thread(locks.delete, "h")
            cache.delete_claim(released)
            clock.advance(30)
            try:  # what the API server answers a status write of a deleted claim: a 404 naming it
                await kube.replace(paths.claims(iso_ns, "w", status=True), {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": "w"}, "status": {},
                })
            except NotFound as error:
                assert error.object_name == "w"
            else:
                raise AssertionError("the status write of a deleted claim did not fail")
            await reconciler.reconcile(key)  # w's TimedOut meets the 404; h's grant goes all the same
            assert await asyncio.to_thread(locks.locks) == []
            # w is out of the view for good: its late events are old news
            assert cache.was_deleted(waiter["metadata"]["uid"]) and waiter["metadata"]["uid"] not in cache.claims
        finally:
            await reconciler.stop()
            await kube.close()

    asyncio.run(scenario())
