"""The quota ledger's pure rules: which ledger a reservation goes to, what a write keeps, what
counts (live entries of claims not known to have ended, but the claims being decided), and its
encoding as a Lease."""

from __future__ import annotations

import pytest

from kubelock.domain.lockpolicy import LockPolicy, Quotas
from kubelock.domain.quotaledger import (
    RESERVATION_SECONDS,
    SHARDS,
    Entry,
    LedgerKey,
    counted,
    ledger_of,
    needs_ledger,
    recorded,
    unrecorded,
    written,
)
from kubelock.domain.quotas import Count, Reservation, usage
from kubelock.kube.quotaledger import entries_of, lease_name, ledger_body, ledger_patch

T0 = 1_800_000_000.0
PER_HOLDER = LockPolicy("deploys", "deploy://", quotas=Quotas(max_held_per_holder=2))
WAITING_ONLY = LockPolicy("deploys", "deploy://", quotas=Quotas(max_waiting_per_holder=2))
PER_NAMESPACE = LockPolicy("deploys", "deploy://", quotas=Quotas(max_held_per_holder=2, max_held_per_namespace=5))


def reservation(uid: str, holder: str = "agent-a", count: Count = Count.HELD) -> Reservation:
    return Reservation("ns", "deploys", holder, uid, count)


def never_ended(uid: str, count: Count) -> bool:
    return False


def test_only_a_count_that_a_limit_governs_is_recorded() -> None:
    assert needs_ledger(PER_HOLDER, Count.HELD) and not needs_ledger(PER_HOLDER, Count.WAITING)
    assert needs_ledger(WAITING_ONLY, Count.WAITING) and not needs_ledger(WAITING_ONLY, Count.HELD)
    assert recorded(WAITING_ONLY, [reservation("u1")]) == {}
    assert recorded(LockPolicy("open"), [reservation("u1")]) == {}


def test_one_holders_reservations_meet_in_one_ledger_and_a_namespace_limit_uses_one_for_all() -> None:
    holders = [f"user:agent-{i}/main" for i in range(200)]
    shards = {ledger_of(PER_HOLDER, "ns", h).shard for h in holders}
    assert shards <= set(range(SHARDS)) and len(shards) > 1
    assert all(ledger_of(PER_HOLDER, "ns", h) == ledger_of(PER_HOLDER, "ns", h) for h in holders)
    assert {ledger_of(PER_NAMESPACE, "ns", h) for h in holders} == {LedgerKey("ns", "deploys", None)}
    grouped = recorded(PER_NAMESPACE, [reservation("u1", "a"), reservation("u2", "b")])
    assert list(grouped) == [LedgerKey("ns", "deploys", None)] and len(grouped[LedgerKey("ns", "deploys", None)]) == 2


def test_a_write_stamps_new_reservations_and_drops_expired_and_ended_ones() -> None:
    entries = {
        "old": Entry("agent-a", Count.HELD, T0 - RESERVATION_SECONDS - 1),
        "gone": Entry("agent-a", Count.HELD, T0 - 1),
        "live": Entry("agent-b", Count.WAITING, T0 - 1),
        "again": Entry("agent-a", Count.WAITING, T0 - 5),
    }
    after = written(entries, [reservation("new"), reservation("again")], T0, lambda uid, count: uid == "gone")
    assert after == {
        "live": Entry("agent-b", Count.WAITING, T0 - 1),
        "new": Entry("agent-a", Count.HELD, T0),
        "again": Entry("agent-a", Count.HELD, T0),
    }


@pytest.mark.parametrize(
    ("at", "counts"),
    [
        (T0, True),
        (T0 - RESERVATION_SECONDS + 0.5, True),
        (T0 - RESERVATION_SECONDS, False),  # a grant nobody completed stops counting
        (T0 + RESERVATION_SECONDS, True),  # a skewed clock
        (T0 + RESERVATION_SECONDS + 1, False),  # a forged stamp far ahead counts not at all
    ],
)
def test_an_entry_counts_only_within_its_bound(at: float, counts: bool) -> None:
    key = LedgerKey("ns", "deploys", 3)
    result = counted(key, {"u1": Entry("agent-a", Count.HELD, at)}, T0, ended=never_ended)
    assert bool(result) is counts


def test_entries_of_ended_claims_and_of_the_claims_being_decided_do_not_count() -> None:
    key = LedgerKey("ns", "deploys", 3)
    entries = {uid: Entry("agent-a", Count.HELD, T0) for uid in ("ended", "deciding", "other")}
    result = counted(key, entries, T0, ended=lambda uid, count: uid == "ended", exclude={"deciding"})
    assert result == [Reservation("ns", "deploys", "agent-a", "other", Count.HELD)]


def test_a_recorded_hold_adds_a_hold_to_an_observed_wait_and_counts_a_claim_not_seen_yet() -> None:
    """Another replica's reservation counts like this operator's own: a claim once per count, whatever
    knows of it. A claim seen waiting with a live hold counts as both: its grant may be under way, or
    may have failed and left it waiting."""
    observed = {"seen-waiting": ("agent-a", Count.WAITING), "seen-held": ("agent-a", Count.HELD)}
    key = LedgerKey("ns", "deploys", 3)
    entries = {
        "seen-waiting": Entry("agent-a", Count.HELD, T0),
        "seen-held": Entry("agent-a", Count.HELD, T0),
        "unseen": Entry("agent-a", Count.HELD, T0),
    }
    total = usage(observed, counted(key, entries, T0, ended=never_ended))
    assert total.held == {"agent-a": 3} and total.waiting == {"agent-a": 1}


def test_the_ledger_reads_back_what_it_writes_and_reads_garbage_as_nothing() -> None:
    key = LedgerKey("ns", "deploys", 7)
    entries = {"u1": Entry("user:alice/main", Count.HELD, T0 + 0.25), "u2": Entry("x", Count.WAITING, T0)}
    body = ledger_body(key, entries)
    assert body["kind"] == "Lease" and body["metadata"]["name"] == "kubelock-quota-07.deploys" == lease_name(key)
    assert entries_of(body) == entries
    patch = ledger_patch(entries, "42")
    assert patch["metadata"]["resourceVersion"] == "42" and entries_of(patch) == entries
    assert entries_of({"metadata": {"annotations": {"kubelock.dev/quota-reservations": "not json"}}}) == {}
    bad = '{"u1": {"holder": "a"}, "u2": {"holder": "b", "count": "held", "at": "2027-01-15T08:00:00Z"}}'
    assert list(entries_of({"metadata": {"annotations": {"kubelock.dev/quota-reservations": bad}}})) == ["u2"]
    assert lease_name(LedgerKey("ns", "deploys", None)) == "kubelock-quota.deploys"
    assert len(lease_name(LedgerKey("ns", "p" * 253, 1))) <= 253


def test_a_reservation_still_live_in_the_ledger_needs_no_new_write() -> None:
    entries = {"held": Entry("agent-a", Count.HELD, T0 - 5), "old": Entry("agent-a", Count.HELD, T0 - 40),
               "waiting": Entry("agent-a", Count.WAITING, T0 - 5)}
    wanted = [reservation("held"), reservation("old"), reservation("waiting"), reservation("new")]
    assert [r.uid for r in unrecorded(entries, wanted, T0)] == ["old", "waiting", "new"]


def test_a_wait_does_not_replace_a_live_hold_of_the_same_claim() -> None:
    """The hold may be a grant another replica is writing; it gives way only to its end."""
    entries = {
        "held": Entry("agent-a", Count.HELD, T0 - 5),
        "old": Entry("agent-a", Count.HELD, T0 - RESERVATION_SECONDS - 1),
        "over": Entry("agent-a", Count.HELD, T0 - 5),
    }
    waits = [reservation(uid, count=Count.WAITING) for uid in ("held", "old", "over", "new")]
    assert [r.uid for r in unrecorded(entries, waits, T0)] == ["old", "new"]
    after = written(entries, waits, T0, lambda uid, count: uid == "over")  # its claim known to be over
    assert after == {
        "held": Entry("agent-a", Count.HELD, T0 - 5),
        "old": Entry("agent-a", Count.WAITING, T0),
        "over": Entry("agent-a", Count.WAITING, T0),
        "new": Entry("agent-a", Count.WAITING, T0),
    }


def test_the_instances_of_one_identity_share_a_ledger() -> None:
    """Quotas count an identity's instances together, so their reservations must meet in one ledger:
    two replicas reserving for two instances at once are then ordered by the API server."""
    instances = [f"user:alice/worker-{i}" for i in range(50)]
    assert {ledger_of(PER_HOLDER, "ns", h) for h in instances} == {ledger_of(PER_HOLDER, "ns", "user:alice/x")}
