"""Priority aging keeps one priority first come, first served: a claim never ages from before a claim
that arrived ahead of it in its queue, in the grant decision and in the wait-for graph alike.

The case that showed it (docs/reliability.md, "a FIFO judgement"): the API server stamps the second
of `creationTimestamp` before the create commits, so a0-009 (revision 23134) carried 05:27:26 and
a0-001 (revision 23140) 05:27:25; aged from its own second, a0-001 was a point ahead for a second."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from kubelock.domain.aging import UNQUEUED, QueueAging
from kubelock.domain.arbiter import queue_aging, queue_order, queue_place
from kubelock.domain.grants import EXCLUSIVE, Mode, Need
from kubelock.domain.model import Claim, CreateLock, Policy
from kubelock.domain.multiclaim import ResourceView, decide_claim
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.waitfor import Order, WaitForGraph
from tests.support.arbitration import RES, T0, Space, claim, with_phase

AGING = 10  # --priority-aging-seconds
EARLY_SEQ, LATE_SEQ = 23134, 23140  # a0-009 committed first, a0-001 after it
EARLY_STAMP = T0 + 26.004  # a0-009: stamped just after a second's boundary
LATE_STAMP = T0 + 25.998  # a0-001: stamped just before it, committed later
# Within the second before a0-009's first point: a0-001 has aged a point by its own second (10.5 s),
# a0-009 not yet (9.5 s).
PAST_BOUNDARY = T0 + 25 + AGING + 0.5


def the_two() -> tuple[Claim, Claim]:
    return (
        claim("a0-009", EARLY_SEQ, created=EARLY_STAMP, wait=True),
        claim("a0-001", LATE_SEQ, created=LATE_STAMP, wait=True),
    )


def test_the_chaos_case_through_decide() -> None:
    space = Space(policy=Policy(priority_aging_seconds=AGING)).add(claim("holder", 1))
    space.settle(T0)
    space.add(*the_two())
    space.settle(T0 + 26.1)
    assert space.get("a0-009").status.queue_position == 1  # type: ignore[union-attr]
    space.remove("holder")
    space.settle(PAST_BOUNDARY)
    assert space.get("a0-009").phase is Phase.HELD, "the earlier claim of one priority is granted first"
    assert space.get("a0-001").phase is Phase.PENDING


def test_the_chaos_case_through_the_graph() -> None:
    """S holds R shared and waits for R3, which B holds. C (a0-009) asks R exclusively, B (a0-001)
    shared: B fits beside S, so it waits for C (and closes the cycle B → C → S → B) exactly when the
    graph ranks C ahead of it, as the grant decision does."""
    c, b = the_two()
    c = claim(c.name, c.sequence, "agent-c", created=c.created_at, wait=True)
    b = claim(b.name, b.sequence, "agent-b", created=b.created_at, wait=True, mode=Mode.SHARED)
    graph = WaitForGraph()
    graph.set_grants(RES, (("agent-s", Need(Mode.SHARED)),))
    graph.set_holder("r3", "agent-b")
    graph.add_wait("agent-s", "r3", 1)
    graph.add_wait(c.holder, RES, c.sequence, EXCLUSIVE, queue_place(c))
    graph.add_wait(b.holder, RES, b.sequence, b.need, queue_place(b))
    order = Order(PAST_BOUNDARY, AGING)
    assert graph.blockers(b.holder, RES, b.sequence, b.need, order) == ["agent-c"]
    cycle = graph.find_cycle(b.holder, RES, b.sequence, b.need, order)
    assert cycle is not None and cycle.path == ("agent-b", RES, "agent-c", RES, "agent-s", "r3", "agent-b")
    # The grant decision ranks them alike.
    queue = queue_aging([c, b])
    policy = Policy(priority_aging_seconds=AGING)
    assert queue_order(c, PAST_BOUNDARY, policy, queue) < queue_order(b, PAST_BOUNDARY, policy, queue)


def test_the_chaos_case_for_claims_of_several_resources() -> None:
    """Both claims ask for r://a and r://b, both free, both Pending: the whole-claim decision grants
    the earlier one and keeps the later one behind it (without the clamp: the other way round)."""
    resources = ("r://a", "r://b")
    early, late = (
        with_phase(claim(c.name, c.sequence, created=c.created_at, wait=True, resource=resources[0],
                         resources=resources), Phase.PENDING, Reason.QUEUED, since=T0 + 26.1)
        for c in the_two()
    )
    views = {r: ResourceView(resource=r, claims=(early, late)) for r in resources}
    graph = WaitForGraph()
    for c in (early, late):
        for r in resources:
            graph.add_wait(c.holder, r, c.sequence, c.need, queue_place(c), reserves=True)
    policy = Policy(priority_aging_seconds=AGING)

    def grants(c: Claim) -> list[str]:
        decision = decide_claim(c, views, now=PAST_BOUNDARY, policy=policy, graph=graph)
        return [a.claim.name for a in decision.actions if isinstance(a, CreateLock)]

    assert grants(late) == []
    assert set(grants(early)) == {"a0-009"}  # its first grant (one resource a step)


def test_a_start_is_held_back_only_by_earlier_waits() -> None:
    queue = QueueAging([(1, 100.0), (2, 99.0), (3, 105.0), (5, 101.0)])
    assert [queue.start(s, t) for s, t in [(1, 100.0), (2, 99.0), (3, 105.0), (5, 101.0)]] == [
        100.0, 100.0, 105.0, 105.0
    ]
    assert queue.start(4, 90.0) == 105.0, "a claim that is no wait (a try-lock) is held back too"
    assert queue.start(0, 90.0) == 90.0, "nobody ahead: its own start"
    assert queue.start(6, None) == math.inf, "not answered yet: it does not age"
    assert QueueAging([(1, None)]).start(2, 50.0) == math.inf, "nor does anything behind such a wait"
    assert UNQUEUED.start(7, 3.0) == 3.0


def test_a_low_priority_claim_still_ages_past_newcomers() -> None:
    """The clamp looks back only: an old low-priority claim is not held back by the high-priority
    newcomers behind it, and overtakes them once it has aged past them."""
    policy = Policy(priority_aging_seconds=AGING)
    space = Space(policy=policy).add(claim("holder", 1))
    space.settle(T0)
    space.add(claim("old-low", 2, created=T0 + 1, wait=True))
    space.settle(T0 + 1)
    space.add(claim("new-high", 3, created=T0 + 30.5, wait=True, priority=2))  # stamped a second early too
    space.settle(T0 + 31)
    space.remove("holder")
    space.settle(T0 + 31.2)  # old-low: 0 + 3 points; new-high: 2 + 0
    assert space.get("old-low").phase is Phase.HELD


JITTER = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    jitters=st.lists(JITTER, min_size=2, max_size=7),
    gaps=st.lists(st.floats(0.0, 25.0, allow_nan=False), min_size=7, max_size=7),
    aging=st.sampled_from([1, 2, 10]),
)
def test_one_priority_is_granted_in_arrival_order(jitters: list[float], gaps: list[float], aging: int) -> None:
    """Creates 10 ms apart, each stamped up to a second off its commit: whatever `now` each release
    comes at, the queue is granted in sequence order."""
    space = Space(policy=Policy(priority_aging_seconds=aging)).add(claim("holder", 1))
    space.settle(T0)
    names = [f"c{i}" for i in range(len(jitters))]
    for i, jitter in enumerate(jitters):
        space.add(claim(names[i], 10 + i, created=T0 + 5 + 0.01 * i + jitter, wait=True))
    now = T0 + 7
    space.settle(now)
    holder = "holder"
    granted: list[str] = []
    for gap in gaps[: len(names)]:
        now += gap
        space.remove(holder)
        space.settle(now)
        [holder] = space.holders(RES)
        granted.append(holder)
    assert granted == names


@settings(max_examples=150, deadline=None)
@given(
    waits=st.lists(st.tuples(st.integers(0, 2), JITTER, st.booleans()), min_size=2, max_size=8),
    now=st.floats(0.0, 60.0, allow_nan=False),
    aging=st.sampled_from([1, 3, 10]),
)
def test_the_graph_ranks_the_queue_as_the_grant_does(
    waits: list[tuple[int, float, bool]], now: float, aging: int
) -> None:
    """Random priorities, jittered stamps, some requeued (a new start with their new sequence): for
    every wait, the holders the graph ranks ahead of it are those the grant decision's order puts
    ahead of it. (Every wait reserves and nobody holds the resource, so every wait ahead is an edge.)"""
    claims: list[Claim] = []
    for i, (priority, jitter, requeued) in enumerate(waits):
        c = claim(f"w{i}", 10 + i, created=T0 + 0.3 * i + jitter, wait=True, priority=priority)
        if requeued:  # requeued at a later second, with a sequence after everyone's
            c = with_phase(replace(c, sequence=100 + i), Phase.PENDING, Reason.QUEUED, since=T0 + 20 + jitter)
            assert c.status is not None
            c = replace(c, status=replace(c.status, requeues=1))
        claims.append(c)
    graph = WaitForGraph()
    for c in claims:
        graph.add_wait(c.holder, RES, c.sequence, c.need, queue_place(c), reserves=True)
    policy = Policy(priority_aging_seconds=aging)
    at = T0 + now
    queue = queue_aging(claims)
    ranked = sorted(claims, key=lambda c: queue_order(c, at, policy, queue))
    for i, c in enumerate(ranked):
        ahead = sorted(x.holder for x in ranked[:i])
        assert graph.blockers(c.holder, RES, c.sequence, c.need, Order(at, aging)) == ahead
