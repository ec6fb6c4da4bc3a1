"""ManagedProcess.stop signals a child's process group only while the child is not yet reaped: a
reaped child's pid (its group's id) may already be another process's, another test bed's
kube-apiserver say. Real processes."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubelock.testbed import processes
from kubelock.testbed.processes import pid_alive, start_process

# Forks a grandchild into its own group that ignores SIGTERM, writes the grandchild's pid
# (atomically), and ends on SIGTERM itself: only the SIGKILL to the group ends the grandchild.
LEADER = r"""
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)
    os._exit(0)
tmp = out.with_suffix(".tmp")
tmp.write_text(str(pid))
tmp.rename(out)
time.sleep(120)
"""


def _wait(done: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_child_reaped_before_stop_has_its_old_group_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = start_process("short", [sys.executable, "-c", "pass"], log_dir=tmp_path)
    _wait(lambda: not process.alive(), "the child to end")  # alive() reaps it
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(processes.os, "killpg", lambda pgid, signum: signalled.append((pgid, signum)))
    assert process.stop() == 0
    assert signalled == [], "a reaped child's group id was signalled"


def test_stop_ends_the_child_and_what_it_forked(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild"
    process = start_process("leader", [sys.executable, "-c", LEADER, str(marker)], log_dir=tmp_path)
    _wait(marker.exists, "the grandchild's pid")
    grandchild = int(marker.read_text())
    assert process.stop(timeout=30) == -signal.SIGTERM
    _wait(lambda: not pid_alive(grandchild), "the grandchild to be killed with the group", timeout=30)


def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open(__import__('sys').argv[1], 'w').close(); time.sleep(120)", str(tmp_path / "ready")]
    process = start_process("stubborn", argv, log_dir=tmp_path)
    _wait((tmp_path / "ready").exists, "the child to ignore SIGTERM")
    began = time.monotonic()
    assert process.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - began >= 0.5
