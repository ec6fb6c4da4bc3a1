"""Arbitration of one resource: `decide` as a table of situations and the actions they call for.

Time is explicit: every decision gets `now=`, and the timeline tests drive a ManualClock.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from kubelock.domain.arbiter import decide, effective_ttl, release_notice
from kubelock.domain.clock import ManualClock
from kubelock.domain.model import (
    Claim,
    CreateLock,
    DeleteLock,
    Lock,
    LockBreak,
    PodLiveness,
    Policy,
    RenewLock,
    SetStatus,
)
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.waitfor import CYCLE_SHOWN, WaitForGraph
from tests.support.arbitration import (
    POLICY,
    RES,
    T0,
    Space,
    claim,
    holding,
    lock_for,
    only_status,
    run,
    statuses,
    summary,
    with_phase,
)

# ---- the table -------------------------------------------------------------------------------

A = claim("agent-a", 5)
A_LOCK = lock_for(A)
A_HELD = holding(A, A_LOCK)
STALE_AT = T0 + 900  # half of the 1800 s lease without a renewal
EXPIRES = A_LOCK.expires_at


def case(claims: list[Claim], lock: Lock | None, now: float, expected: list[tuple[object, ...]],
         policy: Policy = POLICY, id: str = "") -> object:
    return pytest.param(claims, lock, now, policy, expected, id=id)


CASES = [
    # A free resource goes to the lowest-sequence active claim (the grant's token is the store's).
    case([], None, T0, [], id="free-no-claims"),
    case([A], None, T0, [("create", "agent-a", 1800)], id="free-one-claim"),
    case([claim("b", 9, wait=True), claim("c", 7), A], None, T0,
         [("create", "agent-a", 1800), ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
          ("status", "b", Phase.PENDING, Reason.QUEUED)],
         id="free-lowest-sequence-wins-others-answered"),
    case([with_phase(claim("b", 3), Phase.REJECTED, Reason.HELD_BY_ANOTHER), A], None, T0,
         [("create", "agent-a", 1800)], id="free-terminal-claims-ignored"),
    case([with_phase(claim("b", 3), Phase.EXPIRED, Reason.LEASE_EXPIRED)], None, T0, [], id="free-only-terminal"),
    case([claim("a", 5, ttl_seconds=60)], None, T0, [("create", "a", 60)], id="free-claim-ttl"),
    case([A], None, T0, [("create", "agent-a", 600)], Policy(default_ttl_seconds=600),
         id="free-policy-default-ttl"),
    case([A], None, T0, [("create", "agent-a", 3600)], Policy(default_ttl_seconds=7200, max_ttl_seconds=3600),
         id="free-default-ttl-capped-at-max"),
    case([with_phase(claim("a", 5, ttl_seconds=90_000, wait=True), Phase.PENDING, Reason.QUEUED)], None, T0,
         [("create", "a", 86_400)], id="free-edited-ttl-capped-at-max"),
    # The lock exists: finish the grant.
    case([A], A_LOCK, T0, [("status", "agent-a", Phase.HELD, Reason.GRANTED)], id="grant-completes"),
    case([with_phase(claim("agent-a", 5, wait=True), Phase.PENDING, Reason.QUEUED, holder="x", position=1)],
         A_LOCK, T0, [("status", "agent-a", Phase.HELD, Reason.GRANTED)], id="grant-completes-for-waiter"),
    case([A_HELD], A_LOCK, T0 + 1, [], id="held-quiet"),
    # Others while held.
    case([A_HELD, claim("b", 6)], A_LOCK, T0, [("status", "b", Phase.REJECTED, Reason.HELD_BY_ANOTHER)],
         id="try-lock-while-held"),
    case([A_HELD, claim("c", 7, wait=True), claim("b", 6, wait=True)], A_LOCK, T0,
         [("status", "b", Phase.PENDING, Reason.QUEUED), ("status", "c", Phase.PENDING, Reason.QUEUED)],
         id="waiters-queue-in-sequence-order"),
    case([A_HELD, claim("b", 6, wait=True), claim("c", 7), claim("d", 8, wait=True)], A_LOCK, T0,
         [("status", "b", Phase.PENDING, Reason.QUEUED), ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
          ("status", "d", Phase.PENDING, Reason.QUEUED)], id="mixed-waiters-and-try-locks"),
    # Expiry: at or after lock.expires_at.
    case([holding(A, A_LOCK, stale=True)], A_LOCK, EXPIRES - 0.001, [], id="just-before-expiry"),
    case([A_HELD], A_LOCK, EXPIRES,
         [("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED), ("delete", "agent-a", Reason.LEASE_EXPIRED)],
         id="expiry-at-expires-at"),
    case([A_HELD], A_LOCK, EXPIRES + 3600,
         [("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED), ("delete", "agent-a", Reason.LEASE_EXPIRED)],
         id="expiry-after-expires-at"),
    # Renewal.
    case([holding(replace(A, renew_request="r2"), A_LOCK, observed_renew="r1")], A_LOCK, T0 + 60,
         [("renew", "agent-a", 1800), ("status", "agent-a", Phase.HELD, Reason.GRANTED)], id="renewal"),
    case([holding(replace(A, renew_request="r1"), A_LOCK, observed_renew="r1")], A_LOCK, T0 + 60, [],
         id="same-renew-marker-is-not-a-renewal"),
    case([holding(replace(A, renew_request="r2"), A_LOCK, observed_renew="r1")], A_LOCK, EXPIRES,
         [("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED), ("delete", "agent-a", Reason.LEASE_EXPIRED)],
         id="renewal-seen-after-expiry-is-too-late"),
    case([with_phase(replace(A, renew_request="r2"), Phase.EXPIRED, Reason.LEASE_EXPIRED)], None, EXPIRES + 5, [],
         id="renewal-of-expired-claim-does-nothing"),
    case([with_phase(replace(A, renew_request="r2"), Phase.EXPIRED, Reason.LEASE_EXPIRED)], A_LOCK, EXPIRES + 5,
         [("delete", "agent-a", Reason.RELEASED)], id="renewal-of-expired-claim-does-not-renew-leftover-lock"),
    # Stale.
    case([A_HELD], A_LOCK, STALE_AT - 0.001, [], id="not-stale-yet"),
    case([A_HELD], A_LOCK, STALE_AT, [("status", "agent-a", Phase.HELD, Reason.GRANTED)], id="stale"),
    case([holding(A, A_LOCK, stale=True)], A_LOCK, STALE_AT + 10, [], id="stale-only-once"),
    # Wait timeouts.
    case([A_HELD, with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                             holder="agent-a", position=1, since=T0 + 0.5)], A_LOCK, T0 + 60.5,
         [("status", "b", Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT)], id="wait-timeout"),
    case([A_HELD, with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                             holder="agent-a", position=1, since=T0 + 0.5)], A_LOCK, T0 + 60.4,
         [], id="wait-timeout-counts-from-first-seen"),
    # A Pending status written without waitingSince: from the creation time rounded up to the second.
    case([A_HELD, with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                             holder="agent-a", position=1)], A_LOCK, T0 + 60.9,
         [("status", "b", Phase.PENDING, Reason.QUEUED)], id="wait-timeout-of-an-older-status-not-before-creation"),
    case([A_HELD, with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                             holder="agent-a", position=1)], A_LOCK, T0 + 61,
         [("status", "b", Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT)], id="wait-timeout-of-an-older-status"),
    case([A_HELD, claim("b", 6, wait=True, wait_timeout_seconds=1)], A_LOCK, T0 + 30,
         [("status", "b", Phase.PENDING, Reason.QUEUED)], id="wait-timeout-not-before-first-seen"),
    case([A_HELD, claim("b", 6, wait=True, wait_timeout_seconds=60)], A_LOCK, T0 + 59,
         [("status", "b", Phase.PENDING, Reason.QUEUED)], id="wait-timeout-not-yet"),
    case([A_HELD, claim("b", 6, wait_timeout_seconds=1)], A_LOCK, T0 + 30,
         [("status", "b", Phase.REJECTED, Reason.HELD_BY_ANOTHER)], id="wait-timeout-ignored-for-try-lock"),
    case([holding(claim("agent-a", 5, wait=True, wait_timeout_seconds=1), A_LOCK)], A_LOCK, T0 + 30, [],
         id="holder-never-times-out"),
    # Release and broken locks.
    case([claim("b", 6, wait=True, created=T0 + 9)], A_LOCK, T0 + 10, [("delete", "agent-a", Reason.RELEASED)],
         id="holder-claim-deleted"),
    case([A_HELD, claim("b", 6, wait=True)], None, T0 + 10,
         [("status", "agent-a", Phase.REVOKED, Reason.LOCK_BROKEN)], id="lock-deleted-under-holder"),
    # Pods.
    case([claim("a", 5, pod_name="p", pod=PodLiveness.TERMINATED)], None, T0,
         [("status", "a", Phase.REJECTED, Reason.HOLDER_POD_TERMINATED)], id="fresh-claim-pod-terminated"),
    case([claim("a", 5, pod_name="p", pod=PodLiveness.MISSING)], None, T0,
         [("status", "a", Phase.REJECTED, Reason.POD_NOT_FOUND)], id="fresh-claim-pod-missing"),
    case([holding(claim("agent-a", 5, pod_name="p", pod=PodLiveness.TERMINATED), A_LOCK)], A_LOCK, T0 + 10,
         [("status", "agent-a", Phase.REVOKED, Reason.HOLDER_POD_TERMINATED),
          ("delete", "agent-a", Reason.HOLDER_POD_TERMINATED)], id="held-claim-pod-terminated"),
    case([holding(claim("agent-a", 5, pod_name="p", pod=PodLiveness.MISSING), A_LOCK)], A_LOCK, T0 + 10,
         [("status", "agent-a", Phase.REVOKED, Reason.HOLDER_POD_TERMINATED),
          ("delete", "agent-a", Reason.HOLDER_POD_TERMINATED)], id="held-claim-pod-missing"),
    case([A_HELD, with_phase(claim("b", 6, wait=True, pod_name="p", pod=PodLiveness.TERMINATED), Phase.PENDING,
                             Reason.QUEUED)], A_LOCK, T0 + 10,
         [("status", "b", Phase.REVOKED, Reason.HOLDER_POD_TERMINATED)], id="waiting-claim-pod-terminated"),
    case([claim("a", 5, pod_name="p", pod=PodLiveness.ALIVE)], None, T0, [("create", "a", 1800)],
         id="pod-alive"),
    # A pod being deleted: until it is reported stopped, it may still be working under its lock.
    case([holding(claim("agent-a", 5, pod_name="p", pod=PodLiveness.STOPPING), A_LOCK), claim("b", 6, wait=True)],
         A_LOCK, T0 + 10, [("status", "b", Phase.PENDING, Reason.QUEUED)], id="held-claim-pod-stopping-keeps-it"),
    # Its lease still bounds it: a pod on a lost node stops renewing (its grace's end decides nothing).
    case([holding(claim("agent-a", 5, pod_name="p", pod=PodLiveness.STOPPING), A_LOCK), claim("b", 6, wait=True)],
         A_LOCK, EXPIRES, [("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED),
                           ("status", "b", Phase.PENDING, Reason.QUEUED),
                           ("delete", "agent-a", Reason.LEASE_EXPIRED)], id="held-claim-pod-stopping-expires"),
    case([claim("a", 5, pod_name="p", pod=PodLiveness.STOPPING)], None, T0,
         [("status", "a", Phase.REJECTED, Reason.HOLDER_POD_TERMINATED)], id="fresh-claim-pod-stopping"),
    # A waiter of a pod being deleted is refused as a new claim is: its process still runs and reads the
    # answer, and it lost nothing (it was told Revoked, "lost its pod", before).
    case([A_HELD, with_phase(claim("b", 6, wait=True, pod_name="p", pod=PodLiveness.STOPPING), Phase.PENDING,
                             Reason.QUEUED)], A_LOCK, T0 + 10,
         [("status", "b", Phase.REJECTED, Reason.HOLDER_POD_TERMINATED)], id="waiting-claim-pod-stopping"),
    # Spec out of bounds.
    case([claim("a", 5, ttl_seconds=86_401)], None, T0, [("status", "a", Phase.REJECTED, Reason.INVALID_SPEC)],
         id="ttl-above-max"),
    case([claim("a", 5, ttl_seconds=3601)], None, T0, [("status", "a", Phase.REJECTED, Reason.INVALID_SPEC)],
         Policy(max_ttl_seconds=3600), id="ttl-above-lowered-max"),
    case([claim("a", 5, ttl_seconds=3600)], None, T0, [("create", "a", 3600)], Policy(max_ttl_seconds=3600),
         id="ttl-at-max"),
    # Self-deadlock: the holder waits, through another claim, for what it already holds.
    case([A_HELD, claim("a-again", 6, holder="agent-a", wait=True)], A_LOCK, T0,
         [("status", "a-again", Phase.DEADLOCKED, Reason.SELF_DEADLOCK)], id="self-deadlock"),
    case([A_HELD, claim("a-again", 6, holder="agent-a")], A_LOCK, T0,
         [("status", "a-again", Phase.REJECTED, Reason.HELD_BY_ANOTHER)], id="self-try-lock-is-rejected"),
]


@pytest.mark.parametrize(("claims", "lock", "now", "policy", "expected"), CASES)
def test_decide(claims: list[Claim], lock: Lock | None, now: float, policy: Policy,
                expected: list[tuple[object, ...]]) -> None:
    assert summary(run(claims, lock, now, policy)) == expected


@pytest.mark.parametrize(("claims", "lock", "now", "policy", "expected"), CASES)
def test_decide_is_pure(claims: list[Claim], lock: Lock | None, now: float, policy: Policy,
                        expected: list[tuple[object, ...]]) -> None:
    """Same inputs, same decision; the claims' order does not matter."""
    first = run(claims, lock, now, policy)
    assert run(list(reversed(claims)), lock, now, policy) == first
    assert run(claims, lock, now, policy) == first


# ---- details of each situation ---------------------------------------------------------------


def test_create_lock_carries_the_claim_time_and_lease_and_no_token() -> None:
    """The domain never invents a token: the grant store assigns it (the lock's creation revision)."""
    b = claim("b", 9, ttl_seconds=90)
    [action] = run([b], None, T0 + 3).actions
    assert action == CreateLock(b, acquired_at=T0 + 3, lease_seconds=90)


@pytest.mark.parametrize(
    ("ttl", "policy", "expected"),
    [
        pytest.param(None, Policy(), 1800, id="default"),
        pytest.param(None, Policy(default_ttl_seconds=42), 42, id="policy-default"),
        pytest.param(10, Policy(), 10, id="own"),
        pytest.param(None, Policy(default_ttl_seconds=500, max_ttl_seconds=100), 100, id="default-capped"),
        pytest.param(200, Policy(max_ttl_seconds=100), 100, id="own-capped"),
    ],
)
def test_effective_ttl(ttl: int | None, policy: Policy, expected: int) -> None:
    assert effective_ttl(claim("a", 1, ttl_seconds=ttl), policy) == expected


def test_grant_status_uses_the_lock() -> None:
    lock = lock_for(A, acquired=T0 + 2, token=77, lease=300)
    action = only_status(run([replace(A, renew_request="hb-1")], lock, T0 + 3))
    status = action.status
    assert status.phase is Phase.HELD
    assert status.fencing_token == 77
    assert status.holder == "agent-a"
    assert status.lock_name == lock.name
    assert (status.acquired_at, status.renewed_at, status.expires_at) == (T0 + 2, T0 + 2, T0 + 302)
    assert status.observed_renew == "hb-1", "an annotation present at grant time is not a renewal"
    assert status.queue_position is None
    assert action.notice is not None
    assert action.notice.reason is Reason.GRANTED
    assert not action.notice.warning


def test_a_lock_is_the_grant_and_its_claim_is_told_its_token_on_the_next_step() -> None:
    """No step writes the token: the lock carries it from its creation (its creation revision), and
    the step after the create tells the claim that token, with the lease the lock started."""
    grant = lock_for(A, token=4711, acquired=T0, lease=300)
    decision = run([A], grant, T0 + 1)
    assert [type(a) for a in decision.actions] == [SetStatus]
    status = only_status(decision).status
    assert (status.phase, status.fencing_token, status.expires_at) == (Phase.HELD, 4711, T0 + 300)
    # Its claim gone before it was told, the lock is deleted like any lock of a released claim.
    assert summary(run([], grant, T0 + 1)) == [("delete", A.name, Reason.RELEASED)]


def test_a_grant_left_untold_for_half_its_lease_is_renewed_before_its_holder_is_told() -> None:
    """An operator stopped between the create and the `Held` write: the next one does not hand the
    holder a lease that is running out, it renews the lock (recording its token) and tells both."""
    fresh = claim("a", 5, ttl_seconds=300)
    grant = lock_for(fresh, token=4711, acquired=T0, lease=300)
    renew, told = run([fresh], grant, T0 + 200).actions
    assert renew == RenewLock(grant, T0 + 200, 300)
    assert isinstance(told, SetStatus)
    assert (told.status.phase, told.status.fencing_token) == (Phase.HELD, 4711)
    assert (told.status.acquired_at, told.status.renewed_at, told.status.expires_at) == (T0, T0 + 200, T0 + 500)
    # Just before half the lease, it is told the lease as it stands.
    (told,) = run([fresh], grant, T0 + 149).actions
    assert isinstance(told, SetStatus) and told.status.expires_at == T0 + 300


def test_try_lock_rejection_names_the_holder() -> None:
    action = only_status(run([A_HELD, claim("b", 6)], A_LOCK, T0 + 1))
    assert action.status.holder == "agent-a"
    assert "agent-a" in action.status.message
    assert RES in action.status.message
    assert action.status.fencing_token is None
    assert action.notice is not None
    assert action.notice.reason is Reason.HELD_BY_ANOTHER


def test_waiters_get_positions_in_sequence_order_and_name_the_holder() -> None:
    waiters = [claim(n, s, wait=True) for n, s in (("d", 40), ("b", 20), ("c", 30), ("e", 50))]
    found = statuses(run([*waiters, A_HELD], A_LOCK, T0 + 1))
    assert {n: s.queue_position for n, s in found.items()} == {"b": 1, "c": 2, "d": 3, "e": 4}
    for status in found.values():
        assert status.phase is Phase.PENDING
        assert status.holder == "agent-a"
        assert f"position {status.queue_position}" in status.message


def test_queue_is_idempotent_and_only_changed_positions_are_written() -> None:
    space = Space().add(A_HELD, claim("b", 6, wait=True), claim("c", 7, wait=True), claim("d", 8, wait=True))
    space.grants[RES] = [A_LOCK]
    first = space.decide(RES, T0 + 1)
    assert len(first.actions) == 3
    notices = [a.notice for a in first.actions if isinstance(a, SetStatus)]
    assert all(n is not None and n.reason is Reason.QUEUED for n in notices)
    space.apply(first.actions)
    again = space.decide(RES, T0 + 1)
    assert again.actions == ()
    # Applying the same decision twice is harmless.
    space.apply(first.actions)
    assert space.decide(RES, T0 + 1).actions == ()
    # b leaves the queue: c becomes first and is written (without a new Queued event); d, now second
    # and written as third, is still within its band (docs/api.md, `queuePosition`) and is not.
    space.remove("b")
    moved = space.decide(RES, T0 + 2)
    assert {a.claim.name: (a.status.queue_position, a.notice) for a in moved.actions if isinstance(a, SetStatus)} \
        == {"c": (1, None)}


def test_expiry_keeps_the_record_and_warns() -> None:
    decision = run([A_HELD], A_LOCK, EXPIRES)
    expired, delete = decision.actions
    assert isinstance(expired, SetStatus)
    assert expired.status.phase is Phase.EXPIRED
    assert expired.status.lock_name is None
    assert expired.status.queue_position is None
    assert "expired" in expired.status.message
    assert expired.notice is not None
    assert expired.notice.warning
    assert delete == DeleteLock(A_LOCK, Reason.LEASE_EXPIRED)


def test_renewal_extends_the_lease_from_now() -> None:
    a = holding(replace(A, renew_request="r2", ttl_seconds=600), A_LOCK, observed_renew="r1")
    renew, update = run([a], A_LOCK, T0 + 90).actions
    assert renew == RenewLock(A_LOCK, renewed_at=T0 + 90, lease_seconds=600)
    assert isinstance(update, SetStatus)
    assert update.status.phase is Phase.HELD
    assert update.status.renewed_at == T0 + 90
    assert update.status.expires_at == T0 + 90 + 600
    assert update.status.acquired_at == T0
    assert update.status.fencing_token == A_LOCK.fencing_token
    assert update.status.observed_renew == "r2"
    assert update.notice is None  # not stale: no Event for an ordinary heartbeat


def test_renewal_is_idempotent() -> None:
    space = Space().add(holding(replace(A, renew_request="r2"), A_LOCK, observed_renew="r1"))
    space.grants[RES] = [A_LOCK]
    decision = space.decide(RES, T0 + 90)
    space.apply(decision.actions)
    assert space.lock(RES).expires_at == T0 + 90 + 1800
    assert space.decide(RES, T0 + 90).actions == ()
    space.apply(decision.actions)  # twice: the same state
    assert space.decide(RES, T0 + 91).actions == ()


def test_stale_sets_the_condition_and_warns_that_the_renewal_schedule_was_missed() -> None:
    action = only_status(run([A_HELD], A_LOCK, STALE_AT))
    assert action.status.stale is True
    assert action.status.phase is Phase.HELD
    assert action.notice is not None
    assert action.notice.reason is Reason.STALE
    assert action.notice.warning
    assert action.notice.message == (
        "lock deploy://api-prod held by agent-a has not been renewed for 15 minutes, 50% of its 30 minutes lease "
        "(holders renew every third of it); it expires at 2027-01-15T08:30:00.000000Z unless renewed"
    )


def test_stale_is_measured_from_the_last_renewal() -> None:
    lock = lock_for(A, renewed=T0 + 1000)
    a = holding(A, lock)
    assert run([a], lock, T0 + 1000 + 899).actions == ()
    assert only_status(run([a], lock, T0 + 1000 + 900)).status.stale


@pytest.mark.parametrize("lease", [3, 60, 600, 1800, 86400])
def test_a_holder_renewing_every_third_of_its_lease_is_never_stale(lease: int) -> None:
    """Renewals on the SDK's schedule, each seen a little late, over ten leases: never Stale."""
    clock = ManualClock(start=T0)
    space = Space(policy=Policy(default_ttl_seconds=lease)).add(claim("a", 5))
    space.settle(clock.now())
    for beat in range(30):
        deadline = space.settle(clock.now()).next_deadline
        step = lease / 3 * 1.05  # 5% late
        assert deadline is not None and deadline > clock.now() + step  # nothing due before the renewal
        clock.advance(step)
        space.add(replace(space.get("a"), renew_request=f"beat-{beat}"))
        space.settle(clock.now())
        assert space.get("a").phase is Phase.HELD
        assert not space.get("a").status.stale  # type: ignore[union-attr]
    assert not any(entry[0] == "status" and entry[3] is Reason.STALE for entry in space.log)


@pytest.mark.parametrize(("percent", "stale_after"), [(34, 612), (50, 900), (90, 1620)])
def test_stale_comes_after_the_configured_share_of_the_lease(percent: int, stale_after: float) -> None:
    policy = Policy(stale_after_percent=percent)
    assert run([A_HELD], A_LOCK, T0 + stale_after - 0.001, policy).actions == ()
    assert only_status(run([A_HELD], A_LOCK, T0 + stale_after, policy)).status.stale


def test_stale_check_off_at_100_percent() -> None:
    policy = Policy(stale_after_percent=100)
    assert run([A_HELD], A_LOCK, EXPIRES - 0.001, policy).actions == ()
    assert run([A_HELD], A_LOCK, T0 + 1, policy).next_deadline == EXPIRES


def test_renewing_clears_stale() -> None:
    a = holding(replace(A, renew_request="r2"), A_LOCK, observed_renew="r1", stale=True)
    renew, update = run([a], A_LOCK, STALE_AT + 30).actions
    assert isinstance(renew, RenewLock)
    assert isinstance(update, SetStatus)
    assert update.status.stale is False
    assert update.notice is not None
    assert update.notice.reason is Reason.RENEWED


def test_wait_timeout_names_the_holder() -> None:
    b = with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                   holder="agent-a", position=1)
    action = only_status(run([A_HELD, b], A_LOCK, T0 + 61))
    assert action.status.phase is Phase.TIMED_OUT
    assert action.status.holder == "agent-a"
    assert "60s" in action.status.message
    assert action.status.queue_position is None


def test_a_break_names_its_actor_and_reason_in_the_message_and_the_log_details() -> None:
    decision = decide(RES, [A_HELD], [], now=T0 + 10, policy=POLICY, graph=WaitForGraph(),
                      broken=LockBreak("lockadmin", "stuck since Friday"))
    action = only_status(decision)
    assert action.status.reason is Reason.LOCK_BROKEN
    assert action.status.message == "the lock on deploy://api-prod was broken by lockadmin: stuck since Friday"
    assert action.notice is not None
    assert dict(action.notice.details) == {"actor": "lockadmin", "breakReason": "stuck since Friday"}


def test_a_namespace_being_deleted_is_not_an_administrators_break() -> None:
    decision = decide(RES, [A_HELD], [], now=T0 + 10, policy=POLICY, graph=WaitForGraph(),
                      broken=LockBreak(namespace_deleted=True))
    action = only_status(decision)
    assert action.status.phase is Phase.REVOKED
    assert action.status.reason is Reason.NAMESPACE_DELETED
    assert "namespace is being deleted" in action.status.message
    assert "administrator" not in action.status.message


def test_deleting_a_held_claim_is_announced_as_a_release() -> None:
    notice = release_notice(A_HELD, T0 + 125)
    assert notice is not None
    assert notice.reason is Reason.RELEASED
    assert not notice.warning
    assert notice.message == "agent-a released deploy://api-prod (fencing token 1000) after holding it for 125 seconds"


@pytest.mark.parametrize(
    "gone",
    [
        pytest.param(claim("b", 6, wait=True), id="undecided"),
        pytest.param(with_phase(claim("b", 6, wait=True), Phase.PENDING, Reason.QUEUED), id="waiting"),
        pytest.param(with_phase(A, Phase.EXPIRED, Reason.LEASE_EXPIRED), id="finished"),
    ],
)
def test_deleting_a_claim_that_held_nothing_is_no_release(gone: Claim) -> None:
    assert release_notice(gone, T0 + 1) is None


def test_the_lock_of_a_deleted_claim_is_deleted_as_released() -> None:
    assert run([claim("b", 6, wait=True, created=T0 + 124)], A_LOCK, T0 + 125).actions == (
        DeleteLock(A_LOCK, Reason.RELEASED),
    )


def test_every_terminal_status_records_when_it_finished() -> None:
    decision = run([A_HELD], A_LOCK, EXPIRES + 7)
    expired = statuses(decision)["agent-a"]
    assert expired.finished_at == EXPIRES + 7


FINISHED = replace(with_phase(claim("b", 3), Phase.REJECTED, Reason.HELD_BY_ANOTHER),
                   status=replace(with_phase(claim("b", 3), Phase.REJECTED, Reason.HELD_BY_ANOTHER).status,
                                  finished_at=T0 + 100))


@pytest.mark.parametrize(
    ("policy", "now", "expected_actions", "expected_deadline"),
    [
        pytest.param(POLICY, T0 + 100 + 3599, [], T0 + 100 + 3600, id="kept-until-due"),
        pytest.param(POLICY, T0 + 100 + 3600, [("remove", "b")], None, id="removed-when-due"),
        pytest.param(Policy(ttl_seconds_after_finished=60), T0 + 160, [("remove", "b")], None, id="short-ttl"),
        pytest.param(Policy(ttl_seconds_after_finished=0), T0 + 10**7, [], None, id="kept-forever"),
    ],
)
def test_terminal_claims_are_removed_after_ttl_seconds_after_finished(
    policy: Policy, now: float, expected_actions: list[tuple[object, ...]], expected_deadline: float | None
) -> None:
    decision = run([FINISHED], None, now, policy)
    assert summary(decision) == expected_actions
    if expected_deadline is not None:
        assert decision.next_deadline == expected_deadline


def test_removal_deadline_joins_the_lease_deadlines() -> None:
    policy = Policy(ttl_seconds_after_finished=60, stale_after_percent=100)
    decision = run([A_HELD, FINISHED], A_LOCK, T0 + 101, policy)
    assert decision.actions == ()
    assert decision.next_deadline == T0 + 160  # before the lease's expiry at T0 + 1800
    assert summary(run([A_HELD, FINISHED], A_LOCK, T0 + 160, policy)) == [("remove", "b")]


def test_a_terminal_claim_without_finished_at_counts_from_its_creation() -> None:
    old = with_phase(claim("b", 3, created=T0 - 4000), Phase.EXPIRED, Reason.LEASE_EXPIRED)
    assert summary(run([old], None, T0)) == [("remove", "b")]


def test_new_claims_are_answered_in_the_step_that_finishes_a_grant() -> None:
    """Their answers do not depend on the Held write, so they do not wait a write behind it;
    known waiters' new positions do wait (written once the queue is still)."""
    queued = with_phase(claim("b", 6, wait=True), Phase.PENDING, Reason.QUEUED, holder="x", position=2)
    new_try, new_wait = claim("c", 7), claim("d", 8, wait=True)
    assert summary(run([A, queued, new_try, new_wait], A_LOCK, T0 + 1)) == [
        ("status", "agent-a", Phase.HELD, Reason.GRANTED),
        ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
        ("status", "d", Phase.PENDING, Reason.QUEUED),
    ]


def test_new_claims_are_answered_in_the_step_that_grants_the_resource_to_another() -> None:
    """Not a write and a round later: under load the grant's write alone takes a second or more, and
    a claim must have an answer within seconds. The answers name the claim being granted."""
    decision = run([claim("c", 7), A, claim("d", 8, wait=True)], None, T0)
    assert summary(decision) == [
        ("create", "agent-a", POLICY.default_ttl_seconds),
        ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
        ("status", "d", Phase.PENDING, Reason.QUEUED),
    ]
    answers = statuses(decision)
    assert answers["c"].holder == "agent-a" and answers["d"].holder == "agent-a"
    assert answers["d"].queue_position == 1


def test_new_claims_are_answered_in_the_step_that_ends_a_lease() -> None:
    """An expiry is two writes in sequence (the status, then the lock): new claims are answered
    beside the first, as the next step will see the resource: the next waiter is not answered (it
    is granted next), a try-lock behind it is turned away naming it."""
    lock = lock_for(A, lease=30)
    decision = run([holding(A, lock), claim("d", 6, wait=True, created=T0 + 30), claim("c", 7)], lock, T0 + 31)
    assert summary(decision) == [
        ("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED),
        ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
        ("delete", "agent-a", Reason.LEASE_EXPIRED),
    ]
    assert statuses(decision)["c"].holder == "d"


def test_a_release_answers_new_claims_beside_it_but_not_the_claim_granted_next() -> None:
    """A release is one write (or the one write that also makes the next grant: the hand-over); new
    claims are answered beside it, as the resource will be after it, and the claim granted next is
    left to the grant."""
    decision = run([claim("d", 6, wait=True), claim("c", 7), claim("e", 8, wait=True)], A_LOCK, T0 + 1)
    assert summary(decision) == [
        ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
        ("status", "e", Phase.PENDING, Reason.QUEUED),
        ("delete", "agent-a", Reason.RELEASED),
    ]
    assert statuses(decision)["e"].holder == "d" and statuses(decision)["e"].queue_position == 1


def test_new_claims_are_answered_while_another_waiter_times_out() -> None:
    late = with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                      holder="agent-a", position=1)
    assert summary(run([A_HELD, late, claim("c", 7)], A_LOCK, T0 + 61)) == [
        ("status", "b", Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT),
        ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
    ]


def test_a_free_resource_is_granted_while_waiters_time_out() -> None:
    late = with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                      holder="x", position=1)
    assert summary(run([late, claim("c", 7, wait=True, created=T0 + 60)], None, T0 + 61)) == [
        ("status", "b", Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT),
        ("create", "c", POLICY.default_ttl_seconds),
    ]


def test_a_renewal_seen_on_the_claim_before_the_lock_keeps_the_lease() -> None:
    """Another replica renewed: the claim (one watch) already says so, the lock (another) not yet."""
    lock = lock_for(A, lease=30)
    told = holding(A, lock)
    renewed = replace(told, status=replace(told.status, renewed_at=T0 + 25, expires_at=T0 + 55))
    assert summary(run([renewed], lock, T0 + 31)) == []
    assert summary(run([renewed], lock, T0 + 56))[0] == ("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED)


def test_a_lease_expires_while_waiters_time_out() -> None:
    """Endings of waiters do not hold back the holder's expiry."""
    late = with_phase(claim("b", 6, wait=True, wait_timeout_seconds=60), Phase.PENDING, Reason.QUEUED,
                      holder="agent-a", position=1)
    lock = lock_for(A, lease=30)
    assert summary(run([holding(A, lock), late], lock, T0 + 61)) == [
        ("status", "b", Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT),
        ("status", "agent-a", Phase.EXPIRED, Reason.LEASE_EXPIRED),
        ("delete", "agent-a", Reason.LEASE_EXPIRED),
    ]


def test_lock_broken_revokes_every_claim_that_believes_it_holds() -> None:
    decision = run([A_HELD, claim("b", 6, wait=True)], None, T0 + 10)
    action = only_status(decision)
    assert action.status.phase is Phase.REVOKED
    assert action.status.reason is Reason.LOCK_BROKEN
    assert action.notice is not None
    assert action.notice.warning
    # Nothing is granted until the believer is told.
    assert not any(isinstance(a, CreateLock) for a in decision.actions)


def test_held_claim_pod_terminated_releases_the_lock_with_its_reason() -> None:
    a = holding(claim("agent-a", 5, pod_name="agent-a-pod", pod=PodLiveness.TERMINATED), A_LOCK)
    revoked, delete = run([a], A_LOCK, T0 + 10).actions
    assert isinstance(revoked, SetStatus)
    assert "agent-a-pod" in revoked.status.message
    assert delete == DeleteLock(A_LOCK, Reason.HOLDER_POD_TERMINATED)


def test_unknown_pod_liveness_takes_no_decision_on_it() -> None:
    a = claim("a", 5, pod_name="p", pod=PodLiveness.UNKNOWN)
    assert summary(run([a], None, T0)) == [("create", "a", 1800)]


def test_ttl_above_max_message_names_the_setting() -> None:
    action = only_status(run([claim("a", 5, ttl_seconds=90_000)], None, T0))
    assert "ttlSeconds 90000" in action.status.message
    assert "maxTtlSeconds" in action.status.message
    assert "86400" in action.status.message


def test_self_deadlock_cycle() -> None:
    action = only_status(run([A_HELD, claim("a-again", 6, holder="agent-a", wait=True)], A_LOCK, T0))
    assert action.status.cycle == ("agent-a", RES, "agent-a")
    assert "agent-a → deploy://api-prod → agent-a" in action.status.message


# ---- deadlock across resources ---------------------------------------------------------------

R1, R2 = "deploy://api-prod", "github://acme/app/pr/10"


def two_holder_deadlock() -> Space:
    """agent-a holds R1 and agent-b holds R2; then a waits for R2 (seq 3) and b for R1 (seq 4)."""
    space = Space().add(claim("a1", 1, "agent-a", resource=R1), claim("b1", 2, "agent-b", resource=R2))
    space.settle(T0, [R1, R2])
    assert space.get("a1").phase is Phase.HELD
    assert space.get("b1").phase is Phase.HELD
    space.add(claim("a2", 3, "agent-a", resource=R2, wait=True), claim("b2", 4, "agent-b", resource=R1, wait=True))
    return space


def test_two_holder_deadlock_decided_directly() -> None:
    space = two_holder_deadlock()
    graph = space.graph()
    # The graph as the operator builds it.
    assert graph.holders_of(R1) == {"agent-a"}
    assert graph.holders_of(R2) == {"agent-b"}
    assert graph.waits_of("agent-a") == {R2: 3}
    assert graph.waits_of("agent-b") == {R1: 4}

    on_r1 = space.decide(R1, T0 + 1)
    dead = only_status(on_r1)
    assert dead.claim.name == "b2"
    assert dead.status.phase is Phase.DEADLOCKED
    assert dead.status.reason is Reason.DEADLOCK
    assert dead.status.cycle == ("agent-b", R1, "agent-a", R2, "agent-b")
    assert dead.notice is not None
    assert dead.notice.warning

    on_r2 = space.decide(R2, T0 + 1)
    waiting = only_status(on_r2)
    assert waiting.claim.name == "a2"
    assert waiting.status.phase is Phase.PENDING
    assert waiting.status.holder == "agent-b"
    assert on_r2.also_reconcile == frozenset({R1}), "the victim's resource is woken"


@pytest.mark.parametrize("order", [[R1, R2], [R2, R1]], ids=["r1-first", "r2-first"])
def test_two_holder_deadlock_only_the_newest_claim_is_deadlocked(order: list[str]) -> None:
    space = two_holder_deadlock()
    space.settle(T0 + 1, order)
    assert space.get("b2").phase is Phase.DEADLOCKED
    assert space.get("a2").phase is Phase.PENDING
    assert space.get("a1").phase is Phase.HELD
    assert space.get("b1").phase is Phase.HELD
    # Once b releases R2, a gets it.
    space.remove("b1")
    space.settle(T0 + 2, [R2])
    assert space.get("a2").phase is Phase.HELD
    b_token, a_token = (g.token for g in space.issued if g.resource == R2)
    assert space.get("a2").status.fencing_token == space.lock(R2).fencing_token == a_token > b_token  # type: ignore[union-attr]


def test_contract_example_cycle_from_agent_a() -> None:
    """The contract's example: agent-a's claim is the newest, so it is the one Deadlocked."""
    space = Space().add(claim("b1", 1, "agent-b", resource=R1), claim("a1", 2, "agent-a", resource=R2))
    space.settle(T0, [R1, R2])
    space.add(claim("b2", 3, "agent-b", resource=R2, wait=True), claim("a2", 4, "agent-a", resource=R1, wait=True))
    space.settle(T0 + 1, [R1, R2])
    assert space.get("a2").phase is Phase.DEADLOCKED
    assert space.get("a2").status.cycle == ("agent-a", R1, "agent-b", R2, "agent-a")  # type: ignore[union-attr]
    assert space.get("b2").phase is Phase.PENDING


def test_three_holder_deadlock() -> None:
    r3 = "db://orders"
    space = Space().add(claim("a1", 1, "a", resource=R1), claim("b1", 2, "b", resource=R2),
                        claim("c1", 3, "c", resource=r3))
    space.settle(T0, [R1, R2, r3])
    space.add(claim("a2", 10, "a", resource=R2, wait=True), claim("b2", 12, "b", resource=r3, wait=True),
              claim("c2", 11, "c", resource=R1, wait=True))
    space.settle(T0 + 1, [R1, R2, r3])
    phases = {n: space.get(n).phase for n in ("a2", "b2", "c2")}
    assert phases == {"a2": Phase.PENDING, "b2": Phase.DEADLOCKED, "c2": Phase.PENDING}
    assert space.get("b2").status.cycle == ("b", r3, "c", R1, "a", R2, "b")  # type: ignore[union-attr]


def test_a_long_deadlock_reports_the_two_ends_of_its_cycle() -> None:
    """A chain of 60 holders closed by the last: the victim's status names the whole cycle's
    length but shows only its two ends, so its size does not grow with the cycle."""
    n = 60
    resources = [f"db://r{i}" for i in range(n)]
    space = Space().add(*(claim(f"h{i}", i + 1, f"agent-{i}", resource=resources[i]) for i in range(n)))
    space.add(*(claim(f"w{i}", n + i + 1, f"agent-{i}", resource=resources[i + 1], wait=True) for i in range(n - 1)))
    for start in range(0, n, 30):
        space.settle(T0, resources[start : start + 30])
    space.add(claim("close", 3 * n, f"agent-{n - 1}", resource=resources[0], wait=True))
    space.settle(T0 + 2, [resources[0]])
    status = space.get("close").status
    assert status is not None and status.phase is Phase.DEADLOCKED
    assert status.cycle_length == n
    assert status.cycle is not None and len(status.cycle) == 2 * CYCLE_SHOWN + 1
    assert status.cycle[:3] == (f"agent-{n - 1}", resources[0], "agent-0")
    assert status.cycle[-3:] == (f"agent-{n - 2}", resources[n - 1], f"agent-{n - 1}")
    assert f"… {n - CYCLE_SHOWN} more holders …" in status.message
    assert len(status.message) < 1024
    assert all(space.get(f"w{i}").phase is Phase.PENDING for i in range(n - 1))


def test_a_short_deadlock_reports_its_whole_cycle_and_length() -> None:
    space = Space().add(claim("a1", 1, "a", resource=R1), claim("b1", 2, "b", resource=R2))
    space.settle(T0, [R1, R2])
    space.add(claim("a2", 10, "a", resource=R2, wait=True), claim("b2", 11, "b", resource=R1, wait=True))
    space.settle(T0 + 1, [R1, R2])
    status = space.get("b2").status
    assert status is not None
    assert status.cycle == ("b", R1, "a", R2, "b") and status.cycle_length == 2
    assert status.message == f"deadlock: b → {R1} → a → {R2} → b"


# ---- next_deadline ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holder", "lock", "waiters", "now", "expected"),
    [
        pytest.param(A_HELD, A_LOCK, [], T0 + 1, STALE_AT, id="stale-check-first"),
        pytest.param(holding(A, A_LOCK, stale=True), A_LOCK, [], STALE_AT + 1, EXPIRES, id="already-stale-expiry"),
        pytest.param(holding(A, lock_for(A, lease=60)), lock_for(A, lease=60), [], T0 + 1, T0 + 30,
                     id="short-lease-stale-at-half-of-it"),
        pytest.param(A_HELD, A_LOCK, [claim("b", 6, wait=True, wait_timeout_seconds=30, created=T0 + 5)], T0 + 6,
                     T0 + 36, id="wait-timeout-first"),  # counted from when first seen (now), not creation
        pytest.param(A_HELD, A_LOCK, [claim("b", 6, wait=True, wait_timeout_seconds=300),
                                      claim("c", 7, wait=True, wait_timeout_seconds=90)], T0 + 1, T0 + 91,
                     id="earliest-of-several-wait-timeouts"),
        pytest.param(A_HELD, A_LOCK, [claim("b", 6, wait=True, wait_timeout_seconds=3000)], T0 + 1, STALE_AT,
                     id="wait-timeout-later-than-stale"),
        pytest.param(A_HELD, A_LOCK, [claim("b", 6, wait=True)], T0 + 1, STALE_AT, id="waiter-without-timeout"),
    ],
)
def test_next_deadline_is_the_earliest_of_expiry_stale_and_wait_timeouts(
    holder: Claim, lock: Lock, waiters: list[Claim], now: float, expected: float
) -> None:
    assert run([holder, *waiters], lock, now).next_deadline == expected


def test_next_deadline_after_settling_matches_the_quiet_decision() -> None:
    space = Space().add(A_HELD, claim("b", 6, wait=True, wait_timeout_seconds=45))
    space.grants[RES] = [A_LOCK]
    quiet = space.settle(T0 + 1)
    assert quiet.actions == ()
    assert quiet.next_deadline == T0 + 46
    assert space.get("b").status.waiting_since == T0 + 1  # type: ignore[union-attr]


def test_a_2_second_wait_never_ends_before_2_seconds() -> None:
    # Created at T0 + 0.9: creationTimestamp says T0 (truncated to the second). First seen at T0 + 0.95.
    space = Space().add(A_HELD, claim("b", 6, wait=True, wait_timeout_seconds=2, created=T0))
    space.grants[RES] = [A_LOCK]
    first = space.settle(T0 + 0.95)
    assert space.get("b").phase is Phase.PENDING
    assert first.next_deadline == T0 + 2.95
    space.settle(T0 + 2.94)
    assert space.get("b").phase is Phase.PENDING
    space.settle(T0 + 2.95)
    assert space.get("b").phase is Phase.TIMED_OUT


# ---- a timeline on a manual clock ------------------------------------------------------------


def test_timeline_grant_renew_stale_expire_and_hand_over() -> None:
    clock = ManualClock(start=T0)
    space = Space(policy=Policy(default_ttl_seconds=600, stale_after_percent=50))
    space.add(claim("a", 10), claim("b", 11, wait=True), claim("c", 12))
    space.settle(clock.now())
    assert space.get("a").phase is Phase.HELD
    a_token = space.lock(RES).fencing_token
    assert space.get("a").status.fencing_token == a_token  # type: ignore[union-attr]  # the token issued
    assert space.get("b").phase is Phase.PENDING
    assert space.get("b").status.queue_position == 1  # type: ignore[union-attr]
    assert space.get("c").phase is Phase.REJECTED
    assert space.get("c").status.holder == "a"  # type: ignore[union-attr]

    clock.advance(100)  # a heartbeat
    space.add(replace(space.get("a"), renew_request="hb-1"))
    space.settle(clock.now())
    assert space.lock(RES).renewed_at == clock.now()
    assert space.get("a").status.expires_at == clock.now() + 600  # type: ignore[union-attr]

    clock.advance(300)  # no heartbeat for half of the 10-minute lease
    quiet = space.settle(clock.now())
    assert space.get("a").status.stale  # type: ignore[union-attr]
    assert ("status", "a", Phase.HELD, Reason.GRANTED) in space.log
    assert quiet.next_deadline == T0 + 100 + 600

    clock.advance(quiet.next_deadline - clock.now())  # the lease runs out
    space.settle(clock.now())
    assert space.get("a").phase is Phase.EXPIRED
    assert space.get("b").phase is Phase.HELD
    assert space.lock(RES).claim_name == "b"
    assert space.lock(RES).fencing_token > a_token
    assert space.get("b").status.fencing_token == space.lock(RES).fencing_token  # type: ignore[union-attr]

    # A late heartbeat from a does not bring it back.
    space.add(replace(space.get("a"), renew_request="hb-2"))
    assert space.settle(clock.now()).actions == ()
    assert space.get("a").phase is Phase.EXPIRED
    assert space.lock(RES).claim_name == "b"


def test_fencing_tokens_increase_across_releases_expiries_and_revocations() -> None:
    clock = ManualClock(start=T0)
    space = Space(policy=Policy(default_ttl_seconds=60))
    space.add(*(claim(f"w{i}", 100 + i, wait=True) for i in range(5)))
    tokens: list[int] = []
    for step in range(5):
        space.settle(clock.now())
        tokens.append(space.lock(RES).fencing_token)
        holder = space.lock(RES).claim_name
        if step % 3 == 0:
            space.remove(holder)  # released
        elif step % 3 == 1:
            clock.advance(60)  # expired
        else:
            del space.grants[RES]  # broken by an administrator
    assert tokens == sorted(set(tokens))
    assert len(tokens) == 5


# ---- randomized: settling never leaves a deadlock behind -------------------------------------


@pytest.mark.parametrize("seed", range(0, 400, 20))
def test_settling_in_any_order_leaves_no_pending_claim_in_a_cycle(seed: int) -> None:
    """Claims from a few holders on a few resources, decided in a random order: afterwards no
    Pending claim closes a cycle, and every Deadlocked claim reports a cycle through itself."""
    rng = random.Random(seed)
    holders = [f"h{i}" for i in range(rng.randint(2, 6))]
    resources = [f"r://{i}" for i in range(rng.randint(2, 6))]
    space = Space()
    seq = 0

    def add(holder: str, resource: str, wait: bool) -> None:
        nonlocal seq
        seq += 1
        space.add(claim(f"{holder}-{resource}-{seq}", seq, holder, resource=resource, wait=wait))

    for resource in resources:
        add(rng.choice(holders), resource, wait=False)
    space.settle(T0, resources)
    for _ in range(rng.randint(4, 14)):
        add(rng.choice(holders), rng.choice(resources), wait=True)
        if rng.random() < 0.5:
            space.settle(T0 + 1, rng.sample(resources, len(resources)))
    space.settle(T0 + 1, rng.sample(resources, len(resources)))

    graph = space.graph()
    for c in space.claims.values():
        if c.phase is Phase.PENDING:
            assert graph.find_cycle(c.holder, c.resource, c.sequence) is None, c
        elif c.phase is Phase.DEADLOCKED:
            cycle = c.status.cycle  # type: ignore[union-attr]
            assert cycle is not None
            assert cycle[0] == cycle[-1] == c.holder
            assert cycle[1] == c.resource
    for resource, lk in ((r, g) for r, gs in space.grants.items() for g in gs):
        holder = next(c for c in space.claims.values() if c.uid == lk.claim_uid)
        assert holder.phase is Phase.HELD
        assert holder.resource == resource


@pytest.mark.parametrize("order", [["r://0", "r://1", "r://2", "r://3"], ["r://1", "r://2", "r://3", "r://0"]],
                         ids=["r0-first", "r1-first"])
def test_overlapping_cycles_are_all_broken(order: list[str]) -> None:
    """Two cycles share b→r3→c→r0: a→r2(7)→b→r3(5)→c→r0(8)→a and a→r1(10)→b→r3(5)→c→r0(8)→a.
    c's claim (8) is the newest of the first cycle and is deadlocked whatever the order. a's claim on
    r1 (10) is the newest of the second, so it is deadlocked too when decided before c's, but stays
    Pending when decided after: the number of victims depends on the order. Either way none is left."""
    space = Space().add(claim("a-r0", 1, "a", resource="r://0"), claim("b-r1", 2, "b", resource="r://1"),
                        claim("b-r2", 3, "b", resource="r://2"), claim("c-r3", 4, "c", resource="r://3"))
    space.settle(T0, order)
    space.add(claim("b-r3", 5, "b", resource="r://3", wait=True), claim("a-r2", 7, "a", resource="r://2", wait=True),
              claim("c-r0", 8, "c", resource="r://0", wait=True), claim("a-r1", 10, "a", resource="r://1", wait=True))
    space.settle(T0 + 1, order)
    assert space.get("c-r0").phase is Phase.DEADLOCKED
    assert space.get("b-r3").phase is Phase.PENDING
    assert space.get("a-r2").phase is Phase.PENDING
    graph = space.graph()
    for c in space.claims.values():
        if c.phase is Phase.PENDING:
            assert graph.find_cycle(c.holder, c.resource, c.sequence) is None


def test_a_waiter_whose_grant_the_graph_shows_before_its_claim_is_held_is_not_deadlocked() -> None:
    """Two replicas: one hands the lock to the waiter b; the other sees that lock write (the graph:
    b holds the resource) before b's `Held`, and decides from grants that still show agent-a. b's
    wait on its own grant under way is no cycle (it was told `Deadlocked`, "b → resource → b")."""
    b = with_phase(claim("b", 6, wait=True), Phase.PENDING, Reason.QUEUED, holder="agent-a", position=1)
    graph = WaitForGraph()
    graph.add_wait("b", RES, 6)
    graph.set_holder(RES, "b")
    decision = decide(RES, [A_HELD, b], [A_LOCK], now=T0 + 10, policy=POLICY, graph=graph)
    told = statuses(decision).get("b")
    assert told is None or told.phase is Phase.PENDING, told
