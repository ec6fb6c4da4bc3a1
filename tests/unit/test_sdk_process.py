"""Which process made a claim, and whether it is another live process here (kubelock.sdk.process),
checked against a fake /proc."""

from __future__ import annotations

import os

from kubelock.cli.exitcodes import ExitCode, for_error
from kubelock.sdk import process
from kubelock.sdk.errors import HeldByAnotherProcess
from kubelock.sdk.process import ProcessMark

BOOT = "3f1c9b52-0d0e-4c7a-9d51-6a3b5e2f8c11"
NS = "pid:[4026531836]"


def stat(pid: int, start: int, comm: str = "python3") -> str:
    # Fields 3..21 before the start time (field 22), then a few more.
    rest = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 5
    return f"{pid} ({comm}) " + " ".join(rest) + "\n"


class FakeProc:
    """A /proc with the given processes: pid -> (start time, pid namespace link)."""

    def __init__(self, procs: dict[int, tuple[int, str]], boot: str = BOOT) -> None:
        self.procs = procs
        self.boot = boot

    def text(self, path: str) -> str | None:
        if path == "/proc/sys/kernel/random/boot_id":
            return self.boot + "\n"
        parts = path.split("/")  # ['', 'proc', pid, 'stat']
        if len(parts) == 4 and parts[3] == "stat" and int(parts[2]) in self.procs:
            return stat(int(parts[2]), self.procs[int(parts[2])][0])
        return None

    def link(self, path: str) -> str | None:
        parts = path.split("/")  # ['', 'proc', pid, 'ns', 'pid']
        if int(parts[2]) in self.procs:
            return self.procs[int(parts[2])][1]
        return None

    def live_other(self, recorded: str | None, own_pid: int) -> ProcessMark | None:
        return process.live_other(recorded, self.text, self.link, own_pid=own_pid)


def mark(pid: int, start: int, boot: str = BOOT, ns: str = "4026531836") -> str:
    return f"{boot}/{ns}/{pid}/{start}"


def test_the_mark_round_trips_and_names_the_process() -> None:
    proc = FakeProc({100: (5000, NS)})
    found = process.mark_of(100, proc.text, proc.link)
    assert found == ProcessMark(BOOT, "4026531836", 100, 5000)
    assert ProcessMark.parse(str(found)) == found
    assert len(str(found)) < 128


def test_start_time_is_counted_after_the_last_parenthesis() -> None:
    assert process.start_time(stat(7, 123, comm="a) (b c")) == 123
    assert process.start_time("7 (x) S 1 2") is None
    assert process.start_time(None) is None


def test_another_live_process_of_this_machine_and_container_is_refused() -> None:
    proc = FakeProc({100: (5000, NS), 200: (6000, NS)})
    assert proc.live_other(mark(100, 5000), own_pid=200) == ProcessMark(BOOT, "4026531836", 100, 5000)


def test_this_very_process_adopts_its_own_claim() -> None:
    proc = FakeProc({100: (5000, NS)})
    assert proc.live_other(mark(100, 5000), own_pid=100) is None


def test_a_process_that_ended_is_no_obstacle() -> None:
    proc = FakeProc({200: (6000, NS)})
    assert proc.live_other(mark(100, 5000), own_pid=200) is None


def test_a_reused_pid_is_another_process() -> None:
    proc = FakeProc({100: (7777, NS), 200: (6000, NS)})
    assert proc.live_other(mark(100, 5000), own_pid=200) is None


def test_another_boot_or_machine_cannot_be_told_and_adopts() -> None:
    proc = FakeProc({100: (5000, NS), 200: (6000, NS)})
    assert proc.live_other(mark(100, 5000, boot="0" * 8 + "-other"), own_pid=200) is None


def test_another_container_cannot_be_told_and_adopts() -> None:
    # A restarted container: same kernel, a new pid namespace in which pid 100 may be anyone.
    proc = FakeProc({100: (5000, NS), 200: (6000, NS)})
    assert proc.live_other(mark(100, 5000, ns="4026532999"), own_pid=200) is None


def test_no_mark_a_malformed_one_or_no_proc_adopts() -> None:
    proc = FakeProc({100: (5000, NS), 200: (6000, NS)})
    odd_digits = (f"{BOOT}/4026531836/\u00b2/5000", f"{BOOT}/4026531836/100/5\u00b3", f"{BOOT}/4026531836/-1/5000")
    for recorded in (None, "", "garbage", f"{BOOT}/4026531836/x/5000", f"{BOOT}//100/5000", *odd_digits):
        assert proc.live_other(recorded, own_pid=200) is None
    nothing = FakeProc({})
    assert nothing.live_other(mark(100, 5000), own_pid=200) is None


def test_the_real_proc_knows_this_process_and_its_parent() -> None:
    own = process.current()
    if own is None:  # not Linux
        return
    assert own.pid == os.getpid()
    assert process.live_other(str(own)) is None
    parent = process.mark_of(os.getppid())
    if parent is not None and parent.pid_namespace == own.pid_namespace:
        assert process.live_other(str(parent)) == parent


def test_the_refusal_is_a_busy_exit_code() -> None:
    error = HeldByAnotherProcess("another live process (pid 100) of holder h holds this claim", holder="h")
    assert error.reason == "HeldByAnotherProcess"
    assert for_error(error) is ExitCode.HELD
