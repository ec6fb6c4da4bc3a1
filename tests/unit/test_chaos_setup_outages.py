"""The chaos agents' set-up lives through the outages the parts inject (an API server restarting),
and gives up at once on anything else."""

from __future__ import annotations

import asyncio

import pytest
from chaos import identities

from kubelock.kube import errors as kube_errors


def flaky(failures: list[Exception], value: str = "ready"):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def step() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return value

    return step, calls


def test_a_set_up_step_is_tried_again_while_the_api_server_is_down() -> None:
    step, calls = flaky([
        kube_errors.Unreachable("cannot reach the API server"),
        kube_errors.ApiError(503, "ServiceUnavailable", "starting"),
        kube_errors.ApiError(429, "TooManyRequests", "later"),
    ])
    assert asyncio.run(identities.through_outages(step, patience=10)) == "ready"
    assert len(calls) == 4


def test_an_error_that_is_not_an_outage_ends_the_set_up_at_once() -> None:
    step, calls = flaky([kube_errors.Forbidden(403, "Forbidden", "no")])
    with pytest.raises(kube_errors.Forbidden):
        asyncio.run(identities.through_outages(step, patience=10))
    assert len(calls) == 1


def test_an_outage_longer_than_the_patience_ends_the_set_up() -> None:
    step, calls = flaky([kube_errors.Unreachable("down")] * 100)
    with pytest.raises(kube_errors.Unreachable):
        asyncio.run(identities.through_outages(step, patience=0.6))
    assert 2 <= len(calls) <= 3
