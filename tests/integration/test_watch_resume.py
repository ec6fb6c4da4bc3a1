"""A claim watch that stopped delivering is replaced by a stream resumed from the last version the old
one delivered (`ListWatch.run(version, resumed=True)`, what `Runtime._deaf` starts): the API server
replays every later change from its watch cache, with no LIST of the claims, and the scope counts as
unwatched until the new stream delivers. Only a version the server no longer has (410) costs a LIST."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kubernetes.client import ApiClient

from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.operator.watches import ListWatch
from tests.support.claims import Locks

R = "deploy://watch-resume"


class Recorder:
    """A watch sink that writes down what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.seen: asyncio.Event = asyncio.Event()
        self.wanted = 0

    def event(self, scope: str | None, kind: str, body: dict[str, Any]) -> None:
        self.calls.append((kind, body["metadata"]["name"]))

    def seen_to(self, scope: str | None, version: int) -> None:
        if version >= self.wanted:
            self.seen.set()

    def unwatched(self, scope: str | None) -> None:
        self.calls.append(("unwatched", scope))

    def watched(self, scope: str | None) -> None:
        self.calls.append(("watched", scope))

    async def relist(self, scope: str | None) -> int:
        self.calls.append(("relist", scope))
        listing = await self.client.request("GET", paths.claims(scope), params={"limit": "1"}, verb="list")
        version = int(listing["metadata"]["resourceVersion"])
        self.seen_to(scope, version)  # the LIST has it all
        return version

    client: KubeClient


async def _watch_until_seen(client: KubeClient, namespace: str, start: int, wanted: int) -> Recorder:
    sink = Recorder()
    sink.client = client
    sink.wanted = wanted
    watch = ListWatch(client, paths.claims(namespace), "claim", namespace, sink)
    task = asyncio.create_task(watch.run(start, resumed=True))
    try:
        await asyncio.wait_for(sink.seen.wait(), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return sink


def test_a_resumed_claim_watch_replays_from_its_version_without_listing(
    control_plane, admin_api: ApiClient, iso_ns: str  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    first = locks.claim("first", R, "agent-1")
    second = locks.claim("second", R, "agent-2")
    since, latest = int(first["metadata"]["resourceVersion"]), int(second["metadata"]["resourceVersion"])

    async def scenario() -> tuple[Recorder, Recorder]:
        client = KubeClient(config.load(str(control_plane.kubeconfig)))
        try:
            resumed = await _watch_until_seen(client, iso_ns, since, latest)
            gone = await _watch_until_seen(client, iso_ns, 1, latest)  # older than the watch cache holds
            return resumed, gone
        finally:
            await client.close()

    resumed, gone = asyncio.run(scenario())
    # Unwatched until the new stream delivers; then the change after `since`, and no LIST.
    assert resumed.calls[:3] == [("unwatched", iso_ns), ("watched", iso_ns), ("ADDED", "second")]
    assert ("relist", iso_ns) not in resumed.calls
    # A version the API server no longer has is answered 410: then, and only then, a LIST.
    assert ("relist", iso_ns) in gone.calls
    assert ("ADDED", "first") not in gone.calls  # what the LIST had is not replayed
