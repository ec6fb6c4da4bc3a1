"""The command's watchdog under `kubelock run`: a small process between `kubelock run` and the
command, so that the command cannot outlive its lease even when `kubelock run` itself can no longer
act (frozen by SIGSTOP, starved of CPU, or killed).

`kubelock run` starts it with two pipes and the command line; the watchdog starts the command in a
process group of its own and then:
- reads deadlines from `kubelock run` (`deadline <t>` lines, `t` on the system-wide monotonic clock):
  the moment the lease calls itself lost (the renew deadline after the last accepted renewal, or the
  confirmed expiry) plus the grace period. `kubelock run` stops the command at that moment itself;
  if the deadline passes and no later one has come (`kubelock run` is frozen), the watchdog SIGKILLs
  the group. The renew deadline plus the grace never exceeds the TTL, so that happens before the
  lease can expire and pass to the next holder;
- on end of file (`kubelock run` died), sends the group SIGTERM and, after the grace period (but
  never after the deadline it last knew), SIGKILL;
- reports `pid <n>` once the command started, `killed` when it killed the group at a deadline, and
  `exit <code>` (negative: a signal) when the command ended; then it exits.

The command gets PR_SET_PDEATHSIG(SIGKILL): if the watchdog itself is SIGKILLed the command dies
with it (what the command started in its group is not covered; nor are processes that left it).
A watchdog frozen together with `kubelock run` (a SIGSTOP to a whole process tree or cgroup) cannot
act either: the command is then frozen too, until a SIGCONT, and its late writes are what fencing
tokens are for.

Runs from its file path with the standard library only (no kubelock import), so it starts fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the command, before exec: SIGKILL when the watchdog (its parent) dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class Watchdog:
    def __init__(self, control: int, report: int, grace: float, deadline: float) -> None:
        self.control = control
        self.report_fd = report
        self.grace = grace
        self.deadline = deadline
        self.buffer = b""

    def report(self, line: str) -> None:
        with contextlib.suppress(OSError):  # kubelock run is gone: nobody to tell
            os.write(self.report_fd, (line + "\n").encode())

    def read_control(self) -> bool:
        """Take in what `kubelock run` wrote; False on end of file."""
        try:
            data = os.read(self.control, 4096)
        except OSError:
            return False
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            word, _, value = line.decode(errors="replace").partition(" ")
            if word == "deadline":
                with contextlib.suppress(ValueError):
                    self.deadline = float(value)
        return True

    def run(self, argv: Sequence[str]) -> int:
        try:
            child = subprocess.Popen(list(argv), process_group=0, preexec_fn=_die_with_parent)
        except OSError as error:
            self.report(f"error {error.strerror or error}")
            return 127
        pgid = child.pid
        self.report(f"pid {pgid}")
        exited = os.pidfd_open(child.pid)
        orphaned = False
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                _signal_group(pgid, signal.SIGKILL)
                self.report("killed")
                break
            watched = [exited] if orphaned else [exited, self.control]
            ready, _, _ = select.select(watched, [], [], None if left == math.inf else left)
            if exited in ready:
                break
            if self.control in ready and not self.read_control():
                # kubelock run is gone: stop the command as it would have, within what is left.
                orphaned = True
                _signal_group(pgid, signal.SIGTERM)
                self.deadline = min(self.deadline, time.monotonic() + self.grace)
        code = child.wait()
        self.report(f"exit {code}")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # watchdog.py CONTROL_FD REPORT_FD GRACE DEADLINE -- CMD [ARGS...]
    if len(args) < 6 or args[4] != "--":
        print("usage: watchdog.py CONTROL_FD REPORT_FD GRACE DEADLINE -- CMD [ARGS...]", file=sys.stderr)
        return 2
    control, report, grace, deadline = int(args[0]), int(args[1]), float(args[2]), float(args[3])
    # No signal is ignored here: the command would inherit that. The watchdog runs in a process group of
    # its own, so a terminal's signals reach kubelock run, which passes them on to the command's group.
    return Watchdog(control, report, grace, deadline).run(args[5:])


if __name__ == "__main__":
    sys.exit(main())
