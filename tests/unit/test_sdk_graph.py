"""The wait-for graph built from claims and locks, its cycles, and its DOT rendering."""

from __future__ import annotations

from typing import Any

from kubelock.sdk.graph import WaitGraph, build, cycles, to_dot
from kubelock.sdk.model import ClaimInfo, LockInfo


def claim(holder: str, resource: str, phase: str) -> ClaimInfo:
    body: dict[str, Any] = {
        "metadata": {"name": f"{holder}-{resource}", "namespace": "ns", "uid": "u"},
        "spec": {"resource": resource, "holder": holder, "wait": True},
        "status": {"phase": phase},
    }
    return ClaimInfo.from_body(body)


def lock(holder: str, resource: str) -> LockInfo:
    return LockInfo.from_body(
        {
            "metadata": {"name": f"lock-{resource}", "namespace": "ns", "uid": "u"},
            "spec": {"resource": resource, "holder": holder, "fencingToken": 1, "leaseDurationSeconds": 60},
        }
    )


# agent-a holds deploy://api-prod and waits for github://acme/app/pr/10, which agent-b holds while
# waiting for deploy://api-prod: the cycle of the contract's example.
CYCLE = WaitGraph(
    held_by={"deploy://api-prod": ("agent-a",), "github://acme/app/pr/10": ("agent-b",)},
    waits=(("agent-a", "github://acme/app/pr/10"), ("agent-b", "deploy://api-prod")),
)


def test_build_takes_waits_from_pending_claims_only() -> None:
    graph = build(
        [
            claim("agent-b", "deploy://api-prod", "Pending"),
            claim("agent-c", "deploy://api-prod", "Rejected"),  # a failed try-lock is no wait
            claim("agent-d", "deploy://api-prod", "Deadlocked"),
            claim("agent-a", "deploy://api-prod", "Held"),
        ],
        [lock("agent-a", "deploy://api-prod")],
    )
    assert graph.held_by == {"deploy://api-prod": ("agent-a",)}
    assert graph.waits == (("agent-b", "deploy://api-prod"),)
    assert cycles(graph) == []


def test_cycles_are_found_once_with_the_alternating_path() -> None:
    assert cycles(CYCLE) == [("agent-a", "github://acme/app/pr/10", "agent-b", "deploy://api-prod", "agent-a")]


def test_dot_of_a_known_cycle() -> None:
    assert to_dot(CYCLE, name="demo") == (
        'digraph "demo" {\n'
        "  rankdir=LR;\n"
        '  "holder:agent-a" [label="agent-a", shape=ellipse, color=red, fontcolor=red];\n'
        '  "holder:agent-b" [label="agent-b", shape=ellipse, color=red, fontcolor=red];\n'
        '  "resource:deploy://api-prod" [label="deploy://api-prod", shape=box, color=red, fontcolor=red];\n'
        '  "resource:github://acme/app/pr/10" [label="github://acme/app/pr/10", shape=box, color=red, '
        "fontcolor=red];\n"
        '  "holder:agent-a" -> "resource:github://acme/app/pr/10" [label="waits for", style=dashed, color=red, '
        "fontcolor=red];\n"
        '  "holder:agent-b" -> "resource:deploy://api-prod" [label="waits for", style=dashed, color=red, '
        "fontcolor=red];\n"
        '  "resource:deploy://api-prod" -> "holder:agent-a" [label="held by", color=red, fontcolor=red];\n'
        '  "resource:github://acme/app/pr/10" -> "holder:agent-b" [label="held by", color=red, fontcolor=red];\n'
        "}\n"
    )


def test_dot_without_a_cycle_has_no_red_and_escapes_quotes() -> None:
    graph = WaitGraph(held_by={'x://"quoted"\\': "agent-a"}, waits=(("agent-b", 'x://"quoted"\\'),))
    dot = to_dot(graph)
    assert "red" not in dot
    assert '"resource:x://\\"quoted\\"\\\\"' in dot


def test_three_holder_cycle_and_a_bystander() -> None:
    graph = WaitGraph(
        held_by={"r://1": "a", "r://2": "b", "r://3": "c", "r://4": "d"},
        waits=(("a", "r://2"), ("b", "r://3"), ("c", "r://1"), ("d", "r://1")),
    )
    assert cycles(graph) == [("a", "r://2", "b", "r://3", "c", "r://1", "a")]
    dot = to_dot(graph)
    assert '"holder:d" -> "resource:r://1" [label="waits for", style=dashed];' in dot


def shared_lock(resource: str, *holders: str) -> LockInfo:
    first, *rest = holders
    grants = [{"holder": h, "claimRef": {"name": h, "uid": h}, "fencingToken": 2} for h in rest]
    spec: dict[str, Any] = {"resource": resource, "holder": first, "fencingToken": 1, "leaseDurationSeconds": 60,
                            "mode": "Shared", "grants": grants}  # fmt: skip
    return LockInfo.from_body({"metadata": {"name": f"lock-{resource}", "namespace": "ns", "uid": "u"}, "spec": spec})


def test_every_grant_of_a_shared_lock_is_held_by_and_on_a_cycle() -> None:
    """A lock held by two Shared readers (or two permits of a semaphore) has two holders: the second
    one's edge is drawn too, and a cycle through it is found."""
    graph = build(
        [claim("reader-b", "deploy://api-prod", "Pending"), claim("agent-c", "github://acme/app/pr/10", "Pending")],
        [shared_lock("github://acme/app/pr/10", "reader-a", "reader-b"), lock("agent-c", "deploy://api-prod")],
    )
    assert graph.held_by["github://acme/app/pr/10"] == ("reader-a", "reader-b")
    assert graph.holders == ["agent-c", "reader-a", "reader-b"]
    dot = to_dot(graph)
    assert '"resource:github://acme/app/pr/10" -> "holder:reader-b"' in dot
    # reader-b waits for deploy://api-prod (agent-c), which waits for pr/10, held by reader-b among others.
    assert cycles(graph) == [("agent-c", "github://acme/app/pr/10", "reader-b", "deploy://api-prod", "agent-c")]
