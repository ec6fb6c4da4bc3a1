"""The view log says when a broken watch delivers again and how long after it broke: the time a
claim created meanwhile waited to enter the view, taken apart from the log alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from kubelock.kube.errors import Unreachable
from kubelock.operator.watches import ListWatch


class Sink:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.done = asyncio.Event()

    def event(self, scope: str | None, kind: str, body: dict[str, Any]) -> None:
        self.calls.append(f"{kind} {body['metadata']['name']}")
        self.done.set()

    def seen_to(self, scope: str | None, version: int) -> None:
        pass

    def unwatched(self, scope: str | None) -> None:
        self.calls.append("unwatched")

    def watched(self, scope: str | None) -> None:
        self.calls.append("watched")

    async def relist(self, scope: str | None) -> int:
        raise AssertionError("no LIST: the watch resumes from its version")


class CutOnce:
    """A client whose first watch breaks at once (a cut connection); the next delivers one event."""

    def __init__(self) -> None:
        self.watches = 0

    async def watch(self, path: str, **params: Any) -> AsyncGenerator[dict[str, Any], None]:
        self.watches += 1
        if self.watches == 1:
            raise Unreachable("cut")
        yield {"type": "ADDED", "object": {"metadata": {"name": "c1", "resourceVersion": "8"}}}
        await asyncio.Event().wait()


def test_a_watch_that_broke_logs_when_it_delivers_again(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[str]:
        sink = Sink()
        watch = ListWatch(CutOnce(), "/claims", "claim", "a", sink)  # type: ignore[arg-type]
        task = asyncio.create_task(watch.run(7))
        await asyncio.wait_for(sink.done.wait(), 30)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return sink.calls

    with caplog.at_level(logging.DEBUG, logger="kubelock.view"):
        calls = asyncio.run(scenario())
    assert calls == ["unwatched", "watched", "ADDED c1"]
    resumed = [r.getMessage() for r in caplog.records if "delivers again" in r.getMessage()]
    assert len(resumed) == 1 and resumed[0].startswith("claim watch of namespace a delivers again, ")
