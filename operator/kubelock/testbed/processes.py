"""Child processes that never outlive the test run, and waiting for them with useful errors.

Every child runs in its own process group, so that a Ctrl-C in the terminal reaches only the Python
process, which then stops the children in the right order (a simultaneous SIGINT would kill etcd
under a still running apiserver). Children also get ``PR_SET_PDEATHSIG=SIGKILL``: if the Python
process is SIGKILLed (OOM killer, CI timeout) the kernel kills them too, so nothing is left behind
holding ports. The death signal is tied to the *thread* that started the child, so start control
planes from a thread that lives as long as they do (pytest fixtures and ``__main__`` use the main one).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TAIL_LINES = 30
STOP_TIMEOUT = 10.0

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child must not load libraries between fork and exec.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class ProcessError(RuntimeError):
    """A child process failed to start, exited early, or did not become ready in time."""


@dataclass
class ManagedProcess:
    """A started child process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the process log, for error messages."""
        return tail_file(self.log_path, lines) if self.log_path else "(output not captured)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code.

        The process group is signalled only while its leader is not yet reaped: a reaped child's pid,
        which is its group's id, is free for the kernel to give to a new process (soon, where
        pid_max is 32 768), such as another test bed's kube-apiserver, a session leader of its own.
        """
        if self.popen.poll() is not None:
            # Reaped already (by alive(), maybe long ago): its group id may name another process now.
            return self.popen.returncode
        _signal_group(self.pid, signal.SIGTERM)
        if not _exits_within(self.pid, timeout):
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, self.pid, timeout)
        # Anything the child forked itself is still in its group: leave nothing behind. The leader is
        # at most a zombie here, so its pid still names its group and nobody else's.
        _signal_group(self.pid, signal.SIGKILL)
        self.popen.wait()
        return self.popen.returncode


def start_process(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_dir: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Starts ``argv`` with stdout and stderr in ``<log_dir>/<name>.log`` (the log is truncated).

    With ``log_dir=None`` the output goes to this process's own stdout/stderr.
    """
    log_path = None if log_dir is None else log_dir / f"{name}.log"
    parent = os.getpid()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with _output(log_path) as output:
        try:
            popen = subprocess.Popen(
                [os.fspath(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    log.debug("started %s (pid %d): %s", name, popen.pid, " ".join(os.fspath(a) for a in argv))
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


@contextlib.contextmanager
def _output(log_path: Path | None) -> Iterator[int | None]:
    # The child keeps its own copy of the descriptor; ours is closed right after the fork.
    if log_path is None:
        yield None
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def _die_with_parent(parent: int) -> None:
    # Runs in the child between fork and exec: only async-signal-safe work here.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect; then nobody would ever signal us.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _exits_within(pid: int, timeout: float) -> bool:
    """Waits up to ``timeout`` s for the child ``pid`` to exit, without reaping it (``WNOWAIT``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # reaped meanwhile after all
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Polls ``check`` until it returns true.

    An exception from ``check`` counts as "not yet" (a refused connection is how a starting server
    answers); the last one is quoted if time runs out. If ``process`` exits meanwhile, fails at once
    instead of waiting for the timeout. Errors quote the last lines of the process log.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    delay = interval
    while True:
        if process is not None and not process.alive():
            raise ProcessError(
                f"{process.name} exited with code {process.popen.returncode} while waiting for {what}"
                f"{_log_excerpt(process)}"
            )
        try:
            if check():
                return
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            cause = f" (last error: {last_error!r})" if last_error else ""
            raise ProcessError(f"timed out after {timeout:.0f} s waiting for {what}{cause}{_log_excerpt(process)}")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 1.0)


def _log_excerpt(process: ManagedProcess | None) -> str:
    if process is None:
        return ""
    return f"\n--- last {TAIL_LINES} lines of {process.log_path or process.name} ---\n{process.tail()}"


def tail_file(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a possibly large file (only its end is read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (see :func:`free_ports`)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    The ports are released before the caller's servers bind them; another process could take one in
    between, but the kernel hands out ephemeral ports spread over a wide range, so this is very
    unlikely. All are held open together so that the same port is never returned twice.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a reaper-less PID 1 may leave zombies around)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    # The state follows the parenthesised command name, which may itself contain spaces or ')'.
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (Linux /proc only; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_path.parent.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found
