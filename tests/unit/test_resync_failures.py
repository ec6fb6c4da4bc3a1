"""A resync pass whose LIST fails (`Runtime.resync`, `Runtime._resync_forever`): the pass raises the
client's own error, not the group its TaskGroup wraps it in, so the periodic loop catches it, goes
on, and tries again soon (`RESYNC_RETRY_SECONDS`), not a whole `--resync-seconds` later. Before, the
first failed pass ended the loop for good, and a holder pod's end behind kopf's frozen pod watch then
waited for kopf (tests/integration/test_frozen_pod_watch.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubelock.kube import client as client_module
from kubelock.kube.config import Credentials
from kubelock.kube.errors import Unreachable
from kubelock.operator import runtime as runtime_module
from kubelock.operator.runtime import Runtime
from kubelock.operator.settings import Settings


class FrozenClock:
    def now(self) -> float:
        return 1_000_000.0


class Lists:
    """`KubeClient.pages` standing in: each LIST fails while `failing` says so, else is empty."""

    def __init__(self, failing: int) -> None:
        self.failing = failing  # how many passes fail (one LIST failing fails its pass)
        self.paths: list[str] = []
        self.passes_done = asyncio.Event()

    async def pages(self, path: str, **_: Any) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        self.paths.append(path)
        if self.failing and "resourcelocks" in path:
            self.failing -= 1
            raise Unreachable("cannot reach the API server: timeout")
        if not self.failing and "pods" in path:
            self.passes_done.set()
        yield [], "100"


def runtime(lists: Lists, resync_seconds: int = 60) -> Runtime:
    rt = Runtime(Settings(namespaces=("a",), resync_seconds=resync_seconds),
                 Credentials(server="https://127.0.0.1:1"), FrozenClock())
    rt.client.pages = lists.pages  # type: ignore[method-assign]
    return rt


async def test_a_failed_list_raises_the_clients_error_not_a_group() -> None:
    rt = runtime(Lists(failing=1))
    with pytest.raises(Unreachable):
        await rt.resync(claims=False)


async def test_the_periodic_resync_outlives_a_failed_pass_and_tries_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "RESYNC_RETRY_SECONDS", 0.05, raising=False)
    lists = Lists(failing=2)
    rt = runtime(lists, resync_seconds=2)  # the first pass 2 s after the start, the next 2 s later
    task = asyncio.create_task(rt._resync_forever())
    try:
        # Two failed passes and a good one 2 s + 2 × 0.05 s after the start: the loop went on, at the
        # retry's pace (at the resync's pace the good one would come at 6 s). Up to 3.9 s for a loaded
        # machine's late wake-ups.
        await asyncio.wait_for(lists.passes_done.wait(), timeout=3.9)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert lists.failing == 0


def test_a_retried_pass_reuses_no_connection_idle_since_the_failed_one() -> None:
    """A pass that failed on a pooled connection a frozen path left silent ended after the LIST
    timeout; its retry comes RESYNC_RETRY_SECONDS later. Every connection idle since the freeze is
    then older than the client reuses, so the retry does not meet the next silent one."""
    assert client_module.POOLED_IDLE_SECONDS < runtime_module.LIST_TIMEOUT_SECONDS + runtime_module.RESYNC_RETRY_SECONDS
