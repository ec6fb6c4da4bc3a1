"""The kubelock operator as a real subprocess, so tests can SIGKILL it, run two, or run it under a
restricted identity."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "watching LockClaims"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespaces: tuple[str, ...] = (),
        extra_args: tuple[str, ...] = (),
        metrics: bool = False,
        env: dict[str, str] | None = None,
        path: tuple[Path, ...] = (),
    ) -> None:
        """`env`: more environment for the process; `path`: directories put after the tree on its
        PYTHONPATH (a `sitecustomize` there runs at the operator's start)."""
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = namespaces
        self.extra_args = extra_args
        self.health_port = free_port()
        self.metrics_port = free_port() if metrics else 0
        self.env = dict(env or {})
        self.path = path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "kubelock.operator", "--kubeconfig", str(self.kubeconfig)]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        argv += ["--health-address", f"127.0.0.1:{self.health_port}", "--metrics-port", str(self.metrics_port)]
        # A short resync bounds how long a missed watch event (kopf sometimes starts a new
        # namespace's watch late when namespaces are given as patterns) can delay a test.
        argv += ["--resync-seconds", "10"]
        return argv + list(self.extra_args)

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(map(str, (REPO / "operator", *self.path)))}
        self.popen = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        self.wait_for_log(READY_LINE, timeout)
        # kopf opens its liveness endpoint beside the startup handlers: ready means both.
        while not self.healthy():
            if time.monotonic() > deadline or not self.alive:
                raise RuntimeError(f"operator /healthz never answered:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def log_lines(self) -> list[str]:
        """The log's complete lines. The operator may be writing its last line while the test reads:
        a JSON line cut short is not yet a line."""
        text = self.log_text()
        return text[: text.rfind("\n") + 1].splitlines()

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"operator exited with {self.popen.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"operator did not log {text!r} within {timeout}s:\n{self.log_text()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _signal(self, signum: signal.Signals) -> bool:
        """Signals the operator's process group while the operator is not yet reaped, and only then.

        Once reaped, its pid (the group's id) is free: with this machine's pid_max of 32 768 and the
        process churn of a CI run it is soon another process's, possibly a session leader such as a
        control plane's kube-apiserver, which a stale SIGSTOP or SIGKILL would freeze or kill. An
        unreaped child (running or a zombie) keeps its pid, so a poll() that finds it running makes
        the signal safe.
        """
        if self.popen is None or self.popen.poll() is not None:
            return False
        os.killpg(self.popen.pid, signum)
        return True

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self._signal(signal.SIGKILL):
            assert self.popen is not None
            self.popen.wait(10)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self, timeout: float = 15) -> int | None:
        if self.popen is None:
            return None
        if self._signal(signal.SIGTERM):
            # A paused operator would hold SIGTERM pending until the end of the timeout.
            self._signal(signal.SIGCONT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
