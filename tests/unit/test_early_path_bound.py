"""The early path decides at most `early.DECISIONS` claims a start: each decision LISTs its namespace's
unanswered and waiting claims, so many new claims at a restart would otherwise multiply what the API
server is asked while the priming runs. The claims past the bound are counted as left to the normal
path and never decided early."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kubelock.domain.clock import SystemClock
from kubelock.operator.early import DECISIONS, EarlyGrants, Listed
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.settings import parse


def _claim(i: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "agents", "uid": f"uid-{i}", "name": f"c{i}"},
        "spec": {"resource": f"deploy://r{i}"},
    }


def test_past_the_bound_new_claims_are_left_to_the_normal_path(monkeypatch: Any) -> None:
    decided: list[str] = []

    async def decide(self: EarlyGrants, namespace: str, uid: str, spelled: str, listed: Listed | None) -> None:
        decided.append(uid)
        self.granted += 1

    monkeypatch.setattr(EarlyGrants, "_decide", decide)
    unused = cast(Any, None)
    early = EarlyGrants(unused, parse([]).policy, SystemClock(), unused, PolicyIndex(), [None], lambda _: True)

    async def run() -> None:
        for i in range(DECISIONS + 5):
            early._consider(_claim(i))
        early._consider(_claim(0))  # seen again (a MODIFIED event): neither decided nor counted twice
        await early.stop()

    asyncio.run(run())
    assert decided == [f"uid-{i}" for i in range(DECISIONS)]
    assert (early.granted, early.refused) == (DECISIONS, 5)
