"""Arbitration of one resource with several grants: Shared and Exclusive modes, counted permits
against a capacity, and the queue's fairness; tables of situations on an explicit clock, then
timelines through `Space`."""

from __future__ import annotations

import pytest

from kubelock.domain.grants import Mode
from kubelock.domain.model import Claim, Lock, SetStatus
from kubelock.domain.reasons import Phase, Reason
from tests.support.arbitration import RES, T0, Space, claim, holding, lock_for, run, statuses, summary, with_phase

SH = Mode.SHARED


def shared(name: str, seq: int, **spec: object) -> Claim:
    return claim(name, seq, mode=SH, **spec)


def held(c: Claim, token: int) -> tuple[Claim, Lock]:
    """`c` holding its grant (told), and the grant."""
    grant = lock_for(c, token=token)
    return holding(c, grant), grant


def queued(c: Claim, position: int = 1) -> Claim:
    """`c` with an earlier Pending status (rewritten when the arbiter answers it again)."""
    return with_phase(c, Phase.PENDING, Reason.QUEUED, holder="x", position=position, since=T0)


S1, S1_LOCK = held(shared("s1", 1), 1001)
S2, S2_LOCK = held(shared("s2", 2), 1002)
X1, X1_LOCK = held(claim("x1", 1), 1001)
P1, P1_LOCK = held(claim("p1", 1), 1001)
P2, P2_LOCK = held(claim("p2", 2), 1002)
P3, P3_LOCK = held(claim("p3", 3, permits=2), 1003)


def case(
    claims: list[Claim], grants: list[Lock], expected: list[tuple[object, ...]], capacity: int = 1, id: str = ""
) -> object:
    return pytest.param(claims, grants, capacity, expected, id=id)


CASES = [
    # ---- Shared (capacity 1) ----
    case([shared("a", 5), shared("b", 6)], [], [("create", "a", 1800), ("create", "b", 1800)],
         id="shared-free-both-granted-together"),
    case([S1, shared("b", 6)], [S1_LOCK], [("create", "b", 1800)], id="shared-joins-shared-holder"),
    case([S1, shared("b", 6, wait=True)], [S1_LOCK], [("create", "b", 1800)], id="shared-waiter-joins-at-once"),
    case([S1, claim("x", 6)], [S1_LOCK], [("status", "x", Phase.REJECTED, Reason.HELD_BY_ANOTHER)],
         id="exclusive-try-lock-refused-by-shared-holder"),
    case([S1, claim("x", 6, wait=True)], [S1_LOCK], [("status", "x", Phase.PENDING, Reason.QUEUED)],
         id="exclusive-waits-for-shared-holder"),
    case([S1, S2, claim("x", 6, wait=True)], [S1_LOCK, S2_LOCK], [("status", "x", Phase.PENDING, Reason.QUEUED)],
         id="exclusive-waits-for-every-shared-holder"),
    case([X1, shared("a", 5, wait=True), shared("b", 6)], [X1_LOCK],
         [("status", "a", Phase.PENDING, Reason.QUEUED), ("status", "b", Phase.REJECTED, Reason.HELD_BY_ANOTHER)],
         id="shared-waits-for-exclusive-holder"),
    case([S1, queued(claim("x", 6, wait=True)), shared("b", 7, wait=True)], [S1_LOCK],
         [("status", "x", Phase.PENDING, Reason.QUEUED), ("status", "b", Phase.PENDING, Reason.QUEUED)],
         id="shared-does-not-overtake-queued-exclusive"),
    case([S1, queued(claim("x", 6, wait=True)), shared("b", 7)], [S1_LOCK],
         [("status", "x", Phase.PENDING, Reason.QUEUED), ("status", "b", Phase.REJECTED, Reason.HELD_BY_ANOTHER)],
         id="shared-try-lock-behind-queued-exclusive"),
    case([queued(shared("a", 5, wait=True)), queued(shared("b", 6, wait=True), 2),
          queued(claim("x", 7, wait=True), 3), queued(shared("c", 8, wait=True), 4)], [],
         [("create", "a", 1800), ("create", "b", 1800)], id="consecutive-shared-at-the-head-granted-together"),
    case([queued(claim("x", 5, wait=True)), queued(shared("a", 6, wait=True), 2)], [],
         [("create", "x", 1800)], id="exclusive-at-the-head-goes-alone"),
    case([S1, shared("again", 6, holder="s1", wait=True)], [S1_LOCK], [("create", "again", 1800)],
         id="a-shared-holder-may-share-again"),
    case([S1, claim("again", 6, holder="s1", wait=True)], [S1_LOCK],
         [("status", "again", Phase.DEADLOCKED, Reason.SELF_DEADLOCK)],
         id="shared-holder-waiting-exclusive-self-deadlock"),
    case([S1, S2], [S1_LOCK, S2_LOCK], [], id="shared-holders-quiet"),
    case([S2, claim("x", 6, wait=True)], [S1_LOCK, S2_LOCK],
         [("status", "x", Phase.PENDING, Reason.QUEUED), ("delete", "s1", Reason.RELEASED)],
         id="released-shared-grant-deleted-new-waiter-answered-beside"),
    # ---- Permits against a capacity ----
    case([claim("a", 5), claim("b", 6), claim("c", 7)], [], [("create", "a", 1800), ("create", "b", 1800),
         ("create", "c", 1800)], capacity=3, id="semaphore-three-permits"),
    case([P1, P2, claim("c", 7)], [P1_LOCK, P2_LOCK], [("create", "c", 1800)], capacity=3,
         id="semaphore-last-permit"),
    case([P1, P2, claim("c", 7, permits=2)], [P1_LOCK, P2_LOCK],
         [("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER)], capacity=3, id="semaphore-too-few-permits-left"),
    case([P1, P3, claim("c", 7, wait=True)], [P1_LOCK, P3_LOCK], [("status", "c", Phase.PENDING, Reason.QUEUED)],
         capacity=3, id="semaphore-full"),
    case([P1, queued(claim("big", 6, permits=3, wait=True)), claim("small", 7, wait=True)], [P1_LOCK],
         [("status", "big", Phase.PENDING, Reason.QUEUED), ("status", "small", Phase.PENDING, Reason.QUEUED)],
         capacity=3, id="large-request-not-starved-by-small"),
    case([claim("big", 5, permits=4)], [], [("status", "big", Phase.REJECTED, Reason.INVALID_SPEC)], capacity=3,
         id="permits-above-capacity-refused"),
    case([queued(claim("big", 5, permits=2, wait=True)), claim("small", 6, wait=True)], [],
         [("status", "big", Phase.REJECTED, Reason.INVALID_SPEC), ("create", "small", 1800)],
         id="capacity-lowered-under-a-waiter"),
    case([P1, shared("s", 6, wait=True)], [P1_LOCK], [("status", "s", Phase.PENDING, Reason.QUEUED)], capacity=3,
         id="shared-waits-for-semaphore-holders"),
]


@pytest.mark.parametrize(("claims", "grants", "capacity", "expected"), CASES)
def test_decide_modes(claims: list[Claim], grants: list[Lock], capacity: int,
                      expected: list[tuple[object, ...]]) -> None:
    assert summary(run(claims, grants, T0 + 1, capacity=capacity)) == expected
    assert run(list(reversed(claims)), list(reversed(grants)), T0 + 1, capacity=capacity) == run(
        claims, grants, T0 + 1, capacity=capacity
    ), "the order of claims and grants does not matter"


def test_waiters_name_the_grants_that_keep_them_out() -> None:
    x = claim("x", 6, wait=True)
    found = statuses(run([S1, S2, x, claim("t", 7)], [S1_LOCK, S2_LOCK], T0 + 1))
    assert found["x"].holder == "s1"
    assert found["x"].message == f"waiting for {RES}, held by s1 and 1 other holder; position 1 in the queue"
    assert found["t"].message.startswith(f"{RES} is held by s1 and 1 other holder since ")


def test_a_fitting_try_lock_is_not_turned_away_while_another_grant_completes() -> None:
    """A grant being told answers the new claims in the same step; one that fits is granted instead."""
    fresh_grant = lock_for(claim("p2", 2), token=1002)
    decision = run([P1, claim("p2", 2), claim("c", 7)], [P1_LOCK, fresh_grant], T0 + 1, capacity=3)
    assert summary(decision) == [("status", "p2", Phase.HELD, Reason.GRANTED)]


def test_every_grant_expires_on_its_own_lease() -> None:
    early = lock_for(shared("s1", 1), token=1001, lease=60)
    s1 = holding(shared("s1", 1), early)
    decision = run([s1, S2], [early, S2_LOCK], T0 + 60)
    assert summary(decision) == [("status", "s1", Phase.EXPIRED, Reason.LEASE_EXPIRED),
                                 ("delete", "s1", Reason.LEASE_EXPIRED)]
    assert decision.next_deadline is None


def test_quiet_grants_wake_at_the_earliest_deadline() -> None:
    early = lock_for(shared("s1", 1), token=1001, lease=60)
    s1 = holding(shared("s1", 1), early)
    decision = run([s1, S2], [early, S2_LOCK], T0 + 1)
    assert decision.actions == ()
    assert decision.next_deadline == T0 + 30  # s1 is stale after half of its 60 s lease


def test_a_broken_shared_grant_revokes_only_its_claim() -> None:
    decision = run([S1, S2], [S2_LOCK], T0 + 1)
    [revoked] = decision.actions
    assert isinstance(revoked, SetStatus)
    assert (revoked.claim.name, revoked.status.phase, revoked.status.reason) == ("s1", Phase.REVOKED,
                                                                                 Reason.LOCK_BROKEN)


# ---- timelines -------------------------------------------------------------------------------


def holders(space: Space) -> set[str]:
    return space.holders(RES)


def test_readers_writer_readers() -> None:
    """Readers share; a writer queued behind them is served before readers that came after it, and
    the readers queued behind the writer are then granted together."""
    space = Space().add(shared("r1", 1, wait=True), shared("r2", 2, wait=True))
    space.settle(T0)
    assert holders(space) == {"r1", "r2"}
    space.add(claim("w", 3, wait=True), shared("r3", 4, wait=True), shared("r4", 5, wait=True))
    space.settle(T0 + 1)
    assert holders(space) == {"r1", "r2"}
    assert [space.get(n).status.queue_position for n in ("w", "r3", "r4")] == [1, 2, 3]  # type: ignore[union-attr]
    space.remove("r1")
    space.settle(T0 + 2)
    assert holders(space) == {"r2"}, "the writer waits for every reader"
    space.remove("r2")
    space.settle(T0 + 3)
    assert holders(space) == {"w"}
    space.remove("w")
    space.settle(T0 + 4)
    assert holders(space) == {"r3", "r4"}
    tokens = {n: space.get(n).status.fencing_token for n in ("r3", "r4")}  # type: ignore[union-attr]
    assert min(tokens.values()) > max(g.token for g in space.issued[:3]), "later grants have higher tokens"


def test_semaphore_hands_permits_over_in_queue_order() -> None:
    space = Space(capacity={RES: 3})
    space.add(*(claim(f"w{i}", i, wait=True) for i in range(1, 6)))
    space.settle(T0)
    assert holders(space) == {"w1", "w2", "w3"}
    assert space.get("w4").status.queue_position == 1  # type: ignore[union-attr]
    space.remove("w2")
    space.settle(T0 + 1)
    assert holders(space) == {"w1", "w3", "w4"}
    assert space.get("w5").status.queue_position == 1  # type: ignore[union-attr]


def test_a_deadlock_through_a_queued_writer_is_found() -> None:
    """r1 reads R; w waits to write R; r1's holder waits for R2, held by h2; h2 asks to read R, behind
    w. No grant on R keeps h2's read out, the queued writer does: h2 -> w -> r1 -> h2 is a cycle, and
    h2's read, the newest wait, is its victim."""
    r2 = "deploy://other"
    space = Space().add(shared("r1", 1, holder="h1"), claim("h2-r2", 2, holder="h2", resource=r2))
    space.settle(T0, [RES, r2])
    space.add(claim("w", 3, holder="hw", wait=True), claim("h1-r2", 4, holder="h1", resource=r2, wait=True),
              shared("h2-read", 5, holder="h2", wait=True))
    space.settle(T0 + 1, [RES, r2])
    assert space.get("h2-read").phase is Phase.DEADLOCKED
    assert space.get("h2-read").status.cycle == ("h2", RES, "hw", RES, "h1", r2, "h2")  # type: ignore[union-attr]
    assert space.get("w").phase is Phase.PENDING
    assert space.get("h1-r2").phase is Phase.PENDING


def test_a_wait_any_one_release_would_end_is_no_deadlock_edge() -> None:
    """Capacity 3: a and b hold a permit each; c asks for 2. Either release lets c in, so neither
    holder alone blocks it and no cycle is declared through one of them."""
    r2 = "deploy://other"
    space = Space(capacity={RES: 3}).add(claim("a", 1), claim("b", 2), claim("c-r2", 3, holder="c", resource=r2))
    space.settle(T0, [RES, r2])
    space.add(claim("c", 4, permits=2, wait=True), claim("a-r2", 5, holder="a", resource=r2, wait=True))
    space.settle(T0 + 1, [RES, r2])
    assert space.get("c").phase is Phase.PENDING
    assert space.get("a-r2").phase is Phase.PENDING
    space.remove("b")
    space.settle(T0 + 2, [RES, r2])
    assert space.get("c").phase is Phase.HELD


def test_grants_made_together_are_told_together() -> None:
    """Shared waiters granted in one step are told in one step (one status write each, sent at once),
    not one per round: the last of many readers learns of its grant as soon as the first."""
    a, b, c = shared("a", 5, wait=True), shared("b", 6, wait=True), shared("c", 7)
    grants = [lock_for(a, token=1005), lock_for(b, token=1006), lock_for(c, token=1007)]
    decision = run([a, b, c], grants, T0 + 1)
    assert summary(decision) == [("status", n, Phase.HELD, Reason.GRANTED) for n in ("a", "b", "c")]
