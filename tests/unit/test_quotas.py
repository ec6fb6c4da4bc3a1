"""Quotas: a claim whose grant or wait would go over a LockPolicy's limit ends Rejected
(QuotaExceeded), with a message naming the limit and the policy."""

from __future__ import annotations

import pytest

from kubelock.domain.lockpolicy import LockPolicy, Quotas, Usage
from kubelock.domain.quotas import Count, InFlight, Reservation, usage
from kubelock.domain.reasons import Phase, Reason
from tests.support.arbitration import T0, Space, claim

R1, R2, R3 = "deploy://one", "deploy://two", "deploy://three"


def policy(**limits: int) -> LockPolicy:
    return LockPolicy("deploys", "deploy://", quotas=Quotas(**limits))


def outcome(s: Space, name: str) -> tuple[Phase, Reason, str]:
    status = s.get(name).status
    assert status is not None
    return status.phase, status.reason, status.message


def test_a_holder_over_its_held_quota_is_rejected_naming_the_limit_and_policy() -> None:
    s = Space(lock_policy=policy(max_held_per_holder=2))
    s.add(claim("a1", 1, "agent-a", resource=R1), claim("a2", 2, "agent-a", resource=R2))
    s.settle(T0, [R1, R2])
    s.add(claim("a3", 3, "agent-a", resource=R3), claim("b1", 4, "agent-b", resource=R3 + "/b"))
    s.settle(T0, [R3, R3 + "/b"])
    phase, reason, message = outcome(s, "a3")
    assert (phase, reason) == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert "agent-a already has 2 claims held under LockPolicy deploys" in message
    assert "at most 2 per holder (maxHeldPerHolder)" in message
    assert outcome(s, "b1")[0] is Phase.HELD  # another holder is not limited by agent-a's count
    s.remove("a1")  # a release makes room
    s.add(claim("a4", 5, "agent-a", resource=R1))
    s.settle(T0, [R1])
    assert outcome(s, "a4")[0] is Phase.HELD


def test_a_waiter_is_refused_at_its_grant_when_the_holder_filled_its_quota_meanwhile() -> None:
    s = Space(lock_policy=policy(max_held_per_holder=1))
    s.add(claim("b1", 1, "agent-b", resource=R1))
    s.settle(T0, [R1])
    s.add(claim("a-wait", 2, "agent-a", resource=R1, wait=True), claim("c-wait", 3, "agent-c", resource=R1, wait=True))
    s.settle(T0, [R1])
    s.add(claim("a2", 4, "agent-a", resource=R2))
    s.settle(T0, [R2])
    assert outcome(s, "a2")[0] is Phase.HELD
    s.remove("b1")
    s.settle(T0 + 1, [R1])
    assert outcome(s, "a-wait")[:2] == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert outcome(s, "c-wait")[0] is Phase.HELD  # the next in line is served instead


def test_waiting_quotas_per_holder_and_per_namespace() -> None:
    s = Space(lock_policy=policy(max_waiting_per_holder=1, max_waiting_per_namespace=2))
    s.add(claim("h1", 1, "agent-h", resource=R1), claim("h2", 2, "agent-h", resource=R2))
    s.settle(T0, [R1, R2])
    s.add(claim("a1", 3, "agent-a", resource=R1, wait=True), claim("a2", 4, "agent-a", resource=R2, wait=True))
    s.settle(T0, [R1, R2])
    assert outcome(s, "a1")[0] is Phase.PENDING
    phase, reason, message = outcome(s, "a2")
    assert (phase, reason) == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert "maxWaitingPerHolder" in message
    s.add(claim("b1", 5, "agent-b", resource=R2, wait=True), claim("c1", 6, "agent-c", resource=R2, wait=True))
    s.settle(T0, [R2])
    assert outcome(s, "b1")[0] is Phase.PENDING
    phase, reason, message = outcome(s, "c1")
    assert reason is Reason.QUOTA_EXCEEDED
    assert "2 claims already waiting under LockPolicy deploys in this namespace" in message
    assert "(maxWaitingPerNamespace)" in message


def test_held_quota_per_namespace() -> None:
    s = Space(lock_policy=policy(max_held_per_namespace=1))
    s.add(claim("a1", 1, "agent-a", resource=R1), claim("b1", 2, "agent-b", resource=R2))
    s.settle(T0, [R1, R2])
    assert outcome(s, "a1")[0] is Phase.HELD
    assert outcome(s, "b1")[:2] == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert "(maxHeldPerNamespace)" in outcome(s, "b1")[2]


def test_without_quotas_nothing_is_counted() -> None:
    s = Space(lock_policy=policy())
    for i in range(5):
        s.add(claim(f"a{i}", i, "agent-a", resource=f"deploy://r{i}"))
    s.settle(T0, [f"deploy://r{i}" for i in range(5)])
    assert all(outcome(s, f"a{i}")[0] is Phase.HELD for i in range(5))


def test_a_new_waiter_over_its_quota_is_not_queued_with_the_grant_it_waits_behind() -> None:
    """A claim that arrives between a grant's write and its announcement is answered together with that
    announcement; over its waiting quota it ends QuotaExceeded, never Pending first."""
    s = Space(lock_policy=policy(max_waiting_per_holder=1))
    s.add(claim("h1", 1, "agent-h", resource=R1))
    s.settle(T0, [R1])
    s.add(claim("w1", 2, "agent-w", resource=R1, wait=True))
    s.settle(T0, [R1])
    assert outcome(s, "w1")[0] is Phase.PENDING
    s.add(claim("g", 3, "agent-g", resource=R2))
    s.apply(s.decide(R2, T0).actions)  # g's grant is written, not yet told
    s.add(claim("w2", 4, "agent-w", resource=R2, wait=True))
    s.settle(T0, [R2])
    assert outcome(s, "g")[0] is Phase.HELD
    assert outcome(s, "w2")[:2] == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)


# ---- counting: the view plus what is decided and not yet seen ------------------------------------


def reservation(uid: str, count: Count, holder: str = "agent-a", policy_name: str = "deploys") -> Reservation:
    return Reservation("ns", policy_name, holder, uid, count)


@pytest.mark.parametrize(
    ("observed", "reserved", "held", "waiting"),
    [
        pytest.param({}, [], {}, {}, id="nothing"),
        pytest.param({"u1": ("agent-a", Count.HELD)}, [], {"agent-a": 1}, {}, id="the view alone"),
        pytest.param({}, [reservation("u1", Count.HELD)], {"agent-a": 1}, {}, id="a grant in flight"),
        pytest.param(
            {"u1": ("agent-a", Count.HELD)}, [reservation("u1", Count.HELD)], {"agent-a": 1}, {},
            id="a grant already seen counts once",
        ),
        pytest.param(
            {"u1": ("agent-a", Count.WAITING)}, [reservation("u1", Count.HELD)], {"agent-a": 1}, {"agent-a": 1},
            id="a waiter being granted counts as both until the view shows which it is",
        ),
        pytest.param(
            {}, [reservation("u1", Count.WAITING), reservation("u1", Count.HELD)], {"agent-a": 1}, {"agent-a": 1},
            id="a first wait and a grant reserved of a claim not seen count as both",
        ),
        pytest.param(
            {"u1": ("agent-a", Count.WAITING)}, [reservation("u1", Count.WAITING)], {}, {"agent-a": 1},
            id="a first wait already seen counts once",
        ),
        pytest.param(
            {"u1": ("agent-a", Count.HELD)}, [reservation("u1", Count.WAITING)], {"agent-a": 1}, {},
            id="a first wait the view has overtaken counts as the view says",
        ),
        pytest.param(
            {"u1": ("agent-a", Count.HELD)},
            [reservation("u2", Count.HELD), reservation("u3", Count.WAITING, "agent-b")],
            {"agent-a": 2}, {"agent-b": 1}, id="grants and waits in flight add up per holder",
        ),
    ],
)
def test_usage_counts_each_claim_once_per_count_from_the_view_and_the_reservations(
    observed: dict[str, tuple[str, Count]], reserved: list[Reservation], held: dict[str, int], waiting: dict[str, int]
) -> None:
    counted = usage(observed, reserved)
    assert (dict(counted.held), dict(counted.waiting)) == (held, waiting)


def test_reservations_are_per_namespace_and_policy_and_released_by_uid() -> None:
    ledger = InFlight()
    taken = ledger.reserve([reservation("u1", Count.HELD), reservation("u2", Count.WAITING)])
    ledger.reserve([reservation("u3", Count.HELD, policy_name="other"), Reservation("ns2", "deploys", "a", "u4",
                                                                                    Count.HELD)])
    assert {r.uid for r in ledger.of("ns", "deploys")} == {"u1", "u2"}
    ledger.release(taken)
    assert ledger.of("ns", "deploys") == [] and len(ledger) == 2
    ledger.release(["u1", "u3", "u4"])  # releasing twice, or what was never taken, is harmless
    assert len(ledger) == 0


def test_the_instances_of_one_identity_count_together() -> None:
    """The instance after an identity is the caller's free choice: counted apart, a user could fill
    maxHeldPerHolder (or maxWaitingPerHolder) once per name it makes up. Another identity, and a
    holder of the older form, each count alone."""
    s = Space(lock_policy=policy(max_held_per_holder=1, max_waiting_per_holder=1))
    firsts = {"i1": "user:alice/i1", "p1": "pod:ns/web-0/3f2a1b4c.a", "b1": "user:bob/i1", "old": "alice"}
    for seq, (name, holder) in enumerate(firsts.items()):
        s.add(claim(name, seq, holder, resource=f"deploy://{name}"))
        s.settle(T0, [f"deploy://{name}"])
        assert outcome(s, name)[0] is Phase.HELD, name  # other identities, and an older holder, count alone
    s.add(claim("i2", 10, "user:alice/i2", resource=R2))
    s.add(claim("p2", 11, "pod:ns/web-0/3f2a1b4c.b", resource=R3))
    s.settle(T0, [R2, R3])
    phase, reason, message = outcome(s, "i2")
    assert (phase, reason) == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert "user:alice already has 1 claim held under LockPolicy deploys" in message
    assert outcome(s, "p2")[:2] == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    s.add(claim("w1", 20, "user:dave/w1", resource="deploy://i1", wait=True))
    s.add(claim("w2", 21, "user:dave/w2", resource="deploy://i1", wait=True))
    s.settle(T0, ["deploy://i1"])
    assert [outcome(s, n)[:2] for n in ("w1", "w2")] == [
        (Phase.PENDING, Reason.QUEUED), (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    ]


def test_usage_counts_by_identity() -> None:
    observed = {
        "u1": ("user:alice/a", Count.HELD), "u2": ("user:alice/b", Count.HELD), "u3": ("agent-x", Count.WAITING)
    }
    reserved = [Reservation("ns", "deploys", "user:alice/c", "u4", Count.WAITING)]
    assert usage(observed, reserved) == Usage({"user:alice": 2}, {"agent-x": 1, "user:alice": 1})
