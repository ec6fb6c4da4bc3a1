"""The wait-for graph: cycles closed by a wait, their paths and victims, and the cost of a search."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import pytest

from kubelock.domain.arbiter import CYCLE_RECHECK_SECONDS
from kubelock.domain.grants import EXCLUSIVE, Mode, Need, Request, admit, effective_priority
from kubelock.domain.reasons import Phase
from kubelock.domain.waitfor import CYCLE_SHOWN, Cycle, Edge, Order, Place, WaitForGraph, describe
from tests.support.arbitration import T0, Space, claim


@dataclass(frozen=True)
class W:
    """A pending claim: `holder` waits for `resource` with a claim of `seq`."""

    holder: str
    resource: str
    seq: int


def graph_of(held: dict[str, str], waits: list[W]) -> WaitForGraph:
    """Build the graph the way the operator does: set_holder for every held lock, add_wait for every
    pending claim."""
    graph = WaitForGraph()
    for resource, holder in held.items():
        graph.set_holder(resource, holder)
    for w in waits:
        graph.add_wait(w.holder, w.resource, w.seq)
    return graph


def search(graph: WaitForGraph, w: W) -> Cycle | None:
    return graph.find_cycle(w.holder, w.resource, w.seq)


def assert_well_formed(graph: WaitForGraph, cycle: Cycle, asked: W) -> None:
    """Every edge is a real wait, each resource is held by the next waiter, and the loop closes."""
    assert cycle.edges[0] == Edge(asked.holder, asked.resource, asked.seq)
    for i, edge in enumerate(cycle.edges):
        nxt = cycle.edges[(i + 1) % len(cycle.edges)]
        assert nxt.waiter in graph.holders_of(edge.resource)
        if i:
            assert graph.waits_of(edge.waiter).get(edge.resource) == edge.sequence
    waiters = [e.waiter for e in cycle.edges]
    assert len(set(waiters)) == len(waiters), "a cycle visits each holder once"
    path = cycle.path
    assert path[0] == path[-1] == asked.holder
    assert len(path) == 2 * len(cycle.edges) + 1
    assert list(path[0:-1:2]) == waiters
    assert list(path[1::2]) == [e.resource for e in cycle.edges]


# ---- table of small graphs -------------------------------------------------------------------

A, B, C, D = "agent-a", "agent-b", "agent-c", "agent-d"
R1, R2, R3, R4 = "deploy://api-prod", "github://acme/app/pr/10", "db://orders", "s3://bucket/key"

CASES = [
    pytest.param({R1: A}, [], W(B, R1, 2), None, id="no-cycle-single-wait"),
    pytest.param({}, [], W(B, R1, 2), None, id="resource-not-held"),
    pytest.param({R1: A, R2: B}, [W(B, R1, 3)], W(A, R2, 4), (A, R2, B, R1, A), id="two-holders"),
    pytest.param(
        {R1: A, R2: B, R3: C},
        [W(A, R2, 4), W(B, R3, 5)],
        W(C, R1, 6),
        (C, R1, A, R2, B, R3, C),
        id="three-holders",
    ),
    pytest.param(
        {R1: A, R2: B, R3: C},
        [W(A, R2, 4), W(D, R3, 5)],
        W(C, R1, 6),
        None,
        id="chain-that-does-not-come-back",
    ),
    pytest.param({R1: A}, [], W(A, R1, 2), (A, R1, A), id="self-wait"),
    pytest.param(
        {R1: A, R2: B, R3: C},
        [W(A, R3, 4), W(A, R2, 5), W(C, R4, 6)],
        W(B, R1, 7),
        (B, R1, A, R2, B),
        id="several-pending-claims-one-leads-back",
    ),
    pytest.param(
        {R1: A, R2: B, R3: C},
        [W(A, R3, 4), W(C, R2, 5)],
        W(B, R1, 7),
        (B, R1, A, R3, C, R2, B),
        id="cycle-through-second-hop",
    ),
    pytest.param(
        {R1: A, R2: B, R3: C},
        [W(A, R3, 4), W(C, R4, 5)],
        W(B, R1, 7),
        None,
        id="several-waits-none-lead-back",
    ),
    pytest.param(
        {R1: A, R2: B, R3: C},
        [W(A, R2, 4), W(B, R3, 5), W(C, R2, 6)],
        W(D, R1, 7),
        None,
        id="cycle-elsewhere-not-through-waiter",
    ),
    pytest.param(
        {R1: A, R2: B},
        [W(A, R2, 4), W(A, R2, 9)],
        W(B, R1, 7),
        (B, R1, A, R2, B),
        id="two-claims-same-edge",
    ),
]


@pytest.mark.parametrize(("held", "waits", "asked", "path"), CASES)
def test_find_cycle(held: dict[str, str], waits: list[W], asked: W, path: tuple[str, ...] | None) -> None:
    graph = graph_of(held, waits)
    cycle = search(graph, asked)
    if path is None:
        assert cycle is None
        return
    assert cycle is not None
    assert cycle.path == path
    if len(cycle.edges) > 1:
        assert_well_formed(graph, cycle, asked)


def test_contract_example_path_and_description() -> None:
    graph = graph_of({"deploy://api-prod": "agent-b", "github://acme/app/pr/10": "agent-a"},
                     [W("agent-b", "github://acme/app/pr/10", 11)])
    cycle = graph.find_cycle("agent-a", "deploy://api-prod", 12)
    assert cycle is not None
    assert cycle.path == ("agent-a", "deploy://api-prod", "agent-b", "github://acme/app/pr/10", "agent-a")
    assert describe(cycle.path) == "agent-a → deploy://api-prod → agent-b → github://acme/app/pr/10 → agent-a"


def test_self_wait_cycle() -> None:
    cycle = Cycle.self_wait(A, R1, 5)
    assert cycle.path == (A, R1, A)
    assert cycle.victim == Edge(A, R1, 5)


def test_edge_sequence_is_the_newest_claim_of_that_wait() -> None:
    graph = graph_of({R1: A, R2: B}, [W(A, R2, 4), W(A, R2, 9)])
    cycle = search(graph, W(B, R1, 7))
    assert cycle is not None
    assert cycle.edges[1] == Edge(A, R2, 9)
    assert graph.waits_of(A) == {R2: 9}
    assert len(graph) == 2


def test_long_chain_closed_by_the_last_claim() -> None:
    n = 1000
    holders = [f"h{i}" for i in range(n)]
    resources = [f"r://{i}" for i in range(n)]
    # h_i holds r_i and waits for r_{i+1}; the last holder waiting for r_0 closes the loop.
    chain = [W(holders[i], resources[i + 1], i + 1) for i in range(n - 1)]
    graph = graph_of(dict(zip(resources, holders, strict=True)), chain)
    for w in (chain[0], chain[1], chain[n // 2], chain[-1]):
        assert search(graph, w) is None, "an open chain has no cycle"

    closing = W(holders[-1], resources[0], 10_000)
    cycle = search(graph, closing)
    assert cycle is not None
    assert len(cycle.edges) == n
    assert cycle.path[:4] == (holders[-1], resources[0], holders[0], resources[1])
    assert cycle.path[-3:] == (holders[-2], resources[-1], holders[-1])
    assert cycle.victim == cycle.edges[0]
    assert_well_formed(graph, cycle, closing)

    # Once the closing claim is in the graph, every claim of the chain sees the cycle and its victim.
    graph.add_wait(closing.holder, closing.resource, closing.seq)
    for w in (chain[0], chain[n // 2], chain[-1]):
        found = search(graph, w)
        assert found is not None
        assert len(found.edges) == n
        assert found.victim == Edge(closing.holder, closing.resource, closing.seq)


def test_a_long_cycle_is_shown_by_its_two_ends() -> None:
    n, half = 1000, CYCLE_SHOWN // 2
    holders = [f"h{i}" for i in range(n)]
    resources = [f"r://{i}" for i in range(n)]
    graph = graph_of(dict(zip(resources, holders, strict=True)),
                     [W(holders[i], resources[i + 1], i + 1) for i in range(n - 1)])
    cycle = search(graph, W(holders[-1], resources[0], 10_000))
    assert cycle is not None
    shown = cycle.shown
    assert len(shown) == 2 * CYCLE_SHOWN + 1
    # The closing wait and the 7 after it, then the 8 waits that lead back to the closing holder.
    assert shown[: 2 * half] == cycle.path[: 2 * half]
    assert shown[2 * half :] == cycle.path[-(2 * half + 1) :]
    assert shown[:4] == (holders[-1], resources[0], holders[0], resources[1])
    assert shown[2 * half - 1 : 2 * half + 1] == (resources[half - 1], holders[n - 1 - half])
    assert shown[-3:] == (holders[-2], resources[-1], holders[-1])
    left_out = n - CYCLE_SHOWN
    text = describe(shown, len(cycle.edges))
    assert f"{resources[half - 1]} → … {left_out} more holders … → {holders[n - 1 - half]}" in text
    assert text.startswith(f"{holders[-1]} → {resources[0]} → ") and text.endswith(f"→ {holders[-1]}")
    assert text.count("→") == len(shown)  # one arrow per step shown, and one on each side of the gap


@pytest.mark.parametrize("n", [1, 2, CYCLE_SHOWN - 1, CYCLE_SHOWN])
def test_a_cycle_of_at_most_the_shown_length_is_shown_whole(n: int) -> None:
    cycle = Cycle(tuple(Edge(f"h{i}", f"r://{i}", i + 1) for i in range(n)))
    assert cycle.shown == cycle.path
    assert describe(cycle.shown, n) == describe(cycle.path) == " → ".join(cycle.path)


def test_one_more_than_the_shown_length_leaves_one_holder_out() -> None:
    n = CYCLE_SHOWN + 1
    cycle = Cycle(tuple(Edge(f"h{i}", f"r://{i}", i + 1) for i in range(n)))
    assert len(cycle.shown) == 2 * CYCLE_SHOWN + 1
    assert "h8" not in cycle.shown and "r://8" not in cycle.shown
    assert "r://7 → … 1 more holder … → h9" in describe(cycle.shown, n)


def test_a_path_without_its_length_is_described_as_written() -> None:
    path = ("a", "r://1", "b", "r://2", "a")
    assert describe(path) == describe(path, 2) == "a → r://1 → b → r://2 → a"


# ---- victims ---------------------------------------------------------------------------------

THREE_CYCLE = [W(A, R2, 5), W(B, R3, 9), W(C, R1, 7)]  # A holds R1, B holds R2, C holds R3


@pytest.mark.parametrize("asked", THREE_CYCLE, ids=lambda w: w.holder)
def test_victim_is_the_newest_wait_whichever_claim_is_searched(asked: W) -> None:
    graph = graph_of({R1: A, R2: B, R3: C}, THREE_CYCLE)
    cycle = search(graph, asked)
    assert cycle is not None
    assert cycle.victim == Edge(B, R3, 9)
    assert cycle.path[0] == asked.holder
    assert_well_formed(graph, cycle, asked)


def test_two_holder_victim_only_for_the_newer_claim() -> None:
    graph = graph_of({R1: A, R2: B}, [W(A, R2, 3), W(B, R1, 4)])
    from_a = search(graph, W(A, R2, 3))
    from_b = search(graph, W(B, R1, 4))
    assert from_a is not None
    assert from_b is not None
    assert from_a.victim == from_b.victim == Edge(B, R1, 4)
    assert from_b.victim == from_b.edges[0]
    assert from_a.victim != from_a.edges[0]


# ---- no phantom cycles ----------------------------------------------------------------------


def test_removing_a_wait_removes_the_cycle() -> None:
    graph = graph_of({R1: A, R2: B}, [W(A, R2, 3), W(B, R1, 4)])
    assert search(graph, W(B, R1, 4)) is not None
    graph.remove_wait(A, R2, 3)
    assert search(graph, W(B, R1, 4)) is None
    assert graph.waits_of(A) == {}
    assert len(graph) == 1


def test_removing_one_of_two_claims_keeps_the_other_wait() -> None:
    graph = graph_of({R1: A, R2: B}, [W(A, R2, 3), W(A, R2, 8), W(B, R1, 4)])
    graph.remove_wait(A, R2, 8)
    cycle = search(graph, W(B, R1, 4))
    assert cycle is not None
    assert cycle.edges[1] == Edge(A, R2, 3)
    graph.remove_wait(A, R2, 3)
    assert search(graph, W(B, R1, 4)) is None


def test_removing_an_unknown_wait_is_harmless() -> None:
    graph = graph_of({R1: A}, [W(B, R1, 2)])
    graph.remove_wait(B, R1, 99)
    graph.remove_wait(B, R2, 2)
    graph.remove_wait(C, R1, 2)
    assert graph.waits_of(B) == {R1: 2}
    assert len(graph) == 1


@pytest.mark.parametrize(
    "new_holder",
    [pytest.param(None, id="released"), pytest.param(C, id="granted-to-outsider")],
)
def test_changing_a_holder_removes_the_cycle(new_holder: str | None) -> None:
    graph = graph_of({R1: A, R2: B}, [W(A, R2, 3), W(B, R1, 4)])
    assert search(graph, W(B, R1, 4)) is not None
    graph.set_holder(R2, new_holder)
    assert graph.holders_of(R2) == ({new_holder} if new_holder else set())
    assert search(graph, W(B, R1, 4)) is None
    assert search(graph, W(A, R2, 3)) is None


def test_changing_a_holder_can_create_a_cycle() -> None:
    graph = graph_of({R1: A, R2: C}, [W(A, R2, 3), W(B, R1, 4)])
    assert search(graph, W(B, R1, 4)) is None
    graph.set_holder(R2, B)
    cycle = search(graph, W(B, R1, 4))
    assert cycle is not None
    assert cycle.path == (B, R1, A, R2, B)


# ---- randomized comparison with a brute-force search -----------------------------------------


def brute_force_has_cycle(
    held: dict[str, str], waits: dict[str, dict[str, set[int]]], waiter: str, resource: str
) -> bool:
    """Does the holder of `resource` reach `waiter` over the full holder graph?"""
    start = held.get(resource)
    if start is None:
        return False
    adjacency: dict[str, set[str]] = defaultdict(set)
    for holder, wanted in waits.items():
        for res, seqs in wanted.items():
            if seqs and res in held:
                adjacency[holder].add(held[res])
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        if node == waiter:
            return True
        for nxt in adjacency[node] - seen:
            seen.add(nxt)
            frontier.append(nxt)
    return False


@pytest.mark.parametrize("seed", [1, 7, 42, 2024])
def test_find_cycle_agrees_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    holders = [f"h{i}" for i in range(60)]
    resources = [f"r://{i}" for i in range(60)]
    graph = WaitForGraph()
    held: dict[str, str] = {}
    waits: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    live: list[W] = []
    outcomes = {True: 0, False: 0}
    for seq in range(1, 501):
        op = rng.random()
        if op < 0.55 or not live:
            w = W(rng.choice(holders), rng.choice(resources), seq)
            graph.add_wait(w.holder, w.resource, w.seq)
            waits[w.holder][w.resource].add(w.seq)
            live.append(w)
        elif op < 0.75:
            w = live.pop(rng.randrange(len(live)))
            graph.remove_wait(w.holder, w.resource, w.seq)
            waits[w.holder][w.resource].discard(w.seq)
        else:
            res = rng.choice(resources)
            holder = rng.choice([*holders, None])
            graph.set_holder(res, holder)
            if holder is None:
                held.pop(res, None)
            else:
                held[res] = holder
        for w in rng.sample(live, min(len(live), 5)):
            expected = brute_force_has_cycle(held, waits, w.holder, w.resource)
            cycle = search(graph, w)
            assert (cycle is not None) is expected, (seed, seq, w)
            outcomes[expected] += 1
            if cycle is not None and len(cycle.edges) > 1:
                assert_well_formed(graph, cycle, w)
    # The walk exercised both answers.
    assert outcomes[True] > 20, outcomes
    assert outcomes[False] > 20, outcomes


# ---- cost grows with the path, not the graph -------------------------------------------------


class Recording(dict):  # type: ignore[type-arg]
    """A dict that records the keys looked up with get() and notices any whole-map scan."""

    def __init__(self, source: dict) -> None:  # type: ignore[type-arg]
        super().__init__(source)
        self.looked_at: list[object] = []
        self.scanned = False

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        self.looked_at.append(key)
        return super().get(key, default)

    def _scan(self, method: str):  # type: ignore[no-untyped-def]
        self.scanned = True
        return getattr(super(), method)()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return self._scan("__iter__")

    def items(self):  # type: ignore[no-untyped-def]
        return self._scan("items")

    def keys(self):  # type: ignore[no-untyped-def]
        return self._scan("keys")

    def values(self):  # type: ignore[no-untyped-def]
        return self._scan("values")


def test_search_visits_only_what_the_waited_for_holder_reaches() -> None:
    graph = WaitForGraph()
    # 10 000 unrelated waiters: a ring plus a hub everyone waits on, none reachable from the path.
    for i in range(10_000):
        graph.set_holder(f"noise://{i}", f"n{i}")
        graph.add_wait(f"n{i}", f"noise://{(i + 1) % 10_000}", i + 1)
        graph.add_wait(f"n{i}", "noise://0", 20_000 + i)
    # A short path: A holds R1, B holds R2, C holds R3; A waits R2, B waits R3.
    for w in (W(A, R2, 30_001), W(B, R3, 30_002)):
        graph.add_wait(w.holder, w.resource, w.seq)
    graph.set_holder(R1, A)
    graph.set_holder(R2, B)
    graph.set_holder(R3, C)
    waits, holders, queues = Recording(graph._waits), Recording(graph._grants), Recording(graph._queues)
    graph._waits, graph._grants, graph._queues = waits, holders, queues  # type: ignore[assignment]

    cycle = graph.find_cycle(C, R1, 30_003)
    assert cycle is not None
    assert cycle.path == (C, R1, A, R2, B, R3, C)
    assert set(waits.looked_at) <= {A, B}
    assert set(holders.looked_at) <= {R1, R2, R3}
    waits.looked_at.clear()
    holders.looked_at.clear()

    assert graph.find_cycle(D, R1, 30_004) is None
    assert sorted(waits.looked_at) == [A, B, C]  # each reached holder once, nothing else
    assert set(holders.looked_at) == {R1, R2, R3}
    assert not waits.scanned
    assert not holders.scanned
    assert not queues.scanned and not queues.looked_at  # every wait here is blocked by a grant


# ---- several holders per resource ------------------------------------------------------------

SHARED = Need(Mode.SHARED)


def permits(n: int) -> Need:
    return Need(Mode.EXCLUSIVE, n)


@pytest.mark.parametrize(
    ("grants", "capacity", "queued", "asked", "expected"),
    [
        pytest.param([(A, SHARED), (B, SHARED)], 1, [], EXCLUSIVE, [A, B], id="exclusive-waits-for-every-reader"),
        pytest.param([(A, EXCLUSIVE)], 1, [], SHARED, [A], id="shared-waits-for-the-writer"),
        pytest.param([(A, permits(1)), (B, permits(2))], 3, [], permits(2), [B],
                     id="permits-only-the-grant-that-alone-leaves-too-few"),
        pytest.param([(A, permits(1)), (B, permits(1))], 3, [], permits(2), [],
                     id="permits-either-release-would-do-no-edge"),
        pytest.param([(A, SHARED)], 1, [(B, 5, EXCLUSIVE), (C, 6, SHARED)], SHARED, [B],
                     id="reader-behind-a-queued-writer-waits-for-it"),
        pytest.param([(A, SHARED)], 1, [(B, 5, SHARED)], SHARED, [], id="readers-do-not-wait-for-readers"),
        pytest.param([], 1, [(B, 5, EXCLUSIVE)], EXCLUSIVE, [], id="a-free-resource-gives-no-edge"),
        pytest.param([(D, SHARED), (A, SHARED)], 1, [], EXCLUSIVE, [D, A], id="own-grant-included"),
    ],
)
def test_blockers(grants: list[tuple[str, Need]], capacity: int, queued: list[tuple[str, int, Need]],
                  asked: Need, expected: list[str]) -> None:
    graph = WaitForGraph()
    graph.set_grants(R1, tuple(grants))
    graph.set_capacity(R1, capacity)
    for holder, seq, need in queued:
        graph.add_wait(holder, R1, seq, need)
    assert graph.blockers(D, R1, 10, asked) == expected


def test_a_cycle_through_one_of_several_readers() -> None:
    """A and B read R1; C waits to write R1 (edges to both); B waits for R2, held by C."""
    graph = WaitForGraph()
    graph.set_grants(R1, ((A, SHARED), (B, SHARED)))
    graph.set_holder(R2, C)
    graph.add_wait(B, R2, 3)
    cycle = graph.find_cycle(C, R1, 4)
    assert cycle is not None
    assert cycle.path == (C, R1, B, R2, C)
    assert graph.find_cycle(C, R1, 4, SHARED) is None, "a reader does not wait for readers"


# ---- the queue ahead is ranked as the grant decision ranks it: priority, aging, then arrival ----

S = "agent-s"
NOW = 1_800_000_000.0
SHARED = Need(Mode.SHARED)


@dataclass(frozen=True)
class Queued:
    """A wait on R1 with its place in the queue: priority and how long it has waited (None: not
    answered yet)."""

    seq: int
    priority: int = 0
    waited: float | None = None

    def place(self) -> Place:
        return Place(self.seq, self.priority, None if self.waited is None else NOW - self.waited)


# R1 is held by S in a way that keeps C's request out but lets B's in beside it, so B waits only if C
# is ahead of it; C waits for S, S waits for R3, which B holds. B closes the cycle B → C → S → B
# exactly when C is ahead of B in the queue.
MODES = {
    # (capacity, S's grant, C's request, B's request)
    "shared-behind-exclusive": (1, SHARED, EXCLUSIVE, SHARED),
    "small-behind-large-permits": (3, Need(permits=1), Need(permits=3), Need(permits=1)),
}
AHEAD_CASES = [
    # (C's place, B's place, aging seconds, is C ahead of B)
    pytest.param(Queued(5), Queued(6), 0, True, id="equal priority: the earlier is ahead"),
    pytest.param(Queued(5), Queued(6, priority=1), 0, False, id="a later higher priority is ahead"),
    pytest.param(Queued(6, priority=3), Queued(5), 0, True, id="priority beats arrival"),
    pytest.param(Queued(6, priority=3), Queued(5, priority=3), 0, False, id="equal priority again by arrival"),
    pytest.param(Queued(6, priority=2), Queued(5, waited=30), 10, False, id="aged past a newcomer"),
    pytest.param(Queued(6, priority=2), Queued(5, waited=19), 10, True, id="not aged enough yet"),
    pytest.param(Queued(6, priority=2), Queued(5, waited=20), 10, False, id="aged to a tie: arrival decides"),
    pytest.param(Queued(6, priority=2), Queued(5, waited=30), 0, True, id="no aging: priority stands"),
    pytest.param(Queued(5, waited=50), Queued(6, priority=1), 10, True, id="both aged: the older stays ahead"),
]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("c", "b", "aging", "c_ahead"), AHEAD_CASES)
def test_queued_ahead_edges_follow_the_queue_order(
    mode: str, c: Queued, b: Queued, aging: float, c_ahead: bool
) -> None:
    capacity, s_holds, c_asks, b_asks = MODES[mode]
    graph = WaitForGraph()
    graph.set_capacity(R1, capacity)
    graph.set_grants(R1, ((S, s_holds),))
    graph.set_holder(R3, B)
    graph.add_wait(S, R3, 1)
    graph.add_wait(C, R1, c.seq, c_asks, c.place())
    graph.add_wait(B, R1, b.seq, b_asks, b.place())
    order = Order(NOW, aging)
    assert graph.blockers(B, R1, b.seq, b_asks, order) == ([C] if c_ahead else [])
    cycle = graph.find_cycle(B, R1, b.seq, b_asks, order)
    assert (cycle.path if cycle else None) == ((B, R1, C, R1, S, R3, B) if c_ahead else None)
    # The queue the grant decision serves agrees: B is granted now exactly when C is not ahead of it.
    requests = [
        Request("c", c.seq, ((R1, c_asks),), effective_priority(c.priority, c.waited or 0, aging)),
        Request("b", b.seq, ((R1, b_asks),), effective_priority(b.priority, b.waited or 0, aging)),
    ]
    granted = [r.id for r in admit(requests, {R1: [s_holds]}, lambda _: capacity)]
    assert ("b" in granted) is not c_ahead


@pytest.mark.parametrize(("c_priority", "deadlocked"), [(3, True), (0, False)])
def test_decide_finds_the_deadlock_a_higher_priority_waiter_closes(c_priority: int, deadlocked: bool) -> None:
    """S holds R1 shared and waits for R3, which B holds. C asks R1 exclusively; B, with an earlier
    sequence, asks R1 shared. With C's higher priority C is ahead of B: B waits for C, C for S, S for B,
    a deadlock whose newest wait (C's) ends. Without it, B is ahead, fits beside S and is granted."""
    s = Space()
    s.add(claim("s1", 1, S, resource=R1, mode=Mode.SHARED), claim("b3", 2, B, resource=R3))
    s.settle(T0, [R1, R3])
    s.add(claim("s3", 3, S, resource=R3, wait=True), claim("c1", 5, C, resource=R1, wait=True, priority=c_priority))
    s.settle(T0, [R1, R3])
    s.add(claim("b1", 4, B, resource=R1, wait=True, mode=Mode.SHARED))
    s.settle(T0, [R1])
    phases = {n: s.get(n).phase for n in ("b1", "c1")}
    if deadlocked:
        assert phases == {"b1": Phase.HELD, "c1": Phase.DEADLOCKED}
        cycle = s.get("c1").status.cycle  # type: ignore[union-attr]
        assert cycle is not None and set(cycle) >= {B, C, S, R1, R3}
    else:
        assert phases == {"b1": Phase.HELD, "c1": Phase.PENDING}


# ---- every cycle ends, whichever order the waits are decided in -----------------------------------


def test_a_waiter_in_a_cycle_whose_victim_is_another_claim_is_looked_at_again() -> None:
    """W's wait closes a cycle whose newest wait is X's: X's resource is woken, and W's is decided again
    a moment later (W may close other cycles whose victims only W's search can meet), until no cycle
    through W is left."""
    s = Space()
    s.add(claim("x-holds", 1, "agent-x", resource=R1), claim("w-holds", 2, "agent-w", resource=R2))
    s.settle(T0, [R1, R2])
    s.add(claim("w-waits", 10, "agent-w", resource=R1, wait=True),
          claim("x-waits", 20, "agent-x", resource=R2, wait=True))
    first = s.decide(R1, T0)
    assert first.also_reconcile == {R2} and first.next_deadline == T0 + CYCLE_RECHECK_SECONDS
    s.apply(first.actions)
    s.settle(T0, [R2])
    assert s.get("x-waits").phase is Phase.DEADLOCKED and s.get("w-waits").phase is Phase.PENDING
    again = s.decide(R1, T0 + CYCLE_RECHECK_SECONDS)
    assert again.actions == () and not again.also_reconcile
    assert again.next_deadline is not None and again.next_deadline > T0 + 60  # the lease's, no recheck


@pytest.mark.parametrize("seed", [3, 5])
def test_no_cycle_is_left_when_claims_arrive_in_bulk(seed: int) -> None:
    """500 claims of 40 holders on 60 resources, arriving 100 at a time before any of their resources
    is decided (an operator behind a busy API server), then decided in a random order. A search that
    stopped at the first cycle it met left cycles whose newest wait had met another one (with these
    seeds); every wait now ends when some cycle through it has it as its newest, so none is left."""
    rng = random.Random(seed)
    holders = [f"h{i}" for i in range(40)]
    resources = [f"res://{i}" for i in range(60)]
    s = Space()
    for first in range(0, 500, 100):
        batch = [
            claim(f"c{i:03d}", i + 1, rng.choice(holders), resource=rng.choice(resources), wait=rng.random() < 0.7)
            for i in range(first, first + 100)
        ]
        s.add(*batch)
        touched = sorted({c.resource for c in batch})
        rng.shuffle(touched)
        s.settle(T0, touched)
    graph = s.graph()
    left = [c.name for c in s.claims.values() if c.phase is Phase.PENDING
            and graph.find_cycle(c.holder, c.resource, c.sequence, c.need) is not None]
    assert left == []
    assert any(c.phase is Phase.DEADLOCKED for c in s.claims.values())


def test_a_resource_held_by_one_exclusive_grant_blocks_as_any_other_grant() -> None:
    """Such a resource is kept in a compact form (nearly every held resource is one): it answers as the
    general form does, through every change between the two."""
    graph = WaitForGraph()
    graph.set_grants("r", (("a", Need(Mode.EXCLUSIVE, 1)),))  # equal to EXCLUSIVE, another object
    assert graph.holders_of("r") == frozenset({"a"})
    assert graph.blockers("b", "r", 2) == ["a"]
    assert graph.blockers("b", "r", 2, Need(Mode.SHARED)) == ["a"]
    graph.set_grants("r", (("a", Need(Mode.SHARED)), ("c", Need(Mode.SHARED))))
    assert graph.holders_of("r") == frozenset({"a", "c"})
    assert graph.blockers("b", "r", 2, Need(Mode.SHARED)) == []
    assert sorted(graph.blockers("b", "r", 2)) == ["a", "c"]
    graph.set_holder("r", "c")
    assert graph.blockers("b", "r", 2, Need(Mode.SHARED)) == ["c"]
    graph.add_wait("c", "s", 3)
    graph.set_holder("s", "b")
    graph.add_wait("b", "r", 4)
    assert graph.find_cycle("b", "r", 4) is not None
    graph.set_holder("r", None)
    assert graph.holders_of("r") == frozenset() and graph.blockers("b", "r", 4) == []


def _dense(n: int, width: int = 16) -> WaitForGraph:
    """h0 … h(n-1) each hold r_i, and each waits for the `width` resources held before it: no cycle,
    but every holder reaches every one before it."""
    graph = WaitForGraph()
    for i in range(n):
        graph.set_holder(f"r{i}", f"h{i}")
    for i in range(1, n):
        for j in range(max(0, i - width), i):
            graph.add_wait(f"h{i}", f"r{j}", i)
    return graph


class _Counting(WaitForGraph):
    calls = 0

    def blockers(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _Counting.calls += 1
        return super().blockers(*args, **kwargs)


def test_reaches_answers_for_all_of_a_claims_resources_in_one_pass() -> None:
    graph = _dense(200)
    # A new claim of h200 on the 16 resources before it: nothing it waits for comes back to it ...
    starts = [f"h{j}" for j in range(184, 200)]
    assert not graph.reaches("h200", starts)
    assert all(graph.find_cycle("h200", f"r{j}", 200) is None for j in range(184, 200))
    # ... until the first holder waits for what h200 holds.
    graph.set_holder("r200", "h200")
    graph.add_wait("h0", "r200", 300)
    assert graph.reaches("h200", starts)
    assert graph.find_cycle("h200", "r199", 201) is not None
    assert graph.reaches("h5", ["h5"])  # a start that is the waiter itself


def test_reaches_visits_each_wait_once() -> None:
    """The pass costs one `blockers` per wait it reaches (3 064 here), where a search per resource
    walks them all again for each of the 16 (the operator spent 42 s of CPU on 200 such claims)."""
    graph = _Counting()
    for i in range(200):
        graph.set_holder(f"r{i}", f"h{i}")
    for i in range(1, 200):
        for j in range(max(0, i - 16), i):
            graph.add_wait(f"h{i}", f"r{j}", i)
    starts = [f"h{j}" for j in range(184, 200)]
    _Counting.calls = 0
    assert not graph.reaches("h200", starts)
    one_pass = _Counting.calls
    _Counting.calls = 0
    for j in range(184, 200):
        graph.find_cycle("h200", f"r{j}", 200)
    per_resource = _Counting.calls
    waits = sum(min(i, 16) for i in range(1, 200))
    assert one_pass <= waits, (one_pass, waits)
    assert per_resource >= 10 * one_pass, (per_resource, one_pass)
