"""The client against an API server (or a proxy in front of one) whose answers cannot be used: a
success that is not a JSON object, a list whose items are not objects, a body without end, watch lines
that are no JSON event or longer than aiohttp's default line buffer. Each is a clear error of the
`Unreachable` family (the operator's watches back off and watch again; the commands exit 6 naming the
server), never an empty answer, a traceback or a process that grows without bound.

The server is a real HTTP server on the loopback interface, answering as the test says.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubelock.kube import client as kube_client
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.operator.watches import ListWatch

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PATH = "/apis/kubelock.dev/v1alpha1/namespaces/default/lockclaims"
REPO = Path(__file__).resolve().parents[2]


async def _serve(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _answering(body: bytes) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return handle


async def _get(body: bytes) -> Any:
    async for server in _serve(_answering(body)):
        async with KubeClient(Credentials(server=server)) as client:
            return await client.list_all(PATH)


@pytest.mark.parametrize("body", [b'{"kind": "LockClaimList", "items": [', b"[1, 2, 3]", b'"x"', b"\xff\xfe"])
async def test_a_success_that_is_not_a_json_object_is_an_error_not_an_empty_list(body: bytes) -> None:
    with pytest.raises(Unreachable, match="not a JSON object"):
        await _get(body)


async def test_a_list_whose_items_are_not_objects_is_an_error() -> None:
    with pytest.raises(Unreachable, match="not all objects"):
        await _get(b'{"kind": "List", "metadata": {"resourceVersion": "5"}, "items": [1, "x", null]}')


async def test_an_answer_without_end_is_refused_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body streamed without end (chunked, so no length is announced) is read up to the bound and
    refused: before, it was read whole into memory (`kubelock status` grew to 11 GB in 100 s)."""
    monkeypatch.setattr(kube_client, "MAX_ANSWER_BYTES", 4 * 2**20)
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"items": [], "x": "')
        chunk = b"a" * 2**20
        while sent < 2**30:  # stops by itself after 1 GiB, should the client not
            await response.write(chunk)
            sent += len(chunk)
        return response

    async for server in _serve(endless):
        async with KubeClient(Credentials(server=server)) as client:
            with pytest.raises(Unreachable, match="more than 4194304 bytes"):
                await client.list_all(PATH)
    assert sent < 2**30


async def test_an_announced_length_past_the_bound_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_client, "MAX_ANSWER_BYTES", 1000)
    with pytest.raises(Unreachable, match="more than 1000 bytes"):
        await _get(b'{"items": [], "x": "' + b"a" * 2000 + b'"}')


def _watching(*lines: bytes) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for line in lines:
            await response.write(line)
        return response

    return handle


async def _watch(*lines: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for server in _serve(_watching(*lines)):
        async with KubeClient(Credentials(server=server)) as client:
            async for event in client.watch(PATH, resource_version="1"):
                events.append(event)
    return events


@pytest.mark.parametrize("line", [b'{"type": "MODIFIED", "object":\n', b"[1]\n", b"null\n", b"\xff\n"])
async def test_a_watch_line_that_is_no_json_event_is_an_error(line: bytes) -> None:
    with pytest.raises(Unreachable, match="not a JSON event"):
        await _watch(b'{"type": "ADDED", "object": {"metadata": {"resourceVersion": "2"}}}\n', line)


async def test_a_watch_error_whose_code_is_not_a_number_is_a_server_error() -> None:
    with pytest.raises(ApiError) as error:
        await _watch(b'{"type": "ERROR", "object": {"code": "teapot", "message": "m"}}\n')
    assert error.value.status == 500


async def test_a_watch_event_longer_than_aiohttps_default_line_is_read() -> None:
    """1 MiB in one event: past aiohttp's default of 512 KiB a line (LineTooLong before)."""
    big = b"a" * 2**20
    line = b'{"type": "MODIFIED", "object": {"metadata": {"resourceVersion": "2", "x": "' + big + b'"}}}\n'
    events = await _watch(line)
    assert len(events) == 1 and len(events[0]["object"]["metadata"]["x"]) == 2**20


async def test_a_watch_line_past_the_bound_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_client, "WATCH_LINE_BYTES", 2**20)
    with pytest.raises(Unreachable, match="longer than"):
        await _watch(b'{"type": "MODIFIED", "object": {"x": "' + b"a" * 2 * 2**20 + b'"}}\n')


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.unwatched_count = 0

    def event(self, scope: str | None, kind: str, body: dict[str, Any]) -> None:
        self.events.append((kind, body))

    def seen_to(self, scope: str | None, version: int) -> None:
        pass

    def unwatched(self, scope: str | None) -> None:
        self.unwatched_count += 1

    def watched(self, scope: str | None) -> None:
        pass

    async def relist(self, scope: str | None) -> int:
        return 1


async def test_the_operators_watch_outlives_a_bad_line() -> None:
    """The operator's watch of a scope backs off and watches again after a line it cannot read: before,
    the ValueError ended its task, and with it every event of the scope."""
    calls = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        line = b"garbage\n" if calls == 1 else b'{"type": "ADDED", "object": {"metadata": {"resourceVersion": "7"}}}\n'
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(line)
        if calls > 1:
            await asyncio.sleep(2)  # a live watch, for a while
        return response

    async for server in _serve(handle):
        async with KubeClient(Credentials(server=server)) as client:
            sink = _Sink()
            task = asyncio.create_task(ListWatch(client, PATH, "claim", None, sink).run(1))
            for _ in range(200):
                if sink.events or task.done():
                    break
                await asyncio.sleep(0.05)
            assert not task.done(), task.exception()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert [kind for kind, _ in sink.events] == ["ADDED"] and sink.unwatched_count >= 1


def test_kubelock_status_against_a_broken_answer_says_so(tmp_path: Path) -> None:
    """Before: "no locks held in namespace default", exit 0, from a body that was not JSON."""
    server = subprocess.Popen(
        [sys.executable, "-c", _BROKEN_SERVER],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: h\n"
            f"clusters: [{{name: h, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: h, user: {token: t}}]\n"
            "contexts: [{name: h, context: {cluster: h, user: h, namespace: default}}]\n"
        )
        command = "import sys; from kubelock.cli.main import main; sys.exit(main())"
        done = subprocess.run(
            [sys.executable, "-c", command, "--kubeconfig", str(kubeconfig), "status"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        )
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 6, (done.returncode, done.stdout, done.stderr)
    assert "not a JSON object" in done.stderr and "no locks held" not in done.stdout, done.stderr
    assert "Traceback" not in done.stderr


_BROKEN_SERVER = """
import asyncio, sys
from aiohttp import web

async def handle(request):
    return web.Response(body=b'{"kind": "ResourceLockList", "items": [', content_type="application/json")

async def main():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""
