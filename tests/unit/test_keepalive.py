"""The keepalive options on the API server connections (kubelock.kube.keepalive); that they end a
connection whose path went dark is shown against the real API server in
tests/integration/test_dark_path.py."""

from __future__ import annotations

import asyncio
import socket

from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.keepalive import connection_socket


def test_the_socket_probes_after_ten_idle_seconds_and_gives_up_after_three_misses() -> None:
    with connection_socket((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0))) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 25_000


def test_the_client_connects_with_such_sockets() -> None:
    """A real connection of the client's session, to a local listener: its socket has the options."""

    async def connect() -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")  # the body comes later:
            await writer.drain()  # the connection stays the response's until it is read
            await asyncio.sleep(0.2)
            writer.write(b"{}")
            await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, KubeClient(Credentials(server=f"http://127.0.0.1:{port}")) as client:
            session = await client._ensure_session()
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert response.connection is not None and response.connection.transport is not None
                sock = response.connection.transport.get_extra_info("socket")
                idle = int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))
                await response.read()
                return idle

    assert asyncio.run(connect()) == 10
