"""How long the client lets a watch live (kubelock.kube.client.KubeClient.watch), against a local
HTTP server that answers as a frozen path would: the API server ends a watch after its
`timeoutSeconds`, so one that has not ended `watch_grace` later is dead, whether it delivers nothing
or keeps delivering; and a watch request whose answer does not begin within the request timeout is
given up (a request sent on a pooled connection that went silent). That the bound finds a frozen
path against the real API server: tests/integration/test_frozen_path.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.errors import Unreachable

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
BOOKMARK = b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def headers_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEADERS)
    await writer.drain()
    await asyncio.sleep(3600)  # frozen: the connection stays open, nothing more comes


async def bookmarks_for_ever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEADERS)
    while True:  # a stream past its timeoutSeconds that still delivers: no live API server does this
        writer.write(chunk(BOOKMARK))
        await writer.drain()
        await asyncio.sleep(0.1)


async def no_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(3600)


async def ends_at_its_timeout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEADERS + chunk(BOOKMARK))
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def watch(serve: Serve, *, timeout_seconds: int, request_timeout: float = 5.0) -> tuple[int, float, str]:
    """Events read, seconds until the watch ended, and how it ended ("" or the error)."""

    async def run() -> tuple[int, float, str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        events, outcome = 0, ""
        started = time.monotonic()
        async with server, KubeClient(Credentials(server=f"http://127.0.0.1:{port}"), timeout=request_timeout,
                                      watch_grace=0.5) as client:
            try:
                # A guard far beyond the bounds under test, so that a regression fails instead of hanging.
                async with asyncio.timeout(20):
                    async for _ in client.watch("/apis/kubelock.dev/v1/lockclaims", timeout_seconds=timeout_seconds):
                        events += 1
            except Unreachable as error:
                outcome = str(error)
            took = time.monotonic() - started
            server.close()
            return events, took, outcome

    return asyncio.run(run())


@pytest.mark.parametrize("serve", [headers_then_silence, bookmarks_for_ever], ids=["silent", "delivering"])
def test_a_watch_not_ended_by_its_timeout_and_grace_is_given_up(serve: Serve) -> None:
    _, took, outcome = watch(serve, timeout_seconds=1)
    assert "watch on" in outcome, outcome
    assert 1.4 <= took < 3.0, took  # timeoutSeconds 1 + grace 0.5


def test_a_watch_request_whose_answer_does_not_begin_is_given_up_at_the_request_timeout() -> None:
    events, took, outcome = watch(no_answer, timeout_seconds=60, request_timeout=0.5)
    assert (events, "watch on" in outcome) == (0, True), outcome
    assert took < 3.0, took


def test_a_watch_the_server_ends_at_its_timeout_ends_cleanly() -> None:
    events, took, outcome = watch(ends_at_its_timeout, timeout_seconds=1)
    # The outcome tells a clean end from one given up after the grace; the time, with a loaded
    # machine's margin, that it came at the timeout and not at the 20 s guard.
    assert (events, outcome) == (1, "")
    assert took < 3.0, took
