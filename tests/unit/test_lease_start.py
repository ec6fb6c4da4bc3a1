"""A holder's lease counts from the `Held` write, not from the grant's decision
(`kubelock.domain.leasestart`), and the expiry in force is the later of the lock's and the claim's.

Time is explicit: the decision, the writes and the later steps each get their own `now`.
"""

from __future__ import annotations

from dataclasses import replace

from kubelock.domain.leasestart import ALLOWANCE_MAX_SECONDS, allowance, lock_shows, shown_expiry, told_at
from kubelock.domain.model import ClaimStatus, DeleteLock, RenewLock, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.timefmt import to_rfc3339
from tests.support.arbitration import T0, claim, lock_for, only_status, run, summary, with_phase

TTL = 3
DECIDED = T0  # the grant's decision: the lock's acquireTime and renewTime
CREATED = T0 + 1.4  # the lock's create returned (the loaded chaos run: 1.3-1.4 s)
SENT = T0 + 1.6  # the `Held` write is sent
TOLD = T0 + 3.6  # ... and returns (1.0-2.1 s): the holder can know from about here


def held_as_written(sent: float) -> ClaimStatus:
    """The `Held` status the step after the create decides, as the write sent at `sent` stores it."""
    fresh = claim("a", 5, ttl_seconds=TTL, wait=True)
    grant = lock_for(fresh, acquired=DECIDED, lease=TTL)
    return told_at(only_status(run([fresh], grant, CREATED)).status, sent)


def test_the_held_write_counts_the_lease_from_when_it_is_sent() -> None:
    status = held_as_written(SENT)
    assert (status.phase, status.acquired_at) == (Phase.HELD, DECIDED)  # the grant's own moment stays
    assert (status.renewed_at, status.expires_at) == (SENT, SENT + TTL)


def test_a_status_is_never_moved_earlier_nor_one_other_than_held() -> None:
    held = held_as_written(SENT)
    assert told_at(held, SENT - 1) == held
    pending = ClaimStatus(Phase.PENDING, Reason.QUEUED, "", 5, renewed_at=T0, expires_at=T0 + TTL)
    assert told_at(pending, SENT) == pending
    untimed = replace(held, renewed_at=None)
    assert told_at(untimed, SENT + 5) == untimed


def test_a_holder_told_after_its_grant_s_lease_would_have_ended_still_holds_until_its_own_ends() -> None:
    """The loaded chaos run's `a1-020`: decided at 18.59, told at 22.17, a 3 s lease. Counted from the
    decision it ended at 21.59, before the holder knew; counted from the `Held` write it runs until
    that write's moment plus 3 s, and the step in between leaves it alone (only its deadline)."""
    fresh = claim("a", 5, ttl_seconds=TTL, wait=True)
    grant = lock_for(fresh, acquired=DECIDED, lease=TTL)
    told = replace(fresh, status=held_as_written(SENT))
    assert grant.expires_at < SENT + 1.45 < TOLD < SENT + TTL
    quiet = run([told], grant, SENT + 1.45)  # past where the lock alone would have it expire (T0 + 3)
    assert quiet.actions == ()
    assert quiet.next_deadline == SENT + TTL / 2  # half the lease without a renewal: Stale, no more
    (stale,) = run([told], grant, TOLD).actions
    assert isinstance(stale, SetStatus) and stale.status.phase is Phase.HELD and stale.status.stale
    assert stale.notice is not None and to_rfc3339(SENT + TTL) in stale.notice.message
    assert run([replace(told, status=stale.status)], grant, TOLD).next_deadline == SENT + TTL
    ended = run([told], grant, SENT + TTL)
    assert summary(ended) == [("status", "a", Phase.EXPIRED, Reason.LEASE_EXPIRED),
                              ("delete", "a", Reason.LEASE_EXPIRED)]
    assert isinstance(ended.actions[1], DeleteLock)


def test_a_renewal_after_the_held_write_counts_from_the_renewal() -> None:
    fresh = claim("a", 5, ttl_seconds=TTL, wait=True)
    grant = lock_for(fresh, acquired=DECIDED, lease=TTL)
    told = replace(fresh, status=held_as_written(SENT), renew_request="hb-1")
    renew, status = run([told], grant, TOLD).actions
    assert renew == RenewLock(grant, TOLD, TTL)
    assert isinstance(status, SetStatus)
    assert (status.status.renewed_at, status.status.expires_at) == (TOLD, TOLD + TTL)


def test_a_waiter_is_told_with_the_lock_s_lease_until_the_write() -> None:
    """Before the write the decision still carries the lock's own lease (what a replica that has
    not written it yet would say): the move happens at the write, in one place."""
    fresh = with_phase(claim("a", 5, ttl_seconds=TTL, wait=True), Phase.PENDING, Reason.QUEUED)
    grant = lock_for(fresh, acquired=DECIDED, lease=TTL)
    decided = only_status(run([fresh], grant, CREATED)).status
    assert (decided.renewed_at, decided.expires_at) == (DECIDED, DECIDED + TTL)


# ---- the lock's spec.expireTime ------------------------------------------------------------------


def test_the_lock_shows_an_end_no_earlier_than_the_one_its_holder_is_told() -> None:
    grant = lock_for(claim("a", 5, ttl_seconds=TTL), acquired=DECIDED, lease=TTL)
    assert lock_shows(grant) == DECIDED + TTL + allowance(TTL) == DECIDED + 2 * TTL
    for sent in (DECIDED, SENT, DECIDED + allowance(TTL)):
        assert held_as_written(sent).expires_at == sent + TTL <= lock_shows(grant)


def test_a_held_write_sent_later_than_the_allowance_still_gives_the_whole_lease() -> None:
    """A short lease on a loaded API server: the `Held` write sent 6 s after its 3 s grant. Capped at
    what the lock shows, the holder was told a lease that had already run out (the loaded chaos run's
    `agent-freeze` waiters ended `Expired` as they were told); the holder's lease comes first, and the
    lock shows the earlier end until the first renewal."""
    late = DECIDED + allowance(TTL) + 3
    status = held_as_written(late)
    assert (status.renewed_at, status.expires_at) == (late, late + TTL)
    assert status.expires_at > lock_shows(lock_for(claim("a", 5), acquired=DECIDED, lease=TTL))


def test_the_allowance_is_the_lease_at_most_30_s() -> None:
    assert (allowance(3), allowance(30), allowance(600)) == (3.0, 30.0, ALLOWANCE_MAX_SECONDS)


def test_renewals_move_the_lock_s_end_only_later_and_past_the_allowance_it_is_the_holder_s() -> None:
    lease = 600
    assert shown_expiry(T0, T0, lease) == T0 + lease + 30
    assert shown_expiry(T0, T0 + 10, lease) == T0 + lease + 30  # an early renewal: the lock's stays
    assert shown_expiry(T0, T0 + 31, lease) == T0 + 31 + lease  # later: the renewal's lease, as the claim's
    renewed = [shown_expiry(T0, T0 + at, lease) for at in range(0, 100, 7)]
    assert renewed == sorted(renewed)
