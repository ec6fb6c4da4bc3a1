"""The grant-set model: compatibility of modes and permits, the queue's admission rule (multi-resource
requests included), the fencing rule; and the arbiter checked against a brute-force model on random
sequences of operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelock.domain.grants import (
    EXCLUSIVE,
    Granted,
    Mode,
    Need,
    Request,
    admit,
    blocks,
    compatible,
    effective_priority,
    tokens_increase,
)
from kubelock.domain.model import Policy
from kubelock.domain.queueposition import out_of_band
from kubelock.domain.reasons import Phase
from tests.support.arbitration import RES, T0, Space, claim

SHARED = Need(Mode.SHARED)


def ex(permits: int = 1) -> Need:
    return Need(Mode.EXCLUSIVE, permits)


@pytest.mark.parametrize(
    ("needs", "capacity", "expected"),
    [
        pytest.param([], 1, True, id="nothing"),
        pytest.param([EXCLUSIVE], 1, True, id="one-exclusive"),
        pytest.param([EXCLUSIVE, EXCLUSIVE], 1, False, id="two-exclusive-capacity-1"),
        pytest.param([SHARED, SHARED, SHARED], 1, True, id="shared-together"),
        pytest.param([SHARED, EXCLUSIVE], 1, False, id="shared-and-exclusive"),
        pytest.param([SHARED, EXCLUSIVE], 5, False, id="shared-and-exclusive-whatever-the-capacity"),
        pytest.param([ex(1), ex(2)], 3, True, id="permits-fill-the-capacity"),
        pytest.param([ex(2), ex(2)], 3, False, id="permits-above-the-capacity"),
        pytest.param([ex(4)], 3, False, id="one-request-above-the-capacity"),
    ],
)
def test_compatible(needs: list[Need], capacity: int, expected: bool) -> None:
    assert compatible(needs, capacity) is expected


def test_blocks_means_that_grant_alone_keeps_the_request_out() -> None:
    assert blocks(SHARED, EXCLUSIVE, 1)
    assert blocks(EXCLUSIVE, SHARED, 1)
    assert not blocks(SHARED, SHARED, 1)
    assert not blocks(ex(1), ex(2), 3), "either of several releases would do: no single one is needed"
    assert blocks(ex(2), ex(2), 3)


@pytest.mark.parametrize("need", [lambda: Need(Mode.EXCLUSIVE, 0), lambda: Need(Mode.SHARED, 2)],
                         ids=["no-permits", "shared-with-permits"])
def test_a_need_out_of_bounds_is_refused(need: object) -> None:
    with pytest.raises(ValueError, match="permits"):
        need()  # type: ignore[operator]


def req(id: str, seq: int, *needs: tuple[str, Need]) -> Request:
    return Request(id, seq, tuple(needs))


def test_a_multi_resource_request_waits_without_holding_and_blocks_only_what_fifo_requires() -> None:
    """m asks for r1 and r2; r2 is held. m is not granted r1 alone; a later exclusive request on r1
    waits behind it (granting it could delay m), a later one on r3 does not."""
    queue = [req("m", 1, ("r1", EXCLUSIVE), ("r2", EXCLUSIVE)), req("w1", 2, ("r1", EXCLUSIVE)),
             req("w3", 3, ("r3", EXCLUSIVE))]
    assert [r.id for r in admit(queue, {"r2": [EXCLUSIVE]})] == ["w3"]


def test_a_later_request_that_fits_beside_a_waiting_multi_request_is_granted() -> None:
    queue = [req("m", 1, ("r1", SHARED), ("r2", SHARED)), req("reader", 2, ("r1", SHARED)),
             req("permit", 3, ("r3", ex(1))), req("m2", 4, ("r3", ex(1)), ("r1", SHARED))]
    capacity = {"r3": 2}
    assert [r.id for r in admit(queue, {"r2": [EXCLUSIVE]}, lambda r: capacity.get(r, 1))] == [
        "reader", "permit", "m2"
    ]


def test_a_multi_resource_request_is_granted_on_all_its_resources_at_once() -> None:
    queue = [req("m", 1, ("r1", EXCLUSIVE), ("r2", EXCLUSIVE)), req("w", 2, ("r2", EXCLUSIVE))]
    assert [r.id for r in admit(queue, {})] == ["m"]


def test_the_fencing_rule_finds_a_token_that_does_not_increase() -> None:
    good = [Granted("r", 5, 0), Granted("r", 9, 1), Granted("q", 2, 2), Granted("r", 11, 3)]
    assert tokens_increase(good) == []
    bad = [*good, Granted("r", 10, 4)]
    assert tokens_increase(bad) == [(Granted("r", 11, 3), Granted("r", 10, 4))]


# ---- admission against a brute-force model ---------------------------------------------------

RESOURCES = ("r1", "r2", "r3")
needs = st.one_of(st.just(SHARED), st.integers(1, 3).map(ex))
capacities = st.fixed_dictionaries({r: st.integers(1, 3) for r in RESOURCES})


@st.composite
def situations(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, list[Need]], list[Request]]:
    capacity = draw(capacities)
    grants: dict[str, list[Need]] = {}
    for r in RESOURCES:
        held = draw(st.lists(needs, max_size=2))
        if compatible(held, capacity[r]):
            grants[r] = held
    queue = []
    for i in range(draw(st.integers(0, 7))):
        chosen = draw(st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True))
        priority = draw(st.integers(-2, 2))
        queue.append(Request(f"q{i}", draw(st.integers(0, 20)), tuple((r, draw(needs)) for r in chosen), priority))
    return capacity, grants, queue


def brute_force_admit(capacity: dict[str, int], grants: dict[str, list[Need]], queue: list[Request]) -> set[str]:
    """The largest set of whole requests such that every resource's grants stay compatible and no
    request is granted unless it fits beside everything queued ahead of it on each of its resources
    (granted or not): found by trying every subset."""
    ordered = sorted(queue, key=lambda q: q.order)

    def fits_behind(q: Request) -> bool:
        for r, need in q.needs:
            ahead = [n for p in ordered if p.order < q.order for pr, n in p.needs if pr == r]
            if not compatible([*grants.get(r, []), *ahead, need], capacity[r]):
                return False
        return True

    def valid(chosen: tuple[Request, ...]) -> bool:
        per_resource = {r: [n for q in chosen for qr, n in q.needs if qr == r] for r in RESOURCES}
        return all(compatible([*grants.get(r, []), *ns], capacity[r]) for r, ns in per_resource.items()) and all(
            fits_behind(q) for q in chosen
        )

    best: set[str] = set()
    for size in range(len(ordered), 0, -1):
        found = [c for c in combinations(ordered, size) if valid(c)]
        if found:
            assert len(found) == 1, "the admissible set is unique"
            best = {q.id for q in found[0]}
            break
    return best


@settings(max_examples=300, deadline=None)
@given(situations())
def test_admit_agrees_with_the_brute_force_model(
    situation: tuple[dict[str, int], dict[str, list[Need]], list[Request]],
) -> None:
    capacity, grants, queue = situation
    admitted = admit(queue, grants, lambda r: capacity[r])
    assert {q.id for q in admitted} == brute_force_admit(capacity, grants, queue)
    for r in RESOURCES:  # all or nothing, and never more than a resource takes
        after = [*grants.get(r, []), *(n for q in admitted for qr, n in q.needs if qr == r)]
        assert compatible(after, capacity[r])


# ---- the arbiter against a brute-force model, on random operation sequences ---------------------


@dataclass(frozen=True)
class Arrive:
    need: Need
    wait: bool
    alone: bool  # decided before the next operation (else together with what comes next)
    priority: int = 0


@dataclass(frozen=True)
class Release:
    pick: int  # which of the claims still active


@dataclass
class Model:
    """The whole resource in a few lines: holders, a queue ordered by priority (aged: one point per
    `aging` seconds since arrival, for every claim in it) then arrival, and the rule that a request
    is granted when it fits beside the holders and everything queued ahead of it."""

    capacity: int
    aging: float
    held: dict[str, Need] = field(default_factory=dict)
    # (name, need, wait, priority, arrival), in arrival order
    queue: list[tuple[str, Need, bool, int, int]] = field(default_factory=list)
    since: dict[str, float] = field(default_factory=dict)  # when each claim arrived (its creation)
    refused: set[str] = field(default_factory=set)

    def arrive(self, name: str, need: Need, wait: bool, priority: int, arrival: int, at: float) -> None:
        self.since[name] = at
        if not compatible([need], self.capacity):
            self.refused.add(name)
        else:
            self.queue.append((name, need, wait, priority, arrival))

    def release(self, name: str) -> None:
        self.held.pop(name, None)
        self.queue = [q for q in self.queue if q[0] != name]

    def ordered(self, now: float) -> list[tuple[str, Need, bool, int, int]]:
        def rank(q: tuple[str, Need, bool, int, int]) -> tuple[int, int]:
            waited = now - self.since[q[0]]  # a try-lock not yet decided ages too (arbiter.queue_priority)
            return (-(q[3] + int(waited // self.aging)), q[4])

        return sorted(self.queue, key=rank)

    def settle(self, now: float) -> None:
        while True:
            queue = self.ordered(now)
            grantable = [
                q for i, q in enumerate(queue)
                if compatible([*self.held.values(), *(p[1] for p in queue[:i]), q[1]], self.capacity)
            ]
            if grantable:
                for name, need, *_ in grantable:
                    self.held[name] = need
                self.queue = [q for q in self.queue if q not in grantable]
                continue
            turned_away = [q for q in self.queue if not q[2]]
            if not turned_away:
                return
            self.refused.update(q[0] for q in turned_away)
            self.queue = [q for q in self.queue if q[2]]


operations = st.lists(
    st.one_of(
        st.builds(Arrive, needs, st.booleans(), st.booleans(), st.integers(-1, 2)),
        st.builds(Release, st.integers(0, 10)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), operations, st.sampled_from([2, 5, 1000]))
def test_the_arbiter_agrees_with_the_brute_force_model(
    capacity: int, ops: list[Arrive | Release], aging: int
) -> None:
    """Modes, permits, try-locks and waiters, priorities aged while waiting (one step is a second)."""
    space = Space(capacity={RES: capacity}, policy=Policy(priority_aging_seconds=aging))
    model = Model(capacity, aging)
    active: list[str] = []
    for step, op in enumerate(ops):
        if isinstance(op, Arrive):
            name = f"c{step}"
            space.add(claim(name, step, mode=op.need.mode, permits=op.need.permits, wait=op.wait,
                            priority=op.priority, created=T0 + step))
            model.arrive(name, op.need, op.wait, op.priority, step, T0 + step)
            active.append(name)
        elif active:
            name = active.pop(op.pick % len(active))
            space.remove(name)
            model.release(name)
        if isinstance(op, Arrive) and not op.alone and step < len(ops) - 1:
            continue
        space.settle(T0 + step)  # checks the fencing rule on every grant made
        model.settle(T0 + step)

        grants = space.grants.get(RES, [])
        assert {g.claim_name for g in grants} == set(model.held), ops
        assert compatible([g.need for g in grants], capacity), "compatibility and capacity"
        for g in grants:
            status = space.get(g.claim_name).status
            assert status is not None and status.phase is Phase.HELD
            assert status.fencing_token == g.fencing_token, "the holder is told the token the store issued"
        pending = {c.name for c in space.claims.values() if c.phase is Phase.PENDING}
        assert pending == {q[0] for q in model.queue}
        ended = {c.name for c in space.claims.values() if c.phase is Phase.REJECTED}
        assert ended == model.refused & set(active)
        queue = model.ordered(T0 + step)
        positions = [space.get(q[0]).status.queue_position for q in queue]  # type: ignore[union-attr]
        # Exact at the front, within a factor of two behind it (kubelock.domain.queueposition).
        assert all(not out_of_band(p, actual) for actual, p in enumerate(positions, start=1)), positions


@pytest.mark.parametrize(
    ("priority", "waited", "aging", "expected"),
    [
        pytest.param(0, 0.0, 10.0, 0, id="fresh"),
        pytest.param(0, 9.9, 10.0, 0, id="whole-points-only"),
        pytest.param(0, 10.0, 10.0, 1, id="one-point-per-period"),
        pytest.param(-5, 100.0, 10.0, 5, id="negative-ages-up"),
        pytest.param(3, -1.0, 10.0, 3, id="clock-behind"),
    ],
)
def test_effective_priority(priority: int, waited: float, aging: float, expected: int) -> None:
    assert effective_priority(priority, waited, aging) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(1, 600))
def test_no_waiter_starves_behind_newcomers(low: int, high: int, aging: int) -> None:
    """However high the priority of newcomers, a waiter gets ahead of every one arriving after a
    bounded wait: (high - low + 1) aging periods."""
    bound = (max(0, high - low) + 1) * aging
    assert effective_priority(low, bound, aging) > effective_priority(high, 0.0, aging)
