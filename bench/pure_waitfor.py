"""Benchmark of the pure cycle search at 10 000 waiters (no cluster).

    PYTHONPATH=operator python bench/pure_waitfor.py

Shows that the search costs the length of the path, not the number of claims: a short cycle is found
as fast among 10 000 unrelated waiters as among none, while a full-graph search (the anchor) grows
with the graph.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from kubelock.domain.waitfor import WaitForGraph

N = 10_000


def timed(fn: Callable[[], object], repeat: int = 50) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def graph_with_noise(noise: int) -> WaitForGraph:
    """A two-holder cycle (a holds r1 and waits for r2; b holds r2) plus `noise` unrelated waiters."""
    graph = WaitForGraph()
    graph.set_holder("r://1", "a")
    graph.set_holder("r://2", "b")
    graph.add_wait("a", "r://2", 1)
    for i in range(noise):
        graph.set_holder(f"n://{i}", f"noise-holder-{i}")
        graph.add_wait(f"noise-waiter-{i}", f"n://{i}", 10 + i)
    return graph


def chain(length: int) -> WaitForGraph:
    """h0 holds r0 ... h_{n-1} holds r_{n-1}; h_i waits for r_{i+1}; the closing claim is h_{n-1} → r0."""
    graph = WaitForGraph()
    for i in range(length):
        graph.set_holder(f"r://{i}", f"h{i}")
    for i in range(length - 1):
        graph.add_wait(f"h{i}", f"r://{i + 1}", i + 1)
    return graph


def full_search(graph: WaitForGraph, holders: list[str]) -> bool:
    """The anchor: a DFS over every holder's waits (what a detector that scans all claims costs)."""
    seen: set[str] = set()
    for start in holders:
        stack = [start]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for resource in graph.waits_of(node):
                stack.extend(graph.holders_of(resource))
    return bool(seen)


def main() -> None:
    small, big = graph_with_noise(0), graph_with_noise(N)
    t_small = timed(lambda: small.find_cycle("b", "r://1", 2))
    t_big = timed(lambda: big.find_cycle("b", "r://1", 2))
    assert big.find_cycle("b", "r://1", 2) is not None
    holders = ["a", "b"] + [f"noise-waiter-{i}" for i in range(N)]
    t_anchor = timed(lambda: full_search(big, holders), repeat=5)
    long_chain = chain(N)
    t_chain = timed(lambda: long_chain.find_cycle(f"h{N - 1}", "r://0", N), repeat=5)
    assert long_chain.find_cycle(f"h{N - 1}", "r://0", N) is not None
    rows = [
        ("2-holder cycle, no other waiters", t_small),
        (f"2-holder cycle among {N} unrelated waiters", t_big),
        (f"anchor: full-graph search over {N} waiters", t_anchor),
        (f"cycle closing a chain of {N} waiters (path length {N})", t_chain),
    ]
    print("| case | median |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:,.1f} µs |")
    print(f"\nratio short-cycle search with/without {N} waiters: {t_big / t_small:.2f}")
    print(f"ratio full-graph anchor / path search among {N} waiters: {t_anchor / t_big:,.0f}")


if __name__ == "__main__":
    main()
