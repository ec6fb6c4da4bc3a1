"""Cutting a client off from the API server: a kubeconfig pointed elsewhere, and a TCP forwarder
the test cuts, as a network partition would.

Two kinds of partition:
- loud: `drop()` and `cut()` close the sockets, so both ends see an error at once (a restarted API
  server, a proxy that resets connections);
- silent: `blackhole()` (every connection, new ones too) and `blackhole_open()` (only the connections
  open now, new ones work: the classic half-open watch) stop forwarding bytes while every connection
  stays open. No FIN, no RST: the kernel still acknowledges what is sent, as on a path that a NAT or
  firewall silently drops, so a client learns of it only from its own timeouts.

A slow path: `delay(seconds)` holds every byte a client sends for that long before it goes on (the
answers and the watches' events flow as before; a new connection's TLS hello goes at once), so each
request reaches the API server `seconds` late and a write answers no sooner: a busy API server's
writes as a client sees them, made real and timed. Requests sent together are late together (a
latency, not a queue).

`heal()` forwards again, on the old connections and the new. Bytes sent while silent are delivered
then, in order, not discarded: TCP retransmits what its peer did not acknowledge, so after a partition
shorter than the retransmission timeout (minutes) everything sent does arrive. (Discarding bytes from
the middle of a TLS stream would make both ends fail at the next record: a cut, not a heal.)
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from pathlib import Path

import yaml

TLS_HANDSHAKE = b"\x16"  # the content type of a TLS handshake record (a ClientHello)


def kubeconfig_for(source: Path, server: str, path: Path) -> Path:
    """A copy of a kubeconfig that talks to another address (same credentials and CA)."""
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


def dead_kubeconfig(source: Path, path: Path) -> Path:
    """A copy of a kubeconfig whose server is a port nothing listens on: an API server unreachable."""
    return kubeconfig_for(source, f"https://127.0.0.1:{closed_port()}", path)


class _Link:
    """One forwarded connection: its two sockets, and whether bytes flow through it now."""

    def __init__(self, client: socket.socket, upstream: socket.socket, *, flowing: bool) -> None:
        self.sockets = (client, upstream)
        self.flowing = threading.Event()
        if flowing:
            self.flowing.set()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.flowing.set()  # a pump holding bytes wakes, finds its sink closed, and ends


class Partition:
    """A TCP forwarder to the API server that the test cuts, as a network partition would."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("https://").rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._silent = False  # new connections start silent (`blackhole`)
        self._cut = threading.Event()
        self._request_delay = 0.0  # seconds each byte a client sends is held (`delay`)
        self.accepted = 0  # connections accepted so far
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                link = _Link(client, upstream, flowing=not self._silent)
                self._links.append(link)
                self.accepted += 1
            threading.Thread(target=self._pump_late, args=(link, client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, upstream, client), daemon=True).start()

    def _pump_late(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        """The requests' direction: each chunk goes on `_request_delay` seconds after it came (read at
        its arrival: a delay set later holds only what comes later), in order, through `_pump`."""
        held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
        reader, writer = socket.socketpair()

        def release() -> None:
            with contextlib.suppress(OSError):
                while True:
                    due, data = held.get()
                    if not data:
                        break
                    time.sleep(max(0.0, due - time.monotonic()))
                    writer.sendall(data)
            with contextlib.suppress(OSError):
                writer.shutdown(socket.SHUT_WR)

        threading.Thread(target=release, daemon=True).start()
        threading.Thread(target=self._pump, args=(link, reader, sink), daemon=True).start()
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                # A new connection's TLS hello (a handshake record) goes at once: a busy API server is
                # slow to answer requests, not to accept connections. What follows (the client's
                # Finished and its request, one flight) is held like any request.
                late = 0.0 if data[:1] == TLS_HANDSHAKE else self._request_delay
                held.put((time.monotonic() + late, data))
        held.put((0.0, b""))

    @staticmethod
    def _pump(link: _Link, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                link.flowing.wait()  # silent: the bytes wait here (the sender's kernel has ACKed them)
                sink.sendall(data)
        # An end that closed while silent: its FIN waits too, as it would on a silent path.
        link.flowing.wait()
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    # ---- silent ---------------------------------------------------------------------------------

    def blackhole(self) -> None:
        """Every connection goes silent, and so do new ones (accepted, their bytes held)."""
        with self._lock:
            self._silent = True
            for link in self._links:
                link.flowing.clear()

    def blackhole_open(self) -> None:
        """Only the connections open now go silent; new ones work (a half-open watch, a pooled
        keep-alive connection that will never answer)."""
        with self._lock:
            for link in self._links:
                link.flowing.clear()

    def heal(self) -> None:
        """Forward again, on every connection; what was held is delivered first, in order."""
        with self._lock:
            self._silent = False
            for link in self._links:
                link.flowing.set()

    @property
    def listen_port(self) -> int:
        return int(self._listener.getsockname()[1])

    def client_ports(self) -> list[int]:
        """The clients' ports of the connections open now (the client's end of each)."""
        with self._lock:
            ports = []
            for link in self._links:
                if not link.closed:
                    with contextlib.suppress(OSError):
                        ports.append(int(link.sockets[0].getpeername()[1]))
            return ports

    @property
    def silent_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed and not link.flowing.is_set())

    # ---- slow -----------------------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        """Hold what clients send from now on for `seconds` (0: forward at once again)."""
        self._request_delay = seconds

    # ---- loud -----------------------------------------------------------------------------------

    def drop(self) -> None:
        """Close the connections open now (watches included) but keep accepting new ones: the
        client reconnects, as it does after an API server restarts."""
        with self._lock:
            dropped, self._links = self._links, []
        for link in dropped:
            link.close()

    def cut(self) -> None:
        self._cut.set()
        self._listener.close()
        self.drop()
