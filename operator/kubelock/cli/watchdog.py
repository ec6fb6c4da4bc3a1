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
- once the command ended, stops what it left running (`sweep`): the processes still in its group
  and every other descendant, also those that left the group or the session (`setsid`, a double
  fork): the watchdog is a child subreaper (PR_SET_CHILD_SUBREAPER), so an orphan of the command is
  re-parented to it, not to init, and stays in its tree. They get SIGTERM and, after the grace period
  (never after the deadline it last knew), SIGKILL. `kubelock run` releases the lock only after
  that: nothing the command started outlives the lock;
- reports `pid <n>` once the command started, `killed` when it killed the group at a deadline,
  `left <n>` when the command left n processes running, and `exit <code>` (negative: a signal) once
  the command ended and what it left is gone; then it exits.

The command gets PR_SET_PDEATHSIG(SIGKILL): if the watchdog itself is SIGKILLed the command dies
with it (what the command started is not covered then). Not covered either: work the command hands
to a process outside its tree (a daemon, a container runtime, `systemd-run`).
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
PR_SET_CHILD_SUBREAPER = 36
SWEEP_POLL = 0.02  # how often the sweep looks whether what it signalled is gone
KILL_WAIT = 5.0  # how long the sweep goes on killing what does not die of SIGKILL at once


def _die_with_parent() -> None:
    """In the command, before exec: SIGKILL when the watchdog (its parent) dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _become_subreaper() -> None:
    """Orphans of the command (a grandchild whose parent ended) are re-parented to the watchdog."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _reap() -> None:
    """Collect the exit status of every ended child (orphans re-parented here end as zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def descendants(root: int) -> list[int]:
    """The live (not zombie) processes under `root`, read from /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc to read: the sweep reaches the command's group alone
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": the comm may hold anything
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def _signal_all(pgid: int, pids: Sequence[int], signum: int) -> None:
    _signal_group(pgid, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


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

    def sweep(self, pgid: int) -> int:
        """Stop what the command left running: SIGTERM, then SIGKILL after the grace period or at the
        deadline, whichever comes first. Returns how many processes were left."""
        _reap()
        left = descendants(os.getpid())
        if not left:
            _signal_group(pgid, signal.SIGKILL)  # in case /proc could not be read
            return 0
        self.report(f"left {len(left)}")
        _signal_all(pgid, left, signal.SIGTERM)
        until = min(time.monotonic() + self.grace, self.deadline)
        while (remaining := descendants(os.getpid())) and time.monotonic() < until:
            time.sleep(SWEEP_POLL)
            _reap()
        # What forks while being killed is found on the next look. A process in uninterruptible sleep
        # dies only when it leaves it: past KILL_WAIT it is left, rather than hold the lock for it.
        killing_until = time.monotonic() + KILL_WAIT
        while remaining and time.monotonic() < killing_until:
            _signal_all(pgid, remaining, signal.SIGKILL)
            time.sleep(SWEEP_POLL)
            _reap()
            remaining = descendants(os.getpid())
        return len(left)

    def run(self, argv: Sequence[str]) -> int:
        _become_subreaper()
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
        self.sweep(pgid)
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
