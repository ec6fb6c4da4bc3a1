"""The reconciler with a LockPolicy index: a resting resource gets no grant until its lock-delay ends
(the ended claim's record, as a restarted operator lists it), and a claim over a quota is rejected
without a grant. Writes are asserted through the recording fake API."""

from __future__ import annotations

import asyncio
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import paths
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import FakeApi

T0 = 1_800_000_000.0
R = "deploy://api-prod"


def claim(name: str, resource: str = R, *, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "uid": f"u-{name}", "namespace": "a"},
        "spec": {"resource": resource, "holder": f"agent-{name}", **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def policy(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "deploys", "namespace": "a"}, "spec": {"resourcePrefix": "deploy://", **spec}}


def reconciler_for(api: FakeApi, cache: Cache, index: PolicyIndex, clock: ManualClock) -> Reconciler:
    events = EventRecorder(api, clock, "test")  # type: ignore[arg-type]
    return Reconciler(api, cache, Policy(), clock, events, policies=index)  # type: ignore[arg-type]


def test_a_resting_resource_is_granted_when_its_lock_delay_ends() -> None:
    async def scenario() -> None:
        clock = ManualClock(T0 + 3)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        reconciler = reconciler_for(api, cache, index, clock)  # the index starts empty, as at start-up
        index.upsert(policy(lockDelaySeconds=10))
        ended = {"phase": "Expired", "reason": "LeaseExpired", "message": "", "sequence": 1,
                 "finishedAt": to_rfc3339(T0), "availableAt": to_rfc3339(T0 + 10)}
        cache.upsert_claim(api.put(paths.claims("a", "old"), claim("old", status=ended)))
        cache.upsert_claim(api.put(paths.claims("a", "b"), claim("b", wait=True)))
        await reconciler.reconcile(("a", R))
        assert api.writes == [("patch", paths.claims("a", "b", status=True))]  # told, not granted
        status = api.objects[paths.claims("a", "b")]["status"]
        assert (status["phase"], status["reason"], status["availableAt"]) == (
            "Pending", "LockDelay", to_rfc3339(T0 + 10)
        )
        assert reconciler.queue.next_deadline() == T0 + 10
        clock.advance(7)
        await reconciler.reconcile(("a", R))
        assert ("create", paths.locks("a")) in api.writes
        assert api.objects[paths.claims("a", "b")]["status"]["phase"] == "Held"
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_claim_over_a_quota_is_rejected_without_a_grant() -> None:
    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1))
        held = {"phase": "Held", "reason": "Granted", "message": "", "sequence": 1}
        cache.upsert_claim(api.put(paths.claims("a", "first"), claim("first", "deploy://one", status=held)))
        second = claim("second", "deploy://two")
        second["spec"]["holder"] = "agent-first"
        cache.upsert_claim(api.put(paths.claims("a", "second"), second))
        reconciler = reconciler_for(api, cache, index, clock)
        await reconciler.reconcile(("a", "deploy://two"))
        assert api.writes == [("patch", paths.claims("a", "second", status=True))]
        status = api.objects[paths.claims("a", "second")]["status"]
        assert (status["phase"], status["reason"]) == ("Rejected", "QuotaExceeded")
        assert "LockPolicy deploys" in status["message"] and "maxHeldPerHolder" in status["message"]
        await reconciler.stop()

    asyncio.run(scenario())
