"""etcd for the test bed: one member (the default), or several on 127.0.0.1 that form one cluster, as a
production control plane runs them, so that a test can kill the leader, take quorum away, pause a
member or fill the store to its quota and watch what kube-apiserver and kubelock make of it.

No etcdctl is needed: everything a test asks of a member (its status and the leader it follows, the
alarms, compaction, defragmentation, disarming) goes through etcd's JSON gateway on the client URL,
which etcd serves by default (``--enable-grpc-gateway``).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelock.testbed.processes import ManagedProcess, ProcessError, free_ports, start_process, wait_until

log = logging.getLogger(__name__)

ETCD_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
# A member's requests are answered by the cluster only while a quorum stands; a single `/health`
# answers true only then, which is what start-up waits for.
SINGLE_NAME = "default"


@dataclass
class EtcdMember:
    """One etcd process: its name, URLs, data directory, and the process while it runs."""

    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    argv: list[str]
    process: ManagedProcess | None = field(default=None, repr=False)
    restarts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive()


class EtcdCluster:
    """``members`` etcd processes forming one cluster (1: the bed's usual single member).

    ``quota_bytes`` sets ``--quota-backend-bytes`` on every member: past it etcd raises the NOSPACE
    alarm and refuses every write but deletions until the alarm is disarmed.
    """

    def __init__(
        self,
        etcd: Path,
        data_root: Path,
        log_dir: Path,
        *,
        members: int = 1,
        quota_bytes: int | None = None,
        spawn: Callable[[str, Sequence[str]], ManagedProcess] | None = None,
    ) -> None:
        if members < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {members}")
        self._log_dir = log_dir
        self._spawn = spawn or (lambda name, argv: start_process(name, argv, log_dir=log_dir, cwd=data_root.parent))
        ports = free_ports(2 * members)
        names = [SINGLE_NAME] if members == 1 else [f"etcd-{i}" for i in range(members)]
        peers = {name: f"http://127.0.0.1:{ports[2 * i + 1]}" for i, name in enumerate(names)}
        initial_cluster = ",".join(f"{name}={url}" for name, url in peers.items())
        self.members: list[EtcdMember] = []
        for i, name in enumerate(names):
            client_url = f"http://127.0.0.1:{ports[2 * i]}"
            # The single member keeps the bed's historical data directory, <workdir>/etcd itself.
            data_dir = data_root if members == 1 else data_root / name
            argv = [
                str(etcd),
                f"--name={name}",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peers[name]}",
                f"--initial-advertise-peer-urls={peers[name]}",
                f"--initial-cluster={initial_cluster}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # tests do not need durability, and fsync dominates latency
                "--log-level=warn",
            ]
            if quota_bytes is not None:
                argv.append(f"--quota-backend-bytes={quota_bytes}")
            self.members.append(EtcdMember(name, client_url, peers[name], data_dir, argv))

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def client_urls(self) -> list[str]:
        return [member.client_url for member in self.members]

    def member(self, name: str) -> EtcdMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"no etcd member {name!r}; members: {', '.join(m.name for m in self.members)}")

    def start(self) -> list[ManagedProcess]:
        """Starts every member, then waits until the cluster answers /health (a quorum stands)."""
        for member in self.members:
            self.start_member(member.name, wait=False)
        for member in self.members:
            url = member.client_url
            wait_until(functools.partial(_healthy, url), what=f"etcd {member.name} /health", timeout=ETCD_TIMEOUT,
                       process=member.process)  # fmt: skip
        return [m.process for m in self.members if m.process is not None]

    def start_member(self, name: str, *, wait: bool = True) -> ManagedProcess:
        """(Re)starts a member on its data directory; a restarted member rejoins with what it had."""
        member = self.member(name)
        if member.running:
            raise ProcessError(f"etcd member {name} is already running")
        # A restart writes a log of its own (etcd-0.1.log, ...): the first run's stays as it was.
        log_name = "etcd" if len(self.members) == 1 else member.name
        if member.process is not None:
            member.restarts += 1
            log_name += f".{member.restarts}"
        member.process = self._spawn(log_name, member.argv)
        if wait:
            process = member.process
            wait_until(lambda: _answers(member.client_url), what=f"etcd {name} to answer", timeout=ETCD_TIMEOUT,
                       process=process)  # fmt: skip
        return member.process

    def kill_member(self, name: str) -> None:
        """SIGKILL: the member dies as a crashed machine's would, with no leadership handed over."""
        member = self.member(name)
        if member.process is not None and member.process.alive():
            member.process.popen.send_signal(signal.SIGKILL)
            member.process.popen.wait(10)

    def pause_member(self, name: str) -> None:
        """SIGSTOP: the member keeps its sockets open and answers nothing (a hung machine)."""
        self._signal(name, signal.SIGSTOP)

    def resume_member(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)

    def _signal(self, name: str, signum: signal.Signals) -> None:
        member = self.member(name)
        if member.process is None or not member.process.alive():
            raise ProcessError(f"etcd member {name} is not running")
        member.process.popen.send_signal(signum)

    # -- what the members say ---------------------------------------------------------------------

    def status(self, name: str, *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """The member's maintenance status (``etcdctl endpoint status``): its id, the leader's, its db size."""
        return _post(self.member(name).client_url, "/v3/maintenance/status", {}, timeout=timeout)

    def leader(self, *, exclude: Collection[str] = (), timeout: float = REQUEST_TIMEOUT) -> str | None:
        """The name of the member the running members agree leads, or None (no quorum, or no answer).

        ``exclude``: members not to ask (a paused one would keep the caller waiting ``timeout``); a
        leader among them does not count, so a paused leader's followers answer None until they
        have elected another."""
        ids: dict[str, str] = {}
        leaders: set[str] = set()
        for member in self.members:
            if not member.running or member.name in exclude:
                continue
            try:
                status = self.status(member.name, timeout=timeout)
            except (OSError, ValueError):
                continue
            ids[str(status["header"]["member_id"])] = member.name
            if str(status.get("leader", "0")) != "0":
                leaders.add(str(status["leader"]))
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def alarms(self, name: str | None = None) -> list[str]:
        """The cluster's raised alarms (``NOSPACE``, ``CORRUPT``), as one member reports them."""
        answer = _post(self._url(name), "/v3/maintenance/alarm", {"action": "GET"})
        return sorted({str(alarm.get("alarm", "")) for alarm in answer.get("alarms", [])})

    def put(self, key: bytes, value: bytes, name: str | None = None) -> dict[str, Any]:
        return _post(self._url(name), "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def count_prefix(self, prefix: bytes, name: str | None = None) -> int:
        """How many keys under ``prefix`` the store holds now."""
        answer = _post(self._url(name), "/v3/kv/range",
                       {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)), "count_only": True})  # fmt: skip
        return int(answer.get("count", 0))

    def delete_prefix(self, prefix: bytes, name: str | None = None) -> int:
        answer = _post(self._url(name), "/v3/kv/deleterange",
                       {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))})  # fmt: skip
        return int(answer.get("deleted", 0))

    def reclaim(self) -> None:
        """What an operator does after NOSPACE: compact to the current revision, defragment every
        member (the space compaction frees goes back only then), and disarm the alarm."""
        revision = int(self.status(self._running()[0].name)["header"]["revision"])
        _post(self._url(None), "/v3/kv/compaction", {"revision": str(revision), "physical": True})
        for member in self._running():
            _post(member.client_url, "/v3/maintenance/defragment", {}, timeout=60)
        _post(self._url(None), "/v3/maintenance/alarm", {"action": "DEACTIVATE", "alarm": "NOSPACE",
                                                          "memberID": "0"})  # fmt: skip
        for member in self._running():  # each member's own raised alarm, by its id
            member_id = str(self.status(member.name)["header"]["member_id"])
            _post(member.client_url, "/v3/maintenance/alarm",
                  {"action": "DEACTIVATE", "alarm": "NOSPACE", "memberID": member_id})  # fmt: skip

    def _running(self) -> list[EtcdMember]:
        running = [m for m in self.members if m.running]
        if not running:
            raise ProcessError("no etcd member is running")
        return running

    def _url(self, name: str | None) -> str:
        return self.member(name).client_url if name is not None else self._running()[0].client_url


def _opener() -> urllib.request.OpenerDirector:
    # No proxies: an HTTP_PROXY in the environment must not capture 127.0.0.1.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url: str, path: str, body: Mapping[str, Any], *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with _opener().open(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")[:300]
        raise EtcdError(f"etcd {url}{path} answered {error.code}: {text}") from None
    if not isinstance(answer, dict):
        raise ValueError(f"etcd {url}{path} answered {answer!r}")
    return answer


class EtcdError(OSError):
    """etcd refused a request (for example a write while NOSPACE is raised)."""


def _healthy(client_url: str) -> bool:
    with _opener().open(f"{client_url}/health", timeout=5) as response:
        return bool(json.load(response).get("health") == "true")


def _answers(client_url: str) -> bool:
    """The member serves its client URL (it may still be catching up with the leader)."""
    try:
        with _opener().open(f"{client_url}/version", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
