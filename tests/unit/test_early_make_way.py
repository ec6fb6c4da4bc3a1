"""The priming makes way for the early path's decisions (`EarlyGrants.make_way`): it waits while a
decision is under way, and never longer than `MAKE_WAY_SECONDS` in all, whatever the decisions do."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from kubelock.domain.clock import SystemClock
from kubelock.operator import early as early_module
from kubelock.operator.early import EarlyGrants
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.settings import parse


def _early() -> EarlyGrants:
    unused = cast(Any, None)
    return EarlyGrants(unused, parse([]).policy, SystemClock(), unused, PolicyIndex(), [None], lambda _: True)


def test_the_priming_waits_for_a_decision_under_way() -> None:
    early = _early()

    async def run() -> list[str]:
        order: list[str] = []

        async def decision() -> None:
            await asyncio.sleep(0.2)
            order.append("decided")

        early._deciding.add(asyncio.create_task(decision()))
        await early.make_way()
        order.append("page parsed")
        return order

    assert asyncio.run(run()) == ["decided", "page parsed"]


def test_the_priming_waits_no_longer_than_its_bound_in_all(monkeypatch: Any) -> None:
    monkeypatch.setattr(early_module, "MAKE_WAY_SECONDS", 0.3)
    early = _early()

    async def run() -> tuple[float, float]:
        stuck = asyncio.create_task(asyncio.sleep(60))
        early._deciding.add(stuck)
        began = time.monotonic()
        await early.make_way()
        first = time.monotonic() - began
        began = time.monotonic()
        await early.make_way()  # the bound is spent: no more waiting
        second = time.monotonic() - began
        stuck.cancel()
        return first, second

    first, second = asyncio.run(run())
    # The second call does not wait: well under the bound of 0.3 s even when a loaded machine
    # holds the process up (0.05 s left no room for that).
    assert 0.25 <= first < 2.0 and second < 0.2
