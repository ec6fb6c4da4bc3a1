"""Running kubelock's commands as a user would: the installed console scripts (or the same entry
points through this interpreter), one process per command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.operator import REPO

ENTRY_POINTS = {
    "kubelock": ("kubelock.cli.main", "main"),
    "rlock": ("kubelock.cli.compat", "rlock"),
    "runlock": ("kubelock.cli.compat", "runlock"),
    "rlock-heartbeat": ("kubelock.cli.compat", "rlock_heartbeat"),
}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        """The single JSON object the command printed (fails if there is anything else)."""
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"expected one line of JSON, got: {self.stdout!r} (stderr: {self.stderr})"
        payload = json.loads(lines[0])
        assert isinstance(payload, dict)
        return payload


def argv_of(command: str) -> list[str]:
    script = Path(sys.executable).parent / command
    if script.exists():
        return [str(script)]
    module, function = ENTRY_POINTS[command]
    return [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


def environment(kubeconfig: Path | str, namespace: str, instance: str | None = None) -> dict[str, str]:
    """A clean environment: no POD_* or KUBELOCK_* variables of the test run leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBELOCK_"))}
    env.update(KUBECONFIG=str(kubeconfig), KUBELOCK_NAMESPACE=namespace, PYTHONPATH=str(REPO / "operator"))
    if instance is not None:
        env["KUBELOCK_INSTANCE"] = instance
    return env


def run(command: str, *args: str, env: dict[str, str], timeout: float = 120) -> Run:
    done = subprocess.run([*argv_of(command), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def default_signals() -> None:
    """In a command about to start: SIGINT and SIGHUP as a terminal's commands have them. A test run
    started in the background by a non-interactive shell (`make test &`) inherits both ignored, and
    a command that tests what Ctrl-C or a hang-up does must not inherit that."""
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def start(command: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*argv_of(command), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_signals)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> Run:
    stdout, stderr = process.communicate(timeout=timeout)
    return Run(process.returncode, stdout, stderr)


def python_json(script: str, env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run a Python script in a process of its own (as an agent's second process would be) and
    return the JSON object it printed; it must exit 0."""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def kubectl(control_plane: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The test bed's kubectl as its admin (`control_plane`: anything with `bin_dir` and `kubeconfig`)."""
    argv = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check)
