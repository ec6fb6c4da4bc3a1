"""The reconciler with a LockPolicy index: a resting resource gets no grant until its lock-delay ends
(the ended claim's record, as a restarted operator lists it), and a claim over a quota is rejected
without a grant. Writes are asserted through the recording fake API."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from kubelock.domain import quotaledger, quotas
from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import paths
from kubelock.kube.errors import ApiError, Conflict
from kubelock.kube.quotaledger import entries_of, lease_name, ledger_body
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
        assert api.writes == [("update", paths.claims("a", "b", status=True))]  # told, not granted
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
        assert api.writes == [("update", paths.claims("a", "second", status=True))]
        status = api.objects[paths.claims("a", "second")]["status"]
        assert (status["phase"], status["reason"]) == ("Rejected", "QuotaExceeded")
        assert "LockPolicy deploys" in status["message"] and "maxHeldPerHolder" in status["message"]
        await reconciler.stop()

    asyncio.run(scenario())


def slow(api: FakeApi, verb: str) -> None:
    """Every write of `verb` waits on the loop before it is stored, as a real write does: other keys
    are decided meanwhile."""

    async def later(path: str, body: dict[str, Any] | None, default: Any) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return default()  # type: ignore[no-any-return]

    api.react(verb, later)


def test_grants_decided_while_each_others_writes_are_under_way_keep_the_held_quota() -> None:
    """Five resources decided at once, each granting a claim of one holder: the grants being written
    count as held, so exactly two are made and three rejected, and no reservation outlives its write."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=2))
        slow(api, "create")
        names = [f"c{i}" for i in range(5)]
        for name in names:
            body = claim(name, f"deploy://r{name}")
            body["spec"]["holder"] = "agent-a"
            cache.upsert_claim(api.put(paths.claims("a", name), body))
        reconciler = reconciler_for(api, cache, index, clock)
        await asyncio.gather(*(reconciler.reconcile(("a", f"deploy://r{name}")) for name in names))
        phases = sorted(api.objects[paths.claims("a", n)]["status"]["phase"] for n in names)
        assert phases == ["Held", "Held", "Rejected", "Rejected", "Rejected"]
        assert len(reconciler.in_flight) == 0
        await reconciler.stop()

    asyncio.run(scenario())


def test_first_waits_decided_at_once_keep_the_waiting_quota() -> None:
    """Three held resources, three claims of one holder queued on them at once: the first Pending
    answers being written count as waiting, so one waits and two are rejected."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxWaitingPerHolder=1))
        reconciler = reconciler_for(api, cache, index, clock)
        resources = [f"deploy://r{i}" for i in range(3)]
        for i, resource in enumerate(resources):
            cache.upsert_claim(api.put(paths.claims("a", f"h{i}"), claim(f"h{i}", resource)))
        await asyncio.gather(*(reconciler.reconcile(("a", r)) for r in resources))
        slow(api, "update")
        for i, resource in enumerate(resources):
            body = claim(f"w{i}", resource, wait=True)
            body["spec"]["holder"] = "agent-w"
            cache.upsert_claim(api.put(paths.claims("a", f"w{i}"), body))
        await asyncio.gather(*(reconciler.reconcile(("a", r)) for r in resources))
        phases = sorted(api.objects[paths.claims("a", f"w{i}")]["status"]["phase"] for i in range(3))
        assert phases == ["Pending", "Rejected", "Rejected"]
        assert len(reconciler.in_flight) == 0
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_grant_whose_write_fails_gives_its_reservation_back() -> None:
    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1))
        reconciler = reconciler_for(api, cache, index, clock)
        counted: list[int] = []

        async def refused(path: str, body: dict[str, Any] | None, default: Any) -> dict[str, Any]:
            if path == paths.leases("a"):
                return default()  # type: ignore[no-any-return]  # the quota ledger: only the grant fails
            counted.append(reconciler._usage("a", index.policy_for("a", R)).held_total)
            raise Conflict(409, "Conflict", "the object has been modified")

        api.react("create", refused)
        cache.upsert_claim(api.put(paths.claims("a", "c"), claim("c")))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reconciler.reconcile(("a", R)), 1)
        assert counted and counted[0] == 1  # while the write was under way, it counted
        assert len(reconciler.in_flight) == 0
        await reconciler.stop()

    asyncio.run(scenario())


def test_two_replicas_granting_one_holders_claims_at_once_keep_the_held_quota_together() -> None:
    """Two operators with caches of their own (neither sees the other's writes) decide one holder's
    claims on four resources at once, two each, under maxHeldPerHolder 2: their reservations meet in
    the quota ledger, the second write to it fails and its replica decides again counting the first,
    so two grants are made in all, not two each."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        slow(api, "create")
        replicas = []
        for _ in range(2):
            cache, index = Cache(), PolicyIndex()
            index.upsert(policy(maxHeldPerHolder=2))
            replicas.append(reconciler_for(api, cache, index, clock))
        names = [f"c{i}" for i in range(4)]
        for name in names:
            body = claim(name, f"deploy://r{name}")
            body["spec"]["holder"] = "agent-a"
            stored = api.put(paths.claims("a", name), body)
            for replica in replicas:
                replica.cache.upsert_claim(stored)
        await asyncio.gather(
            *(replicas[i % 2].reconcile(("a", f"deploy://r{name}")) for i, name in enumerate(names))
        )
        phases = sorted(api.objects[paths.claims("a", n)]["status"]["phase"] for n in names)
        assert phases == ["Held", "Held", "Rejected", "Rejected"]
        assert sum(r.ledgers.conflicts for r in replicas) >= 1
        ledgers = [p for p in api.objects if p.startswith(paths.leases("a") + "/")]
        assert len(ledgers) == 1, ledgers  # one holder: one ledger
        for replica in replicas:
            await replica.stop()

    asyncio.run(scenario())


def test_without_quotas_a_grant_writes_no_ledger() -> None:
    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(capacity=2))
        reconciler = reconciler_for(api, cache, index, clock)
        cache.upsert_claim(api.put(paths.claims("a", "c"), claim("c")))
        await reconciler.reconcile(("a", R))
        assert api.objects[paths.claims("a", "c")]["status"]["phase"] == "Held"
        assert not any("leases" in path for _, path in api.requests)
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_ledger_that_cannot_be_written_grants_nothing_and_the_grant_is_retried() -> None:
    """Fail closed: a transient error writing the ledger leaves the claim ungranted (not refused);
    the next run grants it."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1))
        reconciler = reconciler_for(api, cache, index, clock)
        failures = [ApiError(503, "ServiceUnavailable", "etcd is down")]

        async def flaky(path: str, body: dict[str, Any] | None, default: Any) -> dict[str, Any]:
            if path == paths.leases("a") and failures:
                raise failures.pop()
            return default()  # type: ignore[no-any-return]

        api.react("create", flaky)
        cache.upsert_claim(api.put(paths.claims("a", "c"), claim("c")))
        with contextlib.suppress(ApiError):
            await reconciler.reconcile(("a", R))
        assert "status" not in api.objects[paths.claims("a", "c")]
        assert not any(p.startswith(paths.locks("a")) for p in api.objects)
        assert len(reconciler.in_flight) == 0
        await reconciler.reconcile(("a", R))
        assert api.objects[paths.claims("a", "c")]["status"]["phase"] == "Held"
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_reservation_left_without_its_grant_stops_counting_after_its_bound() -> None:
    """An operator that stopped between the ledger write and the grant write left a reservation for
    a claim that holds nothing: it counts against the holder only until RESERVATION_SECONDS pass."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1))
        reconciler = reconciler_for(api, cache, index, clock)
        left = quotaledger.written({}, [quotas.Reservation("a", "deploys", "agent-a", "u-lost", quotas.Count.HELD)],
                                   T0, lambda uid, count: False)
        key = quotaledger.ledger_of(index.policy_for("a", R), "a", "agent-a")
        api.put(paths.leases("a", lease_name(key)), ledger_body(key, left))
        for i, name in enumerate(("early", "late")):
            body = claim(name, f"deploy://r{i}")
            body["spec"]["holder"] = "agent-a"
            cache.upsert_claim(api.put(paths.claims("a", name), body))
        await reconciler.reconcile(("a", "deploy://r0"))  # counts the reservation: rejected
        assert api.objects[paths.claims("a", "early")]["status"]["reason"] == "QuotaExceeded"
        clock.advance(quotaledger.RESERVATION_SECONDS)
        await reconciler.reconcile(("a", "deploy://r1"))
        assert api.objects[paths.claims("a", "late")]["status"]["phase"] == "Held"
        assert "u-lost" not in entries_of(api.objects[paths.leases("a", lease_name(key))])  # dropped
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_grant_whose_claim_was_refused_counts_until_its_lock_goes_and_a_released_one_does_not() -> None:
    """One replica refused a claim while the other wrote its grant: that lock holds the resource
    until it is deleted, so it counts against the holder. A released claim's lock, being deleted,
    does not."""

    def lock_of(name: str, resource: str) -> dict[str, Any]:
        return {
            "metadata": {"name": f"lock-{name}", "uid": f"l-{name}", "namespace": "a", "resourceVersion": "50"},
            "spec": {"resource": resource, "holder": "agent-a", "claimRef": {"name": name, "uid": f"u-{name}"},
                     "fencingToken": 50, "leaseDurationSeconds": 60},
        }

    async def scenario(ended: str) -> str:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1))
        reconciler = reconciler_for(api, cache, index, clock)
        old = claim("old", "deploy://one")
        old["spec"]["holder"] = "agent-a"
        if ended == "refused":
            old["status"] = {"phase": "Rejected", "reason": "QuotaExceeded", "message": "", "sequence": 1,
                             "finishedAt": to_rfc3339(T0)}
            cache.upsert_claim(api.put(paths.claims("a", "old"), old))
        else:
            cache.delete_claim(old)  # released
        cache.upsert_lock(lock_of("old", "deploy://one"))
        new = claim("new", "deploy://two")
        new["spec"]["holder"] = "agent-a"
        cache.upsert_claim(api.put(paths.claims("a", "new"), new))
        await reconciler.reconcile(("a", "deploy://two"))
        await reconciler.stop()
        return str(api.objects[paths.claims("a", "new")]["status"]["phase"])

    assert asyncio.run(scenario("refused")) == "Rejected"
    assert asyncio.run(scenario("released")) == "Held"


@pytest.mark.parametrize("deleted", [False, True], ids=["kept", "deleted"])
@pytest.mark.parametrize("lock_on", ["deploy://one", "deploy://two"])
def test_a_grant_of_a_refused_claim_of_several_counts_on_whichever_of_its_resources_it_is(
    lock_on: str, deleted: bool
) -> None:
    """The same for a claim of several resources (`spec.resources: [two, one]`, so `two` is the first
    named): the grant written on either of them counts until its lock goes, also on `one`, which its
    grants are written on first (in sorted order) and under which no record of the refused claim is
    kept; and it still counts once the refused claim is deleted, its lock not yet gone."""

    async def scenario() -> str:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1))
        reconciler = reconciler_for(api, cache, index, clock)
        refused = {
            "metadata": {"name": "old", "uid": "u-old", "namespace": "a"},
            "spec": {"resources": ["deploy://two", "deploy://one"], "holder": "agent-a"},
            "status": {"phase": "Rejected", "reason": "HeldByAnotherHolder", "message": "", "sequence": 1,
                       "finishedAt": to_rfc3339(T0)},
        }
        cache.upsert_claim(api.put(paths.claims("a", "old"), refused))
        if deleted:
            cache.delete_claim(api.objects.pop(paths.claims("a", "old")))
        cache.upsert_lock({
            "metadata": {"name": "lock-old", "uid": "l-old", "namespace": "a", "resourceVersion": "50"},
            "spec": {"resource": lock_on, "holder": "agent-a", "claimRef": {"name": "old", "uid": "u-old"},
                     "fencingToken": 50, "leaseDurationSeconds": 60},
        })
        new = claim("new", "deploy://three")
        new["spec"]["holder"] = "agent-a"
        cache.upsert_claim(api.put(paths.claims("a", "new"), new))
        await reconciler.reconcile(("a", "deploy://three"))
        await reconciler.stop()
        return str(api.objects[paths.claims("a", "new")]["status"]["reason"])

    assert asyncio.run(scenario()) == "QuotaExceeded"


def test_a_resource_of_a_policy_of_several_permits_leaves_no_capacity_behind_once_released() -> None:
    """The wait-for graph learns a resource's capacity at each decision; once nothing is left of the
    resource (its claims deleted, its lock gone) it forgets it, as the rest of the resource's state."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        reconciler = reconciler_for(api, cache, index, clock)
        index.upsert(policy(capacity=3))
        cache.upsert_claim(api.put(paths.claims("a", "b"), claim("b")))
        await reconciler.reconcile(("a", R))
        assert api.objects[paths.claims("a", "b")]["status"]["phase"] == "Held"
        for path, body in list(api.objects.items()):
            if path.startswith(paths.locks("a") + "/"):
                cache.upsert_lock(body)
        cache.delete_claim(api.objects.pop(paths.claims("a", "b")))
        await reconciler.reconcile(("a", R))  # the lock is deleted
        for key, lock in list(cache.locks.items()):
            cache.forget_lock(key, lock.uid)  # its DELETED event
        await reconciler.reconcile(("a", R))  # nothing left at the key
        assert not cache.locks and not cache.claims_for(("a", R))
        assert "a" not in cache.graphs  # the namespace's graph, left empty, is dropped
        await reconciler.stop()

    asyncio.run(scenario())
