"""`Reconciler.decide_and_apply`, the entry point of a caller with a small view (the early path):
the key decided as `reconcile` decides it, only what the caller takes of the decision applied, and
nothing when it says why not, when the gate holds the grant back, or when what it takes is not the
decision's."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Claim, CreateLock, Decision, Policy, SetStatus
from kubelock.domain.reasons import Phase
from kubelock.kube import paths
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Choice, Reconciler
from tests.support.fakeapi import ClosedGate, FakeApi

R = "github://acme/app/issues/42"
KEY = ("a", R)


def _claim(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": "u1", "namespace": "a"},
            "spec": {"resource": R, "holder": f"agent-{name}"}}


def _reconciler(api: FakeApi, gate: Any = None) -> Reconciler:
    clock = ManualClock(1_800_000_000.0)
    cache = Cache()
    cache.upsert_claim(api.put(paths.claims("a", "c1"), _claim("c1")))
    return Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"), gate=gate)  # type: ignore[arg-type]


def test_what_the_caller_takes_is_applied_a_round_at_a_time() -> None:
    api = FakeApi()
    reconciler = _reconciler(api)
    seen: list[tuple[str, ...]] = []

    def take_all(claims: list[Claim], decision: Decision) -> Choice:
        seen.append(tuple(type(a).__name__ for a in decision.actions))
        return decision.actions

    async def scenario() -> tuple[Choice, Choice]:
        return await reconciler.decide_and_apply(KEY, take_all), await reconciler.decide_and_apply(KEY, take_all)

    first, second = asyncio.run(scenario())
    assert [type(a) for a in first] == [CreateLock] and [type(a) for a in second] == [SetStatus]
    assert api.writes == [("create", paths.locks("a")), ("update", paths.claims("a", "c1", status=True))]
    assert api.objects[paths.claims("a", "c1")]["status"]["phase"] == Phase.HELD.value
    assert seen == [("CreateLock",), ("SetStatus",)]


def test_a_caller_that_takes_nothing_writes_nothing() -> None:
    api = FakeApi()
    reconciler = _reconciler(api)
    why = asyncio.run(reconciler.decide_and_apply(KEY, lambda claims, decision: "not mine to decide"))
    assert why == "not mine to decide" and api.writes == []


def test_a_grant_the_gate_holds_back_is_not_applied() -> None:
    api = FakeApi()
    reconciler = _reconciler(api, ClosedGate())
    why = asyncio.run(reconciler.decide_and_apply(KEY, lambda claims, decision: decision.actions))
    assert isinstance(why, str) and "closed" in why
    assert api.writes == [] and not reconciler.holding  # and not remembered for a later release either


def test_actions_that_are_not_the_decisions_are_refused() -> None:
    api = FakeApi()
    reconciler = _reconciler(api)

    def forged(claims: list[Claim], decision: Decision) -> Choice:
        create = decision.actions[0]
        assert isinstance(create, CreateLock)
        return (replace(create, lease_seconds=create.lease_seconds + 1),)

    with pytest.raises(RuntimeError):
        asyncio.run(reconciler.decide_and_apply(KEY, forged))
    assert api.writes == []
