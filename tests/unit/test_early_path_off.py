"""`--no-early-grants`: the operator's log says the early path was off, not that it ran and granted
nothing (`kubelock.operator.early`). The path's client and Event recorder are never touched when it
is not started, so none is given."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from kubelock.domain.clock import SystemClock
from kubelock.operator.early import EarlyGrants
from kubelock.operator.policies import PolicyIndex
from kubelock.operator.settings import parse


def _early() -> EarlyGrants:
    settings = parse(["--no-early-grants"])
    assert settings.early_grants is False
    unused = cast(Any, None)
    return EarlyGrants(unused, settings.policy, SystemClock(), unused, PolicyIndex(), [None], lambda _: True)


def test_an_early_path_never_started_is_logged_as_off(caplog: pytest.LogCaptureFixture) -> None:
    early = _early()
    early.policies_listed()
    with caplog.at_level(logging.INFO, logger="kubelock.early"):
        asyncio.run(early.stop())
    messages = [r.getMessage() for r in caplog.records if r.name == "kubelock.early"]
    assert messages == ["early path off (--no-early-grants): no claim was answered before the priming was in"]
