"""Two operator replicas crossing on one holder's quota, in an order the test chooses: each refuses
a claim of the holder that the other is granting. Each replica has a cache of its own and sees the
other's writes only when the test hands them over (its watch lagging), and the requests that make
the crossing are held at gates (`tests.support.gatedclient`). Writes go to one recording fake API
server, which keeps the locks; the holder's limit is checked on it after every lock write (a create,
or an update handing a lock over).

The order (maxHeldPerHolder 2, the holder already holding c0):
  1. A decides r2: grants c2, reserves it in its own memory; its quota-ledger write is held.
  2. B decides r1: grants c1, reserves it in the ledger, creates c1's lock; its Held write is held
     (or, in the `lock` case, its lock create).
  3. A decides r1: c0 and its own c2 count, so it refuses c1.
  4. B decides r2: c0 and its own c1 count, so it refuses c2.
  5. A's ledger write goes on: it fails on B's newer version, A reads the ledger (B's reservation of
     c1) and decides r2 again. Its view still shows c2 waiting (B's refusal has not reached it).
A reservation of a claim that ended refused keeps counting (`Cache.reservation_ended`): A counts c0
and c1, and refuses c2 as well. If A dropped it because c1 ended, it would grant c2 and create its
lock while B's lock of c1 exists: three locks of the holder under a limit of two.

The other tests here are about when such a reservation may stop counting: not once the claim's lock
was seen deleted (it may be granted again under it), but at once when it was reserved for a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from kubelock.domain import quotaledger
from kubelock.domain.clock import ManualClock
from kubelock.domain.quotas import Count
from kubelock.kube import paths
from kubelock.kube.errors import Unreachable
from kubelock.kube.quotaledger import entries_of, lease_name
from kubelock.operator.cache import Cache
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import FakeApi
from tests.support.gatedclient import GatedClient
from tests.unit.test_reconciler_policies import T0, claim, policy, reconciler_for

HOLDER = "agent-h"
LIMIT = 2


def holders_locks(api: FakeApi) -> int:
    prefix = paths.locks("a") + "/"
    return sum(1 for path, body in api.objects.items() if path.startswith(prefix) and body["spec"]["holder"] == HOLDER)


def counting_locks(api: FakeApi, peaks: list[int]) -> None:
    """After each write that can give the holder a lock (a lock's create, or its update handing it
    over), how many locks the holder has."""

    async def write(path: str, body: dict[str, Any] | None, default: Any) -> dict[str, Any]:
        stored: dict[str, Any] = default()
        if path.startswith(paths.locks("a")):
            peaks.append(holders_locks(api))
        return stored

    api.react("create", write)
    api.react("patch", write)


def replica(
    api: FakeApi, clock: ManualClock, connection: type[GatedClient] = GatedClient, *, waiting: int | None = None
) -> tuple[Reconciler, GatedClient]:
    """`waiting`: the policy's maxWaitingPerHolder too (first waits are then recorded in the ledger)."""
    index = PolicyIndex()
    quotas = {"maxHeldPerHolder": LIMIT}
    if waiting is not None:
        quotas["maxWaitingPerHolder"] = waiting
    index.upsert(policy(**quotas))
    client = connection(api)
    return reconciler_for(client, Cache(), index, clock), client  # type: ignore[arg-type]


def holders_claim(api: FakeApi, name: str, resource: str, **spec: Any) -> dict[str, Any]:
    body = claim(name, resource, **spec)
    body["spec"]["holder"] = HOLDER
    return api.put(paths.claims("a", name), body)


def hand_over(api: FakeApi, to: Reconciler) -> None:
    """Everything the API server has now reaches `to`'s view (its watches caught up)."""
    for path, body in api.objects.items():
        if path.startswith(paths.claims("a") + "/"):
            to.cache.upsert_claim(body)
        elif path.startswith(paths.locks("a") + "/"):
            to.cache.upsert_lock(body)


async def until(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 5)


@pytest.mark.parametrize("b_waits_at", ["told", "lock"])
def test_two_replicas_each_refusing_a_claim_the_other_grants_keep_the_holder_at_its_limit(b_waits_at: str) -> None:
    """`b_waits_at`: where B's grant of c1 is when A reads the ledger again: its lock created, the
    claim not yet told ("told"), or its lock not yet created ("lock": a read of the locks then would
    show none for c1, yet B creates it later). A's write after deciding r2 again (c2's Held, or its
    refusal) waits until B's grant has gone on, so A's lock, if any, still exists when B's comes."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        peaks: list[int] = []
        counting_locks(api, peaks)
        (a, a_api), (b, b_api) = replica(api, clock), replica(api, clock)
        holders_claim(api, "c0", "deploy://r0")
        hand_over(api, a)
        await a.reconcile(("a", "deploy://r0"))  # granted and told
        for name, resource in (("c1", "deploy://r1"), ("c2", "deploy://r2")):
            holders_claim(api, name, resource)
        hand_over(api, a)
        hand_over(api, b)  # both views: c0 held, c1 and c2 waiting for an answer
        a_ledger = a_api.hold("patch", paths.leases("a"))
        a_told = a_api.hold("update", paths.claims("a", "c2", status=True))
        b_grant = (
            b_api.hold("update", paths.claims("a", "c1", status=True)) if b_waits_at == "told"
            else b_api.hold("create", paths.locks("a"))
        )

        a_grants_c2 = asyncio.create_task(a.reconcile(("a", "deploy://r2")))  # 1.
        await until(a_ledger.reached)
        b_grants_c1 = asyncio.create_task(b.reconcile(("a", "deploy://r1")))  # 2.
        await until(b_grant.reached)
        await a.reconcile(("a", "deploy://r1"))  # 3.
        assert api.objects[paths.claims("a", "c1")]["status"]["reason"] == "QuotaExceeded"
        await b.reconcile(("a", "deploy://r2"))  # 4.
        assert api.objects[paths.claims("a", "c2")]["status"]["reason"] == "QuotaExceeded"
        a_ledger.open()  # 5.
        await until(a_told.reached)
        assert a.ledgers.conflicts == 1  # it met B's reservation, and decided again on it
        b_grant.open()
        await asyncio.wait_for(b_grants_c1, 5)  # c1 was refused: B tells nothing, and its lock goes
        a_told.open()
        await asyncio.wait_for(a_grants_c2, 5)

        assert max(peaks) <= LIMIT, f"the holder's locks after each lock write: {peaks}"
        assert holders_locks(api) == 1  # c0's
        phases = {n: api.objects[paths.claims("a", n)]["status"]["phase"] for n in ("c0", "c1", "c2")}
        assert phases == {"c0": "Held", "c1": "Rejected", "c2": "Rejected"}, phases
        key = quotaledger.ledger_of(a.policies.policy_for("a", "deploy://r1"), "a", HOLDER)  # type: ignore[union-attr]
        assert "u-c1" in entries_of(api.objects[paths.leases("a", lease_name(key))])  # counted to its bound
        for each in (a, b):
            await each.stop()

    asyncio.run(scenario())


class LosesALockCreatesAnswer(GatedClient):
    """The first lock create is stored by the API server, but its answer never comes back (a timeout):
    the replica does not know the lock was made."""

    lost = False

    async def create(self, path: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        stored = await super().create(path, body, **params)
        if path == paths.locks("a") and not self.lost:
            self.lost = True
            raise Unreachable("timed out")
        return stored


def test_a_refused_claims_reservation_counts_to_its_bound_after_its_lock_was_seen_deleted() -> None:
    """One live ledger entry covers every grant of its claim: a replica deciding the claim again does
    not write it again. So the refusing replica must not drop it when it sees the claim's lock deleted.
    Here B reserves c1 and creates its lock, but the create's answer is lost; A, which refused c1
    meanwhile (the crossing above), deletes that lock; B, its view of c1 still waiting, grants c1
    again under the same entry. Were c1 no longer counted once its lock went, A would have granted
    the holder's next claim c3 in between: three locks at once."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        peaks: list[int] = []
        counting_locks(api, peaks)
        (a, a_api), (b, _) = replica(api, clock), replica(api, clock, LosesALockCreatesAnswer)
        holders_claim(api, "c0", "deploy://r0")
        hand_over(api, a)
        await a.reconcile(("a", "deploy://r0"))
        for name, resource in (("c1", "deploy://r1"), ("c2", "deploy://r2")):
            holders_claim(api, name, resource)
        hand_over(api, a)
        hand_over(api, b)
        a_ledger = a_api.hold("patch", paths.leases("a"))
        a_grants_c2 = asyncio.create_task(a.reconcile(("a", "deploy://r2")))
        await until(a_ledger.reached)
        with contextlib.suppress(Unreachable):
            await b.reconcile(("a", "deploy://r1"))  # reserved in the ledger, lock made, answer lost
        await a.reconcile(("a", "deploy://r1"))  # refuses c1
        await b.reconcile(("a", "deploy://r2"))  # refuses c2
        a_ledger.open()
        await asyncio.wait_for(a_grants_c2, 5)  # counts B's reservation of c1: refuses c2 as well
        hand_over(api, a)  # A sees c1's lock
        await a.reconcile(("a", "deploy://r1"))  # and deletes it: c1 was refused
        assert holders_locks(api) == 1  # c0's
        holders_claim(api, "c3", "deploy://r3")
        hand_over(api, a)
        await a.reconcile(("a", "deploy://r3"))  # c0 and c1's reservation count
        await b.reconcile(("a", "deploy://r1"))  # B grants c1 again, under its live entry: no ledger write

        assert max(peaks) <= LIMIT, f"the holder's locks after each lock write: {peaks}"
        assert peaks == [1, 2, 2], peaks  # c0's, then c1's twice (each time beside c0's)
        assert api.objects[paths.claims("a", "c3")]["status"]["reason"] == "QuotaExceeded"  # what it costs
        for each in (a, b):
            await each.stop()

    asyncio.run(scenario())


def test_a_waiter_refused_at_its_turn_leaves_no_waiting_reservation_behind() -> None:
    """One replica: a waiter whose turn comes while its holder is at maxHeldPerHolder is refused. Its
    first wait was reserved in the ledger (waiting), but no Pending write can follow a refusal (status
    writes are conditional on the claim's version), so that reservation stops counting: the holder's
    next claim may wait (maxWaitingPerHolder 1), as nothing of the holder waits."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        index = PolicyIndex()
        index.upsert(policy(maxHeldPerHolder=1, maxWaitingPerHolder=1))
        a = reconciler_for(api, Cache(), index, clock)
        others = {"x1": "deploy://r1", "y2": "deploy://r2"}
        for name, resource in (*others.items(), ("c0", "deploy://r0")):  # x1, y2 of others; c0 the holder's
            body = claim(name, resource)
            if name == "c0":
                body["spec"]["holder"] = HOLDER
            a.cache.upsert_claim(api.put(paths.claims("a", name), body))
            await a.reconcile(("a", resource))
        waiter = claim("w1", "deploy://r1", wait=True)
        waiter["spec"]["holder"] = HOLDER
        a.cache.upsert_claim(api.put(paths.claims("a", "w1"), waiter))
        await a.reconcile(("a", "deploy://r1"))
        assert api.objects[paths.claims("a", "w1")]["status"]["phase"] == "Pending"
        released = api.objects.pop(paths.claims("a", "x1"))
        a.cache.delete_claim(released)
        await a.reconcile(("a", "deploy://r1"))  # w1's turn: its holder already holds c0
        assert api.objects[paths.claims("a", "w1")]["status"]["reason"] == "QuotaExceeded"
        second = claim("w2", "deploy://r2", wait=True)
        second["spec"]["holder"] = HOLDER
        a.cache.upsert_claim(api.put(paths.claims("a", "w2"), second))
        await a.reconcile(("a", "deploy://r2"))
        status = api.objects[paths.claims("a", "w2")]["status"]
        assert status["phase"] == "Pending", status["message"]
        await a.stop()

    asyncio.run(scenario())


def test_a_stale_replicas_first_wait_does_not_overwrite_a_live_held_reservation() -> None:
    """A replica whose view is behind queues a claim another replica is granting, and records its
    first wait in the ledger after the grant's hold: the hold must keep counting.

    maxHeldPerHolder 2, maxWaitingPerHolder 3; the holder holds c0, x (another holder) holds r2, the
    holder's c2 waits for r2. x is released; only A sees it.
      1. A decides r2: grants c2, reserves it held in the ledger; its write of the lock (x's lock
         handed to c2, one update) is held.
      2. B decides r2: its view still has x holding r2, so c2 waits for the first time. B's ledger
         write meets A's (409); B reads the ledger and decides again, its view unchanged: it
         records c2 waiting and writes c2's Pending (c2's version has not changed yet).
      3. B decides the holder's c3 on r3: its view shows c0 held and c2 waiting.
      4. A's lock write goes on.
    If B's waiting entry replaced A's held one, B counts only c0 held at 3. and grants c3, and A's
    write makes three locks of the holder under a limit of two."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        peaks: list[int] = []
        counting_locks(api, peaks)
        (a, a_api), (b, _) = (replica(api, clock, waiting=3), replica(api, clock, waiting=3))
        holders_claim(api, "c0", "deploy://r0")
        api.put(paths.claims("a", "x"), claim("x", "deploy://r2"))
        hand_over(api, a)
        for resource in ("deploy://r0", "deploy://r2"):
            await a.reconcile(("a", resource))  # c0 and x granted and told
        holders_claim(api, "c2", "deploy://r2", wait=True)
        hand_over(api, a)
        hand_over(api, b)  # both views: c0 and x held, c2 new
        a.cache.delete_claim(api.objects.pop(paths.claims("a", "x")))  # released: A sees it, B not yet
        a_write = a_api.hold("patch", paths.locks("a"))

        a_grants_c2 = asyncio.create_task(a.reconcile(("a", "deploy://r2")))  # 1.
        await until(a_write.reached)
        await b.reconcile(("a", "deploy://r2"))  # 2.
        assert b.ledgers.conflicts == 1  # it met A's reservation of c2, and decided again
        assert api.objects[paths.claims("a", "c2")]["status"]["phase"] == "Pending"
        holders_claim(api, "c3", "deploy://r3")
        hand_over(api, b)  # c3, and c2 Pending; c2's lock is not made yet
        await b.reconcile(("a", "deploy://r3"))  # 3.
        a_write.open()  # 4.
        await asyncio.wait_for(a_grants_c2, 5)

        assert max(peaks) <= LIMIT, f"the holder's locks after each lock write: {peaks}"
        assert api.objects[paths.claims("a", "c3")]["status"]["reason"] == "QuotaExceeded"
        for each in (a, b):
            await each.stop()

    asyncio.run(scenario())


class FailsALockWrite(GatedClient):
    """The first write to a lock fails (the API server unreachable): the grant it carried is not made."""

    failed = False

    async def patch(self, path: str, patch: dict[str, Any], **params: Any) -> dict[str, Any]:
        if path.startswith(paths.locks("a")) and not self.failed:
            self.failed = True
            raise Unreachable("connection reset")
        return await super().patch(path, patch, **params)


def test_a_waiter_whose_grant_failed_after_its_hold_was_recorded_still_counts_as_waiting() -> None:
    """One replica, maxHeldPerHolder 2, maxWaitingPerHolder 1. The holder's w1 waits for r1; x (another
    holder) releases r1, and w1's turn comes: its hold is recorded in the ledger, then the write of
    its lock fails, so w1 still waits. The holder's w2 arrives to wait for r2. w1's live held entry
    must not hide its wait: it may yet be granted under that entry (so it counts as held), and it
    is waiting now (so it counts as waiting), and w2 would be a second waiter under a limit of one."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        a, _ = replica(api, clock, FailsALockWrite, waiting=1)
        for name, resource in (("x", "deploy://r1"), ("y", "deploy://r2")):
            api.put(paths.claims("a", name), claim(name, resource))
        holders_claim(api, "w1", "deploy://r1", wait=True)
        hand_over(api, a)
        for resource in ("deploy://r1", "deploy://r2"):
            await a.reconcile(("a", resource))  # x and y granted, w1 Pending
        assert api.objects[paths.claims("a", "w1")]["status"]["phase"] == "Pending"
        a.cache.delete_claim(api.objects.pop(paths.claims("a", "x")))
        with contextlib.suppress(Unreachable):
            await a.reconcile(("a", "deploy://r1"))  # w1's hold recorded, its lock write failed
        key = quotaledger.ledger_of(a.policies.policy_for("a", "deploy://r1"), "a", HOLDER)  # type: ignore[union-attr]
        assert entries_of(api.objects[paths.leases("a", lease_name(key))])["u-w1"].count is Count.HELD
        assert api.objects[paths.claims("a", "w1")]["status"]["phase"] == "Pending"
        holders_claim(api, "w2", "deploy://r2", wait=True)
        hand_over(api, a)
        await a.reconcile(("a", "deploy://r2"))

        status = api.objects[paths.claims("a", "w2")]["status"]
        assert status["reason"] == "QuotaExceeded", status
        assert "maxWaitingPerHolder" in status["message"]
        await a.stop()

    asyncio.run(scenario())
