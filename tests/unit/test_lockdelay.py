"""Lock-delay: after a grant ends abnormally the resource rests for the policy's lockDelaySeconds;
a release has none. Time is explicit: every step is decided at a given `now`."""

from __future__ import annotations

from dataclasses import replace

from kubelock.domain.arbiter import decide
from kubelock.domain.lockpolicy import LockPolicy
from kubelock.domain.model import CreateLock, FinishedClaim, LockBreak, PodLiveness, Policy, RevokeRequest, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.timefmt import to_rfc3339
from kubelock.domain.waitfor import WaitForGraph
from tests.support.arbitration import RES, T0, Space, claim

DELAY = LockPolicy("rest-10", "deploy://", lock_delay_seconds=10)
LEASE = 60


def space(policy: LockPolicy = DELAY) -> Space:
    """agent-a holds RES with a 60 s lease; agent-b waits for it."""
    s = Space(lock_policy=policy)
    s.add(claim("agent-a", 5, ttl_seconds=LEASE))
    s.settle(T0)
    s.add(claim("agent-b", 6, wait=True))
    s.settle(T0)
    assert s.holders(RES) == {"agent-a"}
    return s


def test_after_an_expiry_the_next_waiter_is_granted_only_when_the_delay_ends() -> None:
    s = space()
    expired_at = T0 + LEASE
    last = s.settle(expired_at)
    a, b = s.get("agent-a").status, s.get("agent-b").status
    assert a is not None and b is not None
    assert (a.phase, a.reason, a.available_at) == (Phase.EXPIRED, Reason.LEASE_EXPIRED, expired_at + 10)
    assert "rests until" in a.message
    assert RES not in s.grants
    assert (b.phase, b.reason, b.available_at, b.queue_position) == (
        Phase.PENDING, Reason.LOCK_DELAY, expired_at + 10, 1
    )
    assert f"rests until {to_rfc3339(expired_at + 10)}" in b.message
    assert "the lease of agent-a expired" in b.message and "LockPolicy rest-10" in b.message
    assert last.next_deadline == expired_at + 10  # the deadline heap wakes the resource then
    s.settle(expired_at + 9.99)
    assert RES not in s.grants
    s.settle(expired_at + 10)
    assert s.holders(RES) == {"agent-b"}
    held = s.get("agent-b").status
    assert held is not None and held.phase is Phase.HELD and held.available_at is None


def test_the_waiter_is_told_of_the_delay_once_with_an_event() -> None:
    s = space()
    decision = s.decide(RES, T0 + LEASE)
    s.apply(decision.actions)  # Expired, lock deleted
    told = [a for a in s.decide(RES, T0 + LEASE).actions if isinstance(a, SetStatus)]
    assert [(a.claim.name, a.status.reason) for a in told] == [("agent-b", Reason.LOCK_DELAY)]
    assert told[0].notice is not None and told[0].notice.reason is Reason.LOCK_DELAY
    s.apply(told)
    assert s.decide(RES, T0 + LEASE + 1).actions == ()


def test_a_release_has_no_delay() -> None:
    s = space()
    s.remove("agent-a")
    s.settle(T0 + 5)
    assert s.holders(RES) == {"agent-b"}


def test_no_delay_without_a_policy_that_sets_one() -> None:
    s = space(LockPolicy("no-rest", "deploy://"))
    s.settle(T0 + LEASE)
    a = s.get("agent-a").status
    assert a is not None and a.phase is Phase.EXPIRED and a.available_at is None
    assert s.holders(RES) == {"agent-b"}


def test_a_broken_lock_rests_and_the_break_says_so() -> None:
    s = space()
    del s.grants[RES]  # an admin deleted the lock
    broken = LockBreak(actor="alice", reason="stuck")
    decision = decide(
        RES, list(s.claims.values()), [], now=T0 + 5, policy=s.policy, graph=s.graph(), lock_policy=DELAY,
        broken=broken,
    )
    s.apply(decision.actions)
    a = s.get("agent-a").status
    assert a is not None and (a.phase, a.reason, a.available_at) == (Phase.REVOKED, Reason.LOCK_BROKEN, T0 + 15)
    assert "broken by alice: stuck" in a.message and "lock-delay" in a.message
    s.settle(T0 + 5)
    b = s.get("agent-b").status
    assert b is not None and b.reason is Reason.LOCK_DELAY and "the lock of agent-a was broken" in b.message
    s.settle(T0 + 15)
    assert s.holders(RES) == {"agent-b"}


def test_a_holder_pod_that_terminates_leaves_a_delay_a_waiting_one_does_not() -> None:
    s = Space(lock_policy=DELAY)
    s.add(claim("agent-a", 5, pod_name="pa", pod=PodLiveness.ALIVE))
    s.settle(T0)
    s.add(claim("agent-b", 6, wait=True, pod_name="pb", pod=PodLiveness.ALIVE))
    s.add(claim("agent-c", 7, wait=True))
    s.settle(T0)
    # agent-b's pod ends while it waits: no delay (it held nothing).
    s.claims["uid-agent-b"] = replace(s.get("agent-b"), pod=PodLiveness.TERMINATED)
    s.settle(T0 + 1)
    b = s.get("agent-b").status
    assert b is not None and b.phase is Phase.REVOKED and b.available_at is None
    # agent-a's pod ends while it holds: the resource rests.
    s.claims["uid-agent-a"] = replace(s.get("agent-a"), pod=PodLiveness.TERMINATED)
    s.settle(T0 + 2)
    a = s.get("agent-a").status
    assert a is not None and (a.reason, a.available_at) == (Reason.HOLDER_POD_TERMINATED, T0 + 12)
    c = s.get("agent-c").status
    assert c is not None and c.reason is Reason.LOCK_DELAY and "the pod of agent-a terminated" in c.message
    s.settle(T0 + 12)
    assert s.holders(RES) == {"agent-c"}


def test_a_try_lock_during_the_delay_is_turned_away_until_then() -> None:
    s = space()
    s.settle(T0 + LEASE)
    s.add(claim("agent-t", 9))
    s.settle(T0 + LEASE + 1)
    t = s.get("agent-t").status
    assert t is not None and (t.phase, t.reason) == (Phase.REJECTED, Reason.LOCK_DELAY)
    assert "try again then" in t.message


def test_lowering_the_policys_delay_or_deleting_the_ended_claim_ends_the_rest() -> None:
    s = space()
    s.settle(T0 + LEASE)
    s.lock_policy = replace(DELAY, lock_delay_seconds=2)  # the admin lowers the delay
    s.settle(T0 + LEASE + 2)
    assert s.holders(RES) == {"agent-b"}

    s = space()
    s.settle(T0 + LEASE)
    s.remove("agent-a")  # the holder acknowledged its loss: the record the delay rests on is gone
    s.settle(T0 + LEASE + 1)
    assert s.holders(RES) == {"agent-b"}


def test_the_rest_is_rebuilt_from_the_ended_claims_record_after_a_restart() -> None:
    """A restarted operator knows the ended claim only as the record it lists (`FinishedClaim`)."""
    expired = FinishedClaim(
        name="agent-a", uid="uid-agent-a", holder="agent-a", resource=RES, phase=Phase.EXPIRED,
        reason=Reason.LEASE_EXPIRED, finished_at=T0, available_at=T0 + 10,
    )
    waiter = claim("agent-b", 6, wait=True)
    args = {"policy": Policy(), "graph": WaitForGraph(), "lock_policy": DELAY, "finished": [expired]}
    resting = decide(RES, [waiter], [], now=T0 + 3, **args)  # type: ignore[arg-type]
    assert not any(isinstance(a, CreateLock) for a in resting.actions)
    assert resting.next_deadline == T0 + 10
    assert isinstance(decide(RES, [waiter], [], now=T0 + 10, **args).actions[0], CreateLock)  # type: ignore[arg-type]


def test_the_ended_claim_is_kept_until_its_delay_ends() -> None:
    expired = FinishedClaim(
        name="agent-a", uid="uid-agent-a", holder="agent-a", resource=RES, phase=Phase.EXPIRED,
        reason=Reason.LEASE_EXPIRED, finished_at=T0, available_at=T0 + 30,
    )
    policy = Policy(ttl_seconds_after_finished=5)
    early = decide(RES, [], [], now=T0 + 6, policy=policy, graph=WaitForGraph(), finished=[expired])
    assert early.actions == () and early.next_deadline == T0 + 30
    late = decide(RES, [], [], now=T0 + 30, policy=policy, graph=WaitForGraph(), finished=[expired])
    assert [type(a).__name__ for a in late.actions] == ["DeleteClaim"]


def test_a_holder_pod_end_whose_status_write_lost_a_race_still_leaves_the_delay() -> None:
    """The lock of a terminated pod's claim is deleted together with the claim's Revoked status; when
    that status write fails, the claim still says Held and its lock is gone: a grant was lost."""
    s = Space(lock_policy=DELAY)
    s.add(claim("agent-a", 5, pod_name="pa", pod=PodLiveness.ALIVE))
    s.settle(T0)
    s.claims["uid-agent-a"] = replace(s.get("agent-a"), pod=PodLiveness.TERMINATED)
    del s.grants[RES]  # the deletion went through, the status did not
    s.settle(T0 + 1)
    a = s.get("agent-a").status
    assert a is not None and (a.phase, a.reason, a.available_at) == (
        Phase.REVOKED, Reason.HOLDER_POD_TERMINATED, T0 + 11
    )


def test_a_lock_broken_when_its_revocation_grace_ran_out_rests_too() -> None:
    """A forced revocation is a break: the holder may not have stopped, so the next one waits."""
    s = space()
    a = s.get("agent-a")
    s.add(replace(a, revoke_request=RevokeRequest("user:admin", 5, "maintenance")))
    s.settle(T0 + 1)  # the request is recorded: the grace ends at T0 + 6
    s.settle(T0 + 6)
    ended = s.get("agent-a").status
    assert ended is not None and (ended.phase, ended.reason) == (Phase.REVOKED, Reason.REVOCATION_GRACE_EXPIRED)
    assert ended.available_at == T0 + 16 and "lock-delay" in ended.message
    b = s.get("agent-b").status
    assert b is not None and b.reason is Reason.LOCK_DELAY and "revocation grace ran out" in b.message
    s.settle(T0 + 15.9)
    assert RES not in s.grants
    s.settle(T0 + 16)
    assert s.holders(RES) == {"agent-b"}


def test_a_waiter_keeps_its_requeue_count_while_the_resource_rests() -> None:
    s = space()
    b = s.get("agent-b")
    assert b.status is not None
    s.add(replace(b, status=replace(b.status, requeues=2)))  # requeued twice (onBusy: Requeue) before
    s.settle(T0 + LEASE)
    rested = s.get("agent-b").status
    assert rested is not None and rested.reason is Reason.LOCK_DELAY and rested.requeues == 2
