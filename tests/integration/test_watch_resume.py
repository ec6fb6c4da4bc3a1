"""A claim watch that stopped delivering is replaced by a stream resumed from the last version the old
one delivered (`ListWatch.run(version, resumed=True)`, what `Runtime._deaf` starts): the API server
replays every later change from its watch cache, with no LIST of the claims, and the scope counts as
unwatched until the new stream delivers. Only a version the server no longer has (410) costs a LIST.
The operator's half of it runs in-process (`Runtime`), its claim watch made silent by the test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from kubernetes.client import ApiClient

from kubelock.domain.clock import SystemClock
from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.operator.runtime import Runtime
from kubelock.operator.settings import Settings
from kubelock.operator.watches import ListWatch
from tests.support.claims import Locks, phase_of, wait_until_async

R = "deploy://watch-resume"
WAIT_SECONDS = 10  # the waiter's wait timeout


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


def _deafen_claim_watch(runtime: Runtime) -> asyncio.Event:
    """Make the claim watch's connection go silent, as a partition can leave it half-open: once the
    returned event is set, the stream open then swallows its next event and waits for ever (no
    error, no end). Streams opened later deliver as usual."""
    deaf = asyncio.Event()
    watch = runtime.client.watch

    async def silent_once(path: str, **params: Any) -> AsyncGenerator[dict[str, Any], None]:
        async for event in watch(path, **params):
            if deaf.is_set() and "/lockclaims" in path and not getattr(deaf, "used", False):
                deaf.used = True  # type: ignore[attr-defined]
                await asyncio.Event().wait()
            yield event

    runtime.client.watch = silent_once  # type: ignore[method-assign]
    return deaf


def test_a_silently_dead_claim_watch_is_resumed_without_a_list(
    control_plane, admin_api: ApiClient, iso_ns: str, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    """The operator's own status write (a waiter's wait timing out) does not come back on a claim
    watch gone silent: 5 s later the watch counts as dead and a new stream resumes from the last
    version the old one delivered; the claims are not listed again, and grants go on."""
    locks = Locks(admin_api, iso_ns)

    def phase(name: str) -> str | None:
        return phase_of(locks.get(name))

    async def scenario() -> tuple[int, int, str | None]:
        settings = Settings(namespaces=(iso_ns,), kubeconfig=str(control_plane.kubeconfig))
        runtime = Runtime(settings, config.load(str(control_plane.kubeconfig)), SystemClock())
        deaf = _deafen_claim_watch(runtime)
        await runtime.start()
        try:
            await asyncio.to_thread(locks.claim, "holder", R, "agent-h")
            await wait_until_async(lambda: phase("holder") == "Held", "the holder's grant")
            # The wait outlasts seeing it Pending on a loaded machine: its timeout must come after deaf.set().
            await asyncio.to_thread(locks.claim, "waiter", R, "agent-w", wait=True, wait_timeout=WAIT_SECONDS)
            await wait_until_async(lambda: phase("waiter") == "Pending", "the waiter's answer")
            deaf.set()  # the waiter's TimedOut, written by the operator, is the event swallowed
            await wait_until_async(lambda: phase("waiter") == "TimedOut", "the wait's timeout",
                                   within=WAIT_SECONDS + 60)
            timed_out = int(locks.get("waiter")["metadata"]["resourceVersion"])
            await wait_until_async(lambda: "has delivered nothing" in caplog.text, "the dead watch noticed", within=60)
            await asyncio.to_thread(locks.claim, "after", R + "-2", "agent-a")
            await wait_until_async(lambda: phase("after") == "Held", "a grant after the resume")
            watch, _ = runtime._claim_watches[iso_ns]
            return watch.relists, timed_out, str(watch.version)
        finally:
            await runtime.stop()

    with caplog.at_level(logging.INFO, logger="kubelock"):
        relists, timed_out, version = asyncio.run(scenario())
    assert relists == 0 and "listed again" not in caplog.text  # resumed, not listed
    assert version is not None and int(version) > timed_out  # the new stream delivers, past the swallowed write
