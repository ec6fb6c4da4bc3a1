"""Which OS process made a claim, and whether that process is still alive here.

A claim's name comes from holder + resource, so two processes of one instance (every process of a
pod without `KUBELOCK_INSTANCE`, or two processes given the same one) meet on one claim: the second
create answers 409 and the SDK would adopt the first's claim and fencing token, and both would hold
the lock at once. The SDK therefore writes a mark of the creating process on the claim, in the
create itself (annotation `kubelock.dev/process`):

    <boot id>/<pid namespace>/<pid>/<start time>

the kernel's boot id, the pid namespace's inode (a container has its own), the pid, and the process's
start time in clock ticks since boot (field 22 of /proc/<pid>/stat, which tells a reused pid apart).
On adoption the SDK refuses the claim when that mark names another process that is alive here: same
boot, same pid namespace, the pid exists with the same start time, and it is not this process. A
mark it cannot check (no /proc, another machine or container, an older SDK that wrote none, a
malformed value) adopts as before: a restarted process or container, and the CLI's one-shot
processes (`kubelock acquire` then `kubelock release`), take their claims back as they always did.
Another container of the same pod, which this check cannot see either, is another instance by
default and so never meets this container's claims (`kubelock.sdk.container`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from kubelock.api.constants import PROCESS_ANNOTATION

__all__ = ["PROCESS_ANNOTATION", "ProcessMark", "current", "live_other"]

_DIGITS = re.compile(r"[0-9]{1,20}")

# Reads /proc: the text of a file or the target of a symlink, None when it cannot (tests pass fakes).
ReadText = Callable[[str], str | None]
ReadLink = Callable[[str], str | None]


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def read_link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcessMark:
    boot_id: str
    pid_namespace: str  # the inode of /proc/<pid>/ns/pid
    pid: int
    start_time: int  # clock ticks after boot

    def __str__(self) -> str:
        return f"{self.boot_id}/{self.pid_namespace}/{self.pid}/{self.start_time}"

    @classmethod
    def parse(cls, value: str | None) -> ProcessMark | None:
        """The mark in an annotation value, or None if it is missing or not one. The annotation is
        anyone's to write who may change the claim, so numbers are ASCII digits only: `str.isdigit`
        also accepts characters `int` refuses (`²`), which made the SDK fail on such a claim."""
        parts = (value or "").split("/")
        if len(parts) != 4 or not all(parts) or not _DIGITS.fullmatch(parts[2]) or not _DIGITS.fullmatch(parts[3]):
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


def start_time(stat: str | None) -> int | None:
    """Field 22 of /proc/<pid>/stat. The command name (field 2) may hold spaces and parentheses, so
    the fields are counted after its last ')'."""
    if not stat or ")" not in stat:
        return None
    fields = stat[stat.rindex(")") + 1:].split()
    # fields[0] is field 3 (state): field 22 is fields[19].
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def pid_namespace(link: str | None) -> str | None:
    """`pid:[4026531836]` -> `4026531836`."""
    if not link or not link.startswith("pid:[") or not link.endswith("]"):
        return None
    inode = link[len("pid:["):-1]
    return inode if inode.isdigit() else None


def mark_of(pid: int, text: ReadText = read_text, link: ReadLink = read_link) -> ProcessMark | None:
    """The mark of process `pid` as seen from here, or None where /proc does not tell (not Linux)."""
    boot = (text("/proc/sys/kernel/random/boot_id") or "").strip()
    namespace = pid_namespace(link(f"/proc/{pid}/ns/pid"))
    started = start_time(text(f"/proc/{pid}/stat"))
    if not boot or "/" in boot or namespace is None or started is None:
        return None
    return ProcessMark(boot, namespace, pid, started)


def current(text: ReadText = read_text, link: ReadLink = read_link) -> ProcessMark | None:
    """This process's mark (read each time: after a fork the child is another process)."""
    return mark_of(os.getpid(), text, link)


def live_other(recorded: str | None, text: ReadText = read_text, link: ReadLink = read_link,
               *, own_pid: int | None = None) -> ProcessMark | None:
    """The recorded process if it is another process alive here, else None (gone, this very
    process, or not checkable from here: adopt)."""
    mark = ProcessMark.parse(recorded)
    own = mark_of(os.getpid() if own_pid is None else own_pid, text, link)
    if mark is None or own is None or mark == own:
        return None
    if (mark.boot_id, mark.pid_namespace) != (own.boot_id, own.pid_namespace):
        return None  # another machine, another boot, or another container: cannot tell
    # The pid's process now (gone, or a reused pid with another start time). Its stat is readable
    # whoever runs it; its ns link is not (another user's process), and it is ours in any case.
    return mark if start_time(text(f"/proc/{mark.pid}/stat")) == mark.start_time else None
