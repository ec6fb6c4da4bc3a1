"""What `kubelock unlock` says when nothing matches: a holder is matched whole (<identity>/<instance>),
so an identity or an instance alone (the help's own example once named `agent-7f9c2`) is told how to
name one, with the holders that do hold locks there."""

from __future__ import annotations

from typing import Any

from kubelock.sdk.admin import SHOWN_HOLDERS, nothing_to_break
from kubelock.sdk.model import LockInfo


def _lock(resource: str, holder: str, *others: str) -> LockInfo:
    spec: dict[str, Any] = {
        "resource": resource, "holder": holder, "claimRef": {"name": "c", "uid": f"u-{holder}"},
        "leaseDurationSeconds": 60, "acquireTime": "2026-11-27T10:00:00Z", "renewTime": "2026-11-27T10:00:00Z",
        "fencingToken": 7, "mode": "Shared" if others else "Exclusive",
    }
    if others:
        spec["grants"] = [
            {"holder": h, "claimRef": {"name": f"c{i}", "uid": f"u-{h}"}, "leaseDurationSeconds": 60,
             "acquireTime": "2026-11-27T10:00:00Z", "renewTime": "2026-11-27T10:00:00Z", "fencingToken": 8 + i,
             "mode": "Shared"}
            for i, h in enumerate(others)
        ]
    return LockInfo.from_body({"metadata": {"name": "l", "namespace": "agents", "uid": "x", "resourceVersion": "9"},
                               "spec": spec})


def test_a_partial_holder_is_told_to_name_a_whole_one_and_sees_the_holders() -> None:
    locks = [_lock("deploy://api", "user:alice/laptop"), _lock("github://a/b", "user:bob/w1", "user:carol/w2")]
    text = nothing_to_break("agents", locks, holders=["agent-7f9c2"], resources=set())
    assert text.startswith("no lock in namespace agents is held by agent-7f9c2")
    assert "name a whole holder, <identity>/<instance>" in text
    assert "holders there: user:alice/laptop, user:bob/w1, user:carol/w2 (kubelock status -n agents)" in text


def test_a_whole_holder_that_holds_nothing_gets_no_hint_on_the_form() -> None:
    text = nothing_to_break("agents", [], holders=["user:dave/laptop"], resources=set())
    assert text == "no lock in namespace agents is held by user:dave/laptop; no lock is held there"


def test_many_holders_are_cut_short() -> None:
    locks = [_lock(f"deploy://s{i}", f"user:u{i}/w") for i in range(SHOWN_HOLDERS + 3)]
    text = nothing_to_break("agents", locks, holders=["user:alice"], resources=set())
    assert text.endswith(" and 3 more (kubelock status -n agents)")
    assert text.count("user:u") == SHOWN_HOLDERS


def test_uris_not_held_are_named() -> None:
    text = nothing_to_break("agents", [], holders=[], resources={"deploy://b", "deploy://a"})
    assert text == "no lock in namespace agents matches: deploy://a, deploy://b not held"
