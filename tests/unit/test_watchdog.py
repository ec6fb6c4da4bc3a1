"""The watchdog under `kubelock run`: the command dies at the last deadline it was told even when
`kubelock run` is frozen (SIGSTOP), and is stopped when `kubelock run` is killed. Real processes,
the monotonic clock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kubelock.cli import run as runner
from kubelock.sdk.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]

# A stand-in for `kubelock run`: supervise CHILD under a lease that calls itself lost LOSS seconds
# from now and is never renewed (nor, while frozen, looked after).
HOLDER = """
import asyncio, math, os, sys, time
from kubelock.cli import run as runner

class Lease:
    def __init__(self, loss):
        self.lost = asyncio.Event()
        self.error = None
        self.revocation_seen = asyncio.Event()
        self.revocation_requested = None
        self.loss = loss

    def loss_at(self):
        return self.loss

async def main():
    loss = asyncio.get_running_loop().time() + float(sys.argv[1])
    child = [sys.executable, "-c", sys.argv[2], sys.argv[3]]
    await runner.supervise(Lease(loss), child, os.environ, float(sys.argv[4]))

asyncio.run(main())
"""

# Writes its pid, then ignores SIGTERM (only SIGKILL ends it) and sleeps.
CHILD = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def holder(tmp_path: Path, loss: float, grace: float) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    marker = tmp_path / "pid"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(loss), CHILD, str(marker), str(grace)], env=env)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.02)
        yield process, int(marker.read_text())
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


def wait_dead(pid: int, within: float) -> float:
    start = time.monotonic()
    while alive(pid):
        assert time.monotonic() - start < within, f"process {pid} still alive after {within}s"
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_frozen_kubelock_run_cannot_keep_its_command_past_the_deadline(tmp_path: Path) -> None:
    """kubelock run SIGSTOPped with its lease about to be lost: the watchdog kills the command at
    loss + grace, although nothing runs in kubelock run any more."""
    # A loss 5 s away: on a loaded machine the command's own start can take longer than 1.5 s, and
    # the watchdog would kill it before the test could freeze anything.
    loss, grace = 5.0, 0.5
    with holder(tmp_path, loss=loss, grace=grace) as (process, pid):
        process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_dead(pid, within=30)
        took = time.monotonic() - frozen_at
        # killed at loss + grace (the command started before the freeze), with a loaded machine's margin
        assert took < loss + grace + 2.0


def test_a_killed_kubelock_run_takes_its_command_down(tmp_path: Path) -> None:
    """SIGKILL of kubelock run: the watchdog sees its pipe close, sends SIGTERM (ignored here), then
    SIGKILL after the grace."""
    with holder(tmp_path, loss=60, grace=0.5) as (process, pid):
        process.kill()
        took = wait_dead(pid, within=10)
        assert 0.4 <= took < 3.0


def test_an_unrunnable_command_is_refused_clearly() -> None:
    async def scenario() -> None:
        await runner.WatchedCommand.start(["/nonexistent/command"], os.environ, 1.0, float("inf"))

    with pytest.raises(InvalidInput, match="cannot run /nonexistent/command"):
        asyncio.run(scenario())
