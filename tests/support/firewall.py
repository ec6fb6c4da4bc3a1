"""Packets dropped on chosen connections over 127.0.0.1 (iptables, as root): a path gone dark.

The forwarder's silent mode (`Partition.blackhole`) keeps each end's kernel answering: TCP
acknowledgements and keepalive probes still come back, as they do from a frozen process. A path that
went dark (a cable, a NAT or firewall that forgot the flow, a peer that vanished) answers nothing at
all, which only dropped packets show. The rules match single connections (both ports, both
directions), so new connections work, and carry a comment naming this process, so that rules a
killed test left behind are recognised and removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from types import TracebackType

COMMENT_PREFIX = "kubelock-test-drop"


def unavailable() -> str | None:
    """Why packets cannot be dropped here, or None."""
    if os.geteuid() != 0:
        return "dropping packets needs root (iptables)"
    if shutil.which("iptables") is None:
        return "dropping packets needs iptables (hack/install-node.sh installs it)"
    return None


class DroppedConnections:
    """Drops every packet between 127.0.0.1:`server_port` and each of `client_ports`, both ways,
    while entered."""

    def __init__(self, server_port: int, client_ports: Iterable[int]) -> None:
        self._comment = f"{COMMENT_PREFIX}-{os.getpid()}"
        self._rules = [
            ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(a), "--dport", str(b), "-m", "comment",
             "--comment", self._comment, "-j", "DROP"]
            for port in client_ports
            for a, b in ((port, server_port), (server_port, port))
        ]

    def __enter__(self) -> DroppedConnections:
        try:
            for rule in self._rules:
                _iptables("-I", *rule)
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._remove()

    def _remove(self) -> None:
        for rule in self._rules:
            subprocess.run(["iptables", "-w", "-D", *rule], capture_output=True, check=False)


def remove_stale_rules() -> None:
    """Rules of a test process that no longer runs (killed before its `__exit__`)."""
    listing = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        if COMMENT_PREFIX not in line or not line.startswith("-A "):
            continue
        pid = line.split(f"{COMMENT_PREFIX}-", 1)[1].split()[0].strip('"')
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["iptables", "-w", "-D", *line.split()[1:]], capture_output=True, check=False)


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=True)
