"""The test forwarder's silent partition (`tests.support.partition`), against a local echo server:
while silent no byte passes and no connection ends (no FIN, no RST: a read just waits); after
`heal()` what was sent meanwhile arrives, in order; `blackhole_open()` silences only the connections
open at the time."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.partition import Partition

QUIET = 0.5  # long enough for a forwarded byte to arrive on loopback many times over


@pytest.fixture
def echo() -> Iterator[str]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def connect(partition: Partition) -> socket.socket:
    host, port = partition.address.removeprefix("https://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.settimeout(QUIET)
    return s


def echoed(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    with contextlib.suppress(TimeoutError):
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the connection ended")
            got += chunk
    return got


def test_blackhole_holds_every_byte_without_ending_a_connection_and_heal_delivers_them(echo: str) -> None:
    partition = Partition(echo)
    try:
        old = connect(partition)
        assert echoed(old, b"before") == b"before"
        partition.blackhole()
        assert echoed(old, b"held") == b""  # a timeout, not an end of stream or a reset
        new = connect(partition)  # accepted, but silent too
        assert echoed(new, b"new") == b""
        assert partition.silent_connections == 2
        partition.heal()
        old.settimeout(5)
        new.settimeout(5)
        assert old.recv(100) == b"held"  # what was sent while silent arrives, in order
        assert new.recv(100) == b"new"
        assert echoed(old, b"after") == b"after"
        assert echoed(connect(partition), b"later") == b"later"
    finally:
        partition.cut()


def test_blackhole_open_silences_only_the_connections_open_now(echo: str) -> None:
    partition = Partition(echo)
    try:
        old = connect(partition)
        assert echoed(old, b"x") == b"x"
        partition.blackhole_open()
        assert echoed(old, b"stale") == b""
        assert echoed(connect(partition), b"fresh") == b"fresh"
        assert partition.silent_connections == 1
    finally:
        partition.cut()


def test_a_close_while_silent_is_not_seen_until_heal(echo: str) -> None:
    """A FIN waits like any byte: the far end of a silent path does not learn the near end gave up."""
    partition = Partition(echo)
    try:
        s = connect(partition)
        assert echoed(s, b"x") == b"x"
        partition.blackhole()
        s.shutdown(socket.SHUT_WR)
        with pytest.raises(TimeoutError):
            s.recv(100)  # the echo server's side stays open: no FIN came back through
        partition.heal()
        s.settimeout(5)
        assert s.recv(100) == b""  # now the echo server saw the FIN and closed in turn
    finally:
        partition.cut()
