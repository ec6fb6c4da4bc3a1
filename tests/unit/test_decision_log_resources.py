"""The decision log's line of a claim of several resources names each of them, up to a bound: it
used to name only the first, so a grant (or its end) on the others could not be found in the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.kube import paths
from kubelock.operator.cache import Cache, multi_key
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import FakeApi

SHOWN = 8  # `logs.SHOWN`


def _granted(resources: list[str], caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """Grant a claim of `resources` through the reconciler and a recording fake API; its decision line."""
    async def scenario() -> None:
        api = FakeApi()
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        body = {"metadata": {"name": "m", "uid": "um", "namespace": "a"},
                "spec": {"resources": resources, "holder": "agent", "wait": True}}
        cache.upsert_claim(api.put(paths.claims("a", "m"), body))
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        await reconciler.reconcile(multi_key("a", "um"))
        await reconciler.stop()

    with caplog.at_level(logging.INFO, logger="kubelock.reconciler"):
        asyncio.run(scenario())
    [line] = [r for r in caplog.records if r.name == "kubelock.reconciler" and getattr(r, "outcome", "") == "Held"]
    return line


def test_a_grant_of_several_resources_names_every_one(caplog: pytest.LogCaptureFixture) -> None:
    resources = ["deploy://c", "deploy://a", "deploy://b"]
    line = _granted(resources, caplog)
    assert "deploy://a, deploy://b, deploy://c (Granted)" in line.getMessage(), line.getMessage()
    assert line.__dict__["resources"] == ["deploy://a", "deploy://b", "deploy://c"]
    assert line.__dict__["resourceCount"] == 3
    assert line.__dict__["resource"] == "deploy://c"  # as before: the first resource the claim names


def test_a_claim_of_many_resources_names_the_first_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    resources = [f"deploy://r{i:02d}" for i in range(16)]
    line = _granted(resources, caplog)
    shown = ", ".join(resources[:SHOWN])
    assert f"{shown}, and {16 - SHOWN} more (Granted)" in line.getMessage(), line.getMessage()
    assert "deploy://r15" not in line.getMessage().split(" (Granted)")[0]  # the notice's message names them all
    assert line.__dict__["resourceCount"] == 16
    assert len(line.__dict__["resources"]) == SHOWN + 1


@pytest.mark.parametrize(("count", "expected"), [
    (0, ()),
    (1, ("r0",)),
    (3, ("r0", "r1", "r2")),
    (4, ("r0", "r1", "r2", "and 1 more")),
    (9, ("r0", "r1", "r2", "and 6 more")),
])
def test_named_resources_is_bounded(count: int, expected: tuple[str, ...]) -> None:
    from kubelock.operator.logs import LOGGED_RESOURCES, named_resources

    assert LOGGED_RESOURCES == SHOWN
    assert named_resources([f"r{i}" for i in range(count)], shown=3) == expected
