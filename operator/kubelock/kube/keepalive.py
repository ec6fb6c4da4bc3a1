"""TCP keepalive on every connection to the API server, so that one a partition left dead ends.

A watch is a connection that may carry nothing for a minute. When the path to the API server goes
dark (a node's network cut, a NAT or firewall that forgot the flow, a peer that vanished without a
FIN), nothing arrives to say so: the watch would wait for its own bound (`client.WATCH_SECONDS` and
its grace, 75 s) while its namespace's claims go unseen. client-go ends such connections with HTTP/2 pings every
30 s; over HTTP/1.1 the equivalent is the kernel's keepalive probes, which Linux sends only after two
hours unless told otherwise. Here: the first probe after IDLE_SECONDS of silence, then every
INTERVAL_SECONDS, and the connection fails after COUNT unanswered ones, or once data or probes
have gone unacknowledged for USER_TIMEOUT_SECONDS (TCP_USER_TIMEOUT) — about 25 s in all. A live
but idle connection costs a few bytes every IDLE_SECONDS.
"""

from __future__ import annotations

import socket
from typing import Any

IDLE_SECONDS = 10
INTERVAL_SECONDS = 5
COUNT = 3
USER_TIMEOUT_SECONDS = IDLE_SECONDS + INTERVAL_SECONDS * COUNT


def connection_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A socket for aiohttp's TCPConnector(socket_factory=...) with keepalive set (Linux options
    where the platform has them; elsewhere SO_KEEPALIVE alone, at the system's timings)."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family=family, type=kind, proto=proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", IDLE_SECONDS),
            ("TCP_KEEPINTVL", INTERVAL_SECONDS),
            ("TCP_KEEPCNT", COUNT),
            ("TCP_USER_TIMEOUT", USER_TIMEOUT_SECONDS * 1000),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        sock.close()
        raise
    return sock
