"""Holder policy in the arbiter, with an explicit clock: priorities with aging, revocation requests
(recorded, honoured, forced after the grace), preemption by priority, and onBusy."""

from __future__ import annotations

from dataclasses import replace

from kubelock.domain.arbiter import wait_timeout
from kubelock.domain.model import OnBusy, Policy, RevokeRequest
from kubelock.domain.reasons import Phase, Reason
from tests.support.arbitration import RES, T0, Space, claim, summary


def granted(space: Space) -> set[str]:
    return space.holders(RES)


# ---- priorities ----------------------------------------------------------------------------------


def test_a_later_claim_of_higher_priority_is_granted_first() -> None:
    space = Space().add(claim("a", 1))
    space.settle(T0)
    space.add(claim("low", 2, wait=True), claim("high", 3, wait=True, priority=5))
    space.settle(T0 + 1)
    assert space.get("high").status.queue_position == 1  # type: ignore[union-attr]
    assert space.get("low").status.queue_position == 2  # type: ignore[union-attr]
    space.remove("a")
    space.settle(T0 + 2)
    assert granted(space) == {"high"}


def test_equal_priorities_keep_arrival_order() -> None:
    space = Space().add(claim("a", 1))
    space.settle(T0)
    space.add(claim("b", 2, wait=True, priority=3), claim("c", 3, wait=True, priority=3))
    space.settle(T0 + 1)
    space.remove("a")
    space.settle(T0 + 2)
    assert granted(space) == {"b"}


def test_a_waiter_ages_past_newcomers_of_higher_priority() -> None:
    """low (0) waits from its creation at T0+1; with one point per 10 s it is at 3 from T0+31, ahead of a newcomer of
    priority 2 (the tie at 2, from T0+21, goes by arrival: low is older)."""
    space = Space(policy=Policy(priority_aging_seconds=10)).add(claim("a", 1))
    space.settle(T0)
    space.add(claim("low", 2, wait=True, created=T0 + 1))
    space.settle(T0 + 1)
    space.add(claim("early", 3, wait=True, priority=2, created=T0 + 2))
    space.settle(T0 + 2)
    space.remove("a")
    space.settle(T0 + 5)
    assert granted(space) == {"early"}, "2 beats 0 aged by 4 s"
    space.add(claim("late", 4, wait=True, priority=2, created=T0 + 21))
    space.settle(T0 + 21)
    space.remove("early")
    space.settle(T0 + 21)
    assert granted(space) == {"low"}, "aged to 2 after 20 s: a tie, and low arrived first"


def test_without_enough_waiting_the_higher_priority_still_wins() -> None:
    space = Space(policy=Policy(priority_aging_seconds=10)).add(claim("a", 1))
    space.settle(T0)
    space.add(claim("low", 2, wait=True, created=T0 + 1))
    space.settle(T0 + 1)
    space.add(claim("late", 3, wait=True, priority=2, created=T0 + 20))
    space.remove("a")
    space.settle(T0 + 20)  # low has waited 19 s: 1 point
    assert granted(space) == {"late"}


def test_equal_priorities_stay_first_come_first_served_whatever_order_they_were_answered_in() -> None:
    """Aging runs from a claim's arrival, not from its first answer: answers need not come in arrival
    order (after a restart the operator may answer a later claim first), and a later claim answered
    earlier must not gain its point of aging first and overtake an earlier claim of equal priority."""
    space = Space(policy=Policy(priority_aging_seconds=10)).add(claim("a", 1))
    space.settle(T0)
    space.add(claim("later", 3, wait=True, created=T0 + 1))
    space.settle(T0 + 1.2)  # only the later claim is answered yet (the earlier was not seen)
    space.add(claim("earlier", 2, wait=True, created=T0 + 1))
    space.settle(T0 + 2)
    space.remove("a")
    space.settle(T0 + 11.5)  # later has waited 10.3 s since its answer, earlier 9.5 s
    assert granted(space) == {"earlier"}


# ---- revocation ----------------------------------------------------------------------------------


def ask(space: Space, name: str, grace: int = 30, reason: str = "maintenance") -> None:
    c = space.get(name)
    space.add(replace(c, revoke_request=RevokeRequest("user:admin", grace, reason)))


def test_a_revocation_request_is_recorded_with_its_deadline_and_an_event() -> None:
    space = Space().add(claim("a", 1))
    space.settle(T0)
    ask(space, "a", grace=30)
    decision = space.decide(RES, T0 + 5)
    [action] = decision.actions
    assert action.notice is not None and action.notice.reason is Reason.REVOCATION_REQUESTED  # type: ignore[union-attr]
    assert "user:admin" in action.notice.message and "maintenance" in action.notice.message  # type: ignore[union-attr]
    space.apply(decision.actions)
    status = space.get("a").status
    assert status is not None and status.phase is Phase.HELD
    assert status.revocation is not None
    assert (status.revocation.requested_at, status.revocation.deadline) == (T0 + 5, T0 + 35)
    assert space.decide(RES, T0 + 6).next_deadline == T0 + 35, "woken when the grace ends"


def test_the_holder_releasing_honours_the_request() -> None:
    space = Space().add(claim("a", 1), claim("b", 2, wait=True))
    space.settle(T0)
    ask(space, "a")
    space.settle(T0 + 1)
    space.remove("a")
    space.settle(T0 + 2)
    assert granted(space) == {"b"}
    assert space.get("b").status.revocation is None  # type: ignore[union-attr]


def test_a_renewal_keeps_the_request_and_its_deadline() -> None:
    space = Space().add(claim("a", 1))
    space.settle(T0)
    ask(space, "a")
    space.settle(T0 + 1)
    space.add(replace(space.get("a"), renew_request="r1"))
    space.settle(T0 + 10)
    status = space.get("a").status
    assert status is not None and status.revocation is not None and status.revocation.deadline == T0 + 31


def test_the_lock_is_broken_when_the_grace_ends_and_the_next_waiter_is_granted() -> None:
    space = Space().add(claim("a", 1), claim("b", 2, wait=True))
    space.settle(T0)
    ask(space, "a", grace=30)
    space.settle(T0 + 1)
    space.settle(T0 + 30.9)
    assert granted(space) == {"a"}
    space.log.clear()
    space.settle(T0 + 31)
    assert ("delete", "a", Reason.REVOCATION_GRACE_EXPIRED) in space.log
    status = space.get("a").status
    assert status is not None and status.phase is Phase.REVOKED and status.reason is Reason.REVOCATION_GRACE_EXPIRED
    assert "user:admin" in status.message and "maintenance" in status.message
    assert granted(space) == {"b"}


def test_a_revocation_request_on_a_waiter_waits_for_its_grant() -> None:
    space = Space().add(claim("a", 1), claim("b", 2, wait=True))
    space.settle(T0)
    ask(space, "b")
    space.settle(T0 + 1)
    assert space.get("b").status.revocation is None  # type: ignore[union-attr]


# ---- preemption ----------------------------------------------------------------------------------


def test_preemption_is_off_by_default() -> None:
    space = Space().add(claim("a", 1))
    space.settle(T0)
    space.add(claim("vip", 2, wait=True, priority=1000))
    space.settle(T0 + 1)
    assert space.get("a").status.revocation is None  # type: ignore[union-attr]


def test_a_waiter_far_enough_above_the_holder_asks_it_to_give_the_lock_back() -> None:
    policy = Policy(preemption_priority_delta=100, preemption_grace_seconds=20)
    space = Space(policy=policy).add(claim("a", 1, priority=10))
    space.settle(T0)
    space.add(claim("near", 2, wait=True, priority=109))
    space.settle(T0 + 1)
    assert space.get("a").status.revocation is None, "99 above: not enough"  # type: ignore[union-attr]
    space.add(claim("vip", 3, wait=True, priority=110))
    space.settle(T0 + 2)
    revocation = space.get("a").status.revocation  # type: ignore[union-attr]
    assert revocation is not None and revocation.deadline == T0 + 22
    assert revocation.requested_by == "kubelock-operator" and "vip" in revocation.reason
    space.settle(T0 + 22)
    assert granted(space) == {"vip"}
    assert space.get("a").status.reason is Reason.REVOCATION_GRACE_EXPIRED  # type: ignore[union-attr]


def test_aging_does_not_preempt() -> None:
    policy = Policy(preemption_priority_delta=5, priority_aging_seconds=1)
    space = Space(policy=policy).add(claim("a", 1))
    space.settle(T0)
    space.add(claim("w", 2, wait=True))
    space.settle(T0 + 1)
    space.settle(T0 + 100)
    assert space.get("a").status.revocation is None  # type: ignore[union-attr]


# ---- onBusy --------------------------------------------------------------------------------------


def test_on_busy_fail_times_out_as_before() -> None:
    space = Space().add(claim("a", 1), claim("b", 2, wait=True, wait_timeout_seconds=10))
    space.settle(T0)
    space.settle(T0 + 10)
    assert space.get("b").status.phase is Phase.TIMED_OUT  # type: ignore[union-attr]


def test_on_busy_requeue_goes_to_the_end_of_the_queue_with_a_fresh_wait() -> None:
    space = Space().add(
        claim("a", 1),
        claim("b", 2, wait=True, wait_timeout_seconds=10, on_busy=OnBusy.REQUEUE),
        claim("c", 3, wait=True),
    )
    space.settle(T0)
    assert space.get("b").status.queue_position == 1  # type: ignore[union-attr]
    space.settle(T0 + 10)
    status = space.get("b").status
    assert status is not None and status.phase is Phase.PENDING
    assert (status.requeues, status.waiting_since, status.queue_position) == (1, T0 + 10, 2)
    assert status.sequence > space.get("c").sequence, "behind every claim of the resource"
    assert ("status", "b", Phase.PENDING, Reason.REQUEUED) in [s for s in space.log]
    assert space.decide(RES, T0 + 11).next_deadline == T0 + 20, "the fresh wait has its own timeout"
    space.settle(T0 + 20)
    assert space.get("b").status.requeues == 2  # type: ignore[union-attr]
    space.remove("a")
    space.settle(T0 + 21)
    assert granted(space) == {"c"}


def test_a_requeued_claim_is_granted_when_the_resource_frees() -> None:
    space = Space().add(claim("a", 1), claim("b", 2, wait=True, wait_timeout_seconds=5, on_busy=OnBusy.REQUEUE))
    space.settle(T0)
    space.settle(T0 + 5)
    space.remove("a")
    space.settle(T0 + 6)
    assert granted(space) == {"b"}
    assert summary(space.decide(RES, T0 + 7)) == []


def test_a_deadlock_victim_ends_whatever_its_on_busy() -> None:
    """Going back to the queue would not break the cycle: the victim still ends Deadlocked."""
    space = Space().add(
        claim("a1", 1, "agent-a", resource="r://1"),
        claim("b2", 2, "agent-b", resource="r://2"),
    )
    space.settle(T0, ["r://1", "r://2"])
    space.add(claim("a2", 3, "agent-a", resource="r://2", wait=True))
    space.settle(T0 + 1, ["r://2"])
    space.add(claim("b1", 4, "agent-b", resource="r://1", wait=True, on_busy=OnBusy.REQUEUE))
    space.settle(T0 + 2, ["r://1"])
    assert space.get("b1").status.phase is Phase.DEADLOCKED  # type: ignore[union-attr]


def test_requeues_back_off_so_a_short_wait_cannot_make_the_operator_write_every_second() -> None:
    """After its n-th requeue a wait lasts at least 2^n s, at most 60 s: a claim of
    `waitTimeoutSeconds: 1` is requeued at 1, 3, 7, 15, 31, 63, 123 … s, not every second."""
    space = Space().add(claim("a", 1), claim("b", 2, wait=True, wait_timeout_seconds=1, on_busy=OnBusy.REQUEUE))
    space.settle(T0)
    times = []
    for _ in range(7):
        deadline = space.decide(RES, T0).next_deadline
        assert deadline is not None
        space.settle(deadline)
        times.append(deadline - T0)
    assert times == [1, 3, 7, 15, 31, 63, 123]
    status = space.get("b").status
    assert status is not None and status.requeues == 7
    assert wait_timeout(space.get("b")) == 60
    assert wait_timeout(claim("x", 9, wait=True, wait_timeout_seconds=90, on_busy=OnBusy.REQUEUE)) == 90
