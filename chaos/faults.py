"""The faults and the processes they hit: operator replicas (SIGKILL, SIGSTOP), control-plane components
(etcd and kube-apiserver crashed and restarted in place), agent processes (SIGSTOP) and holder pods.

Everything here is started from the harness's main thread and awaited without blocking its event loop,
which also serves the fenced store and the monitor: a blocking wait would stall them and distort the
history. Children get the test bed's parent-death signal, so none outlives the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubelock.api import objects
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.testbed.controlplane import ControlPlane
from kubelock.testbed.processes import ManagedProcess, free_port, start_process

REPO = Path(__file__).resolve().parents[1]
READY_LINE = "watching LockClaims"
OPERATOR_READY_TIMEOUT = 90.0
COMPONENT_READY_TIMEOUT = 120.0


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def component_pid(plane: ControlPlane, name: str) -> int:
    """The pid of a control-plane component (0 when it does not run)."""
    try:
        return _component(plane, name)[1].pid
    except LookupError:
        return 0


def kubeconfig_for(source: Path, server: str, target: Path) -> Path:
    """A copy of `source` that talks to `server` (a proxy) instead."""
    data: dict[str, Any] = yaml.safe_load(source.read_text())
    for cluster in data.get("clusters") or []:
        cluster["cluster"]["server"] = server
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    target.chmod(0o600)
    return target


async def poll(done: Callable[[], bool], within: float, interval: float = 0.2) -> bool:
    """Check `done` every `interval` seconds for at most `within` seconds; its last answer."""
    for _ in range(max(1, int(within / interval))):
        if done():
            return True
        await asyncio.sleep(interval)
    return done()


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def wait_exit(process: ManagedProcess, within: float) -> bool:
    deadline = time.monotonic() + within
    while process.popen.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# The operator's source root the replicas run from (`python -m chaos.run --operator DIR`): another
# tree's operator under this harness, so that two operators are compared under one measurement.
OPERATOR_SOURCE: Path | None = None


class Operator:
    """One kubelock operator replica, run as `python -m kubelock.operator` with production defaults."""

    def __init__(self, name: str, kubeconfig: Path, log_dir: Path, namespaces: Sequence[str]) -> None:
        self.name = name
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.namespaces = tuple(namespaces)
        self.process: ManagedProcess | None = None
        self.starts = 0
        self.paused = False
        self.expected_down = False  # killed or stopped on purpose: its absence is no crash

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "kubelock.operator", "--kubeconfig", str(self.kubeconfig)]
        for namespace in self.namespaces:
            argv += ["-n", namespace]
        # Leases here last seconds, not half an hour, so a renewal a second late under load is a
        # third of its period: at the default 50 % such jitter marks leases Stale (a status write and
        # a Warning Event each, renewed-after-stale Events after), load that a real lease never sees.
        argv += ["--stale-after-percent", "90"]
        # When each claim entered the view and every decision with its claims: what a claim answered
        # late is taken apart with (`kubelock.operator.viewlog`).
        argv += ["--debug", "kubelock.view"]
        return [*argv, "--health-address", f"127.0.0.1:{free_port()}"]

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    async def start(self) -> float:
        """Start it and wait until it watches; returns the seconds it took."""
        began = time.monotonic()
        self.starts += 1
        env = {**os.environ, "PYTHONPATH": str(OPERATOR_SOURCE or REPO / "operator")}
        # A log per incarnation: start_process truncates, and a killed replica's log is evidence.
        self.process = start_process(f"{self.name}-{self.starts}", self.argv(), log_dir=self.log_dir, env=env,
                                     cwd=REPO)
        self.paused = False
        self.expected_down = False
        deadline = began + OPERATOR_READY_TIMEOUT
        while READY_LINE not in self.log_text():
            if not self.process.alive():
                raise RuntimeError(f"operator {self.name} exited with {self.process.popen.returncode}:\n"
                                   f"{self.process.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"operator {self.name} not ready in {OPERATOR_READY_TIMEOUT:.0f}s:\n"
                                   f"{self.process.tail()}")
            await asyncio.sleep(0.1)
        return time.monotonic() - began

    def log_text(self) -> str:
        if self.process is None or self.process.log_path is None:
            return ""
        try:
            return self.process.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when its node dies."""
        self.expected_down = True
        if self.process is not None and self.process.alive():
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.popen.wait(10)

    def pause(self) -> None:
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGCONT)
            self.paused = False

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        self.expected_down = True
        if self.paused:
            self.resume()
        if self.process.alive():
            _signal_group(self.process.pid, signal.SIGTERM)
            if not await wait_exit(self.process, 15):
                _signal_group(self.process.pid, signal.SIGKILL)
                await wait_exit(self.process, 10)
        return self.process.popen.returncode

    def rss(self) -> int:
        return rss_bytes(self.pid) if self.alive else 0

    def last_error(self) -> str:
        """The last exception line of its log (what it died of, when it died)."""
        lines = [line for line in self.log_text().splitlines() if line and not line[0].isspace()
                 and ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0])]
        return lines[-1][:300] if lines else "(no exception in its log)"

    def crashes(self) -> list[str]:
        """Tracebacks in its log: an operator must log failures, never die of them."""
        text = self.log_text()
        return [chunk[:2000] for chunk in text.split("Traceback (most recent call last)")[1:]]


# ---- control-plane components ---------------------------------------------------------------------
# ControlPlane has no public restart; these use its process list (see docs/reliability.md). A
# component is restarted with the very argv it had, so ports, data directory and certificates stay.


def _component(plane: ControlPlane, name: str) -> tuple[int, ManagedProcess]:
    for index, process in enumerate(plane._processes):
        if process.name == name:
            return index, process
    raise LookupError(f"the control plane runs no {name}")


def crash_component(plane: ControlPlane, name: str) -> ManagedProcess:
    """SIGKILL a component (etcd or kube-apiserver) and reap it; returns the dead process."""
    _, process = _component(plane, name)
    _signal_group(process.pid, signal.SIGKILL)
    process.popen.wait(10)
    return process


def start_component(plane: ControlPlane, name: str, dead: ManagedProcess, incarnation: int) -> ManagedProcess:
    """Start `name` again with the argv it had, in place of `dead` in the plane's process list."""
    index, _ = _component(plane, name)
    argv = [str(arg) for arg in dead.popen.args]  # type: ignore[union-attr]
    process = start_process(f"{name}-restart-{incarnation}", argv, log_dir=plane.workdir / "logs",
                            cwd=plane.workdir)
    process.name = name  # the plane finds its components by name (and stops them on exit)
    plane._processes[index] = process
    return process


async def wait_ready(kube: KubeClient, within: float = COMPONENT_READY_TIMEOUT) -> float:
    """Wait until the API server answers /readyz (which checks etcd too); returns the seconds waited."""
    began = time.monotonic()
    while True:
        try:
            await kube.request("GET", "/readyz", verb="readyz")
            return time.monotonic() - began
        except kube_errors.BadAnswer:
            # /readyz answers plain text ("ok"), which the client refuses as no JSON object; it does so
            # only for a success (a failing check is a 500: the ApiError below).
            return time.monotonic() - began
        except (kube_errors.ApiError, kube_errors.Unreachable):
            if time.monotonic() - began > within:
                raise
            await asyncio.sleep(0.1)


# ---- agents and pods ------------------------------------------------------------------------------


def freeze(process: ManagedProcess) -> None:
    _signal_group(process.pid, signal.SIGSTOP)


def thaw(process: ManagedProcess) -> None:
    _signal_group(process.pid, signal.SIGCONT)


async def live_pods(kube: KubeClient, namespace: str) -> list[str]:
    listing = await kube.list(paths.pods(namespace), labelSelector="kubelock.dev/lock-holder=true")
    return [
        str(item["metadata"]["name"])
        for item in listing.get("items") or []
        if not (item.get("metadata") or {}).get("deletionTimestamp")
    ]


async def delete_pods(
    kube: KubeClient, namespace: str, names: Sequence[str]
) -> dict[str, tuple[int | None, float]]:
    """Delete pods concurrently, en masse; returns, for each deletion the API server accepted, the
    revision of that write (None when its answer showed none) and when its answer arrived."""

    async def delete(name: str) -> tuple[str, tuple[int | None, float]] | None:
        try:
            body = await kube.delete(paths.pods(namespace, name))
        except (kube_errors.ApiError, kube_errors.Unreachable):
            return None
        # A pod's deletion is graceful: the answer is the pod with its deletionTimestamp, at the
        # revision of that write (which is when the operator can first see the pod going).
        return name, (objects.revision(body) or None, time.time())

    results = await asyncio.gather(*(delete(n) for n in names))
    return dict(r for r in results if r is not None)
