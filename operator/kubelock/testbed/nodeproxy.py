"""The only ways between the host and a real node's network namespace (see :mod:`kubelock.testbed.node`).

Run as ``python nodeproxy.py --netns /proc/<pid>/ns/net --api-port P --egress-socket PATH``; standard
library only, so it runs by path without the package on ``sys.path``. It serves two directions:

* **node → API server.** A TCP listener *inside* the node's namespace on ``0.0.0.0:P`` forwards each
  connection to ``127.0.0.1:P`` on the host, where kube-apiserver listens. kubelet and kube-proxy use
  the ordinary kubeconfig (``https://127.0.0.1:P``), and pods reach the same listener through the
  ``kubernetes`` Service, whose endpoint is the node's address and port P.
* **API server → node.** An HTTP CONNECT proxy on a Unix socket, which kube-apiserver's egress
  selector names for its "cluster" traffic: connections to the kubelet (``kubectl logs``/``exec``)
  and to pods and services (the API server's service proxy) are dialled from *inside* the node's
  namespace.

A socket belongs to the network namespace of the thread that created it, for its whole life. This
single-threaded process switches namespace (``setns``) only around ``socket()`` calls, so every
listener and every outgoing connection is made where it belongs and the rest of the process stays
in the host's namespace. Nothing is added to the host's network: no address, route or rule. The
node's namespace has routes to its own subnets only, so no connection made here can leave the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
CONNECT_HEADER_LIMIT = 8192
_libc = ctypes.CDLL(None, use_errno=True)


class Namespaces:
    """Switches this thread between the host's network namespace and the node's."""

    def __init__(self, node_netns: str) -> None:
        self._host = os.open("/proc/self/ns/net", os.O_RDONLY)
        self._node = os.open(node_netns, os.O_RDONLY)

    @contextlib.contextmanager
    def node(self) -> Iterator[None]:
        _setns(self._node)
        try:
            yield
        finally:
            _setns(self._host)

    def node_socket(self) -> socket.socket:
        with self.node():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


async def _connect(sock: socket.socket, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


class Proxy:
    def __init__(self, namespaces: Namespaces, api_port: int) -> None:
        self._ns = namespaces
        self._api_port = api_port

    async def to_api_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection accepted inside the node: forwarded to the API server on the host's loopback."""
        host_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host_sock.setblocking(False)
        try:
            upstream = await _connect(host_sock, "127.0.0.1", self._api_port)
        except OSError:
            writer.close()
            return
        await _splice((reader, writer), upstream)

    async def egress(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP CONNECT from the API server: dialled from inside the node's namespace."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = _connect_target(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" + str(error).encode())
            writer.close()
            return
        try:
            upstream = await _connect(self._ns.node_socket(), *target)
        except OSError as error:
            writer.write(f"HTTP/1.1 502 Bad Gateway\r\n\r\n{error}".encode())
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _splice((reader, writer), upstream)


def _connect_target(head: bytes) -> tuple[str, int]:
    """(host, port) of ``CONNECT host:port HTTP/1.1``."""
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    if method != "CONNECT":
        raise ValueError(f"only CONNECT is served, not {method!r}")
    authority = rest.split(" ", 1)[0]
    host, _, port = authority.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad CONNECT target {authority!r}")
    return host.strip("[]"), int(port)


async def serve(args: argparse.Namespace) -> None:
    namespaces = Namespaces(args.netns)
    proxy = Proxy(namespaces, args.api_port)
    listener = namespaces.node_socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", args.api_port))  # in the node's namespace: reachable from the node only
    api = await asyncio.start_server(proxy.to_api_server, sock=listener, limit=CONNECT_HEADER_LIMIT)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.egress_socket)
    egress = await asyncio.start_unix_server(proxy.egress, path=args.egress_socket, limit=CONNECT_HEADER_LIMIT)
    os.chmod(args.egress_socket, 0o600)
    print(f"serving: node 0.0.0.0:{args.api_port} -> host 127.0.0.1:{args.api_port}; egress {args.egress_socket}")
    sys.stdout.flush()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with api, egress:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="the node's network namespace, e.g. /proc/<pid>/ns/net")
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--egress-socket", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
