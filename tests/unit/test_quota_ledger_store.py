"""The operator's store of quota ledgers (`kubelock.operator.quotaledger.QuotaLedgers`) keeps only the
ledgers in use: one whose entries no longer count (past their bound, or their claims known to be
over) is forgotten at the next count, and a forgotten ledger is written again like one never seen."""

from __future__ import annotations

import asyncio

from kubelock.domain.lockpolicy import LockPolicy, Quotas
from kubelock.domain.quotaledger import RESERVATION_SECONDS
from kubelock.domain.quotas import Count, Reservation
from kubelock.operator.quotaledger import QuotaLedgers
from tests.support.fakeapi import FakeApi

T0 = 1_800_000_000.0
POLICY = LockPolicy("deploys", "deploy://", quotas=Quotas(max_held_per_holder=2))
NAMESPACES = [f"ns{i}" for i in range(40)]


def held(namespace: str, uid: str) -> Reservation:
    return Reservation(namespace, POLICY.name, "agent-a", uid, Count.HELD)


def test_ledgers_whose_claims_ended_are_forgotten_and_written_again_when_needed() -> None:
    async def run() -> None:
        over: set[str] = set()
        api = FakeApi()
        ledgers = QuotaLedgers(api, lambda uid, count: uid in over)  # type: ignore[arg-type]
        for namespace in NAMESPACES:
            assert await ledgers.record(POLICY, [held(namespace, f"{namespace}-c")], T0)
        assert len(ledgers._known) == len(NAMESPACES)
        # Every claim deleted but the one of ns0: the ledgers of the others count nothing any more.
        over.update(f"{namespace}-c" for namespace in NAMESPACES[1:])
        later = T0 + RESERVATION_SECONDS / 2
        assert [r.uid for r in ledgers.reservations("ns0", POLICY, later)] == ["ns0-c"]
        assert [key.namespace for key in ledgers._known] == ["ns0"]
        # Past its bound the last one goes too.
        assert ledgers.reservations("ns0", POLICY, T0 + 2 * RESERVATION_SECONDS) == []
        assert not ledgers._known
        # A forgotten ledger, still in the API, is written again: its create meets the Lease, which is
        # read, and the next attempt (the decision taken again) writes on its version.
        now = T0 + 3 * RESERVATION_SECONDS
        again = [held("ns1", "ns1-d")]
        assert not await ledgers.record(POLICY, again, now)
        assert await ledgers.record(POLICY, again, now)
        assert [r.uid for r in ledgers.reservations("ns1", POLICY, now)] == ["ns1-d"]

    asyncio.run(run())


def test_a_ledger_found_gone_is_not_kept() -> None:
    async def run() -> None:
        api = FakeApi()
        ledgers = QuotaLedgers(api, lambda uid, count: False)  # type: ignore[arg-type]
        assert await ledgers.record(POLICY, [held("ns0", "c")], T0)
        [key] = list(ledgers._known)
        api.objects.clear()  # its namespace deleted, say
        await ledgers.reread(key)
        assert not ledgers._known

    asyncio.run(run())


def test_the_ledgers_of_a_deleted_policy_are_forgotten() -> None:
    async def run() -> None:
        ledgers = QuotaLedgers(FakeApi(), lambda uid, count: False)  # type: ignore[arg-type]
        other = LockPolicy("others", "github://", quotas=Quotas(max_held_per_holder=2))
        assert await ledgers.record(POLICY, [held("ns0", "c")], T0)
        assert await ledgers.record(POLICY, [held("ns1", "d")], T0)
        assert await ledgers.record(other, [Reservation("ns0", "others", "agent-a", "e", Count.HELD)], T0)
        ledgers.forget_policy("ns0", POLICY.name)
        assert sorted((k.namespace, k.policy) for k in ledgers._known) == [("ns0", "others"), ("ns1", "deploys")]

    asyncio.run(run())
