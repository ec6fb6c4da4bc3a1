"""`kubelock run`: its arguments and timing checked before any request, its JSON result, and the
supervision of a real child process (stopped with SIGTERM, then SIGKILL, when the lease is lost)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubelock.cli import output
from kubelock.cli import run as runner
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import split_command, stopped_after_loss
from kubelock.sdk.errors import Expired, InvalidInput, LockError
from kubelock.sdk.model import ClaimInfo, RevocationInfo


def test_timing_defaults() -> None:
    assert runner.timing(60, None, None) == runner.Timing(60.0, 40.0, 10.0)
    assert runner.timing(6, None, None) == runner.Timing(6.0, 4.0, 1.0)  # half of what the deadline leaves
    assert runner.timing(None, None, None) == runner.Timing(1800.0, 1200.0, 10.0)  # the operator's default TTL
    assert runner.timing(10, 5, 5) == runner.Timing(10.0, 5.0, 5.0)  # may use up the TTL exactly


@pytest.mark.parametrize(("ttl", "deadline", "grace", "words"), [
    (10, 10, None, "shorter than the TTL"),
    (10, 12, None, "shorter than the TTL"),
    (None, 1800, None, "shorter than the TTL"),
    (10, 0, None, "more than 0"),
    (10, None, -1, "--grace must be 0 or more"),
    (10, 8, 3, "must not exceed the TTL"),
])
def test_timing_refuses(ttl: int | None, deadline: float | None, grace: float | None, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        runner.timing(ttl, deadline, grace)


def test_the_command_is_what_follows_the_first_double_dash() -> None:
    assert split_command(["run", "x://y", "--wait", "--", "sh", "-c", "a -- b", "--ttl"]) == (
        ["run", "x://y", "--wait"], ["sh", "-c", "a -- b", "--ttl"])
    assert split_command(["run", "x://y"]) == (["run", "x://y"], None)
    assert runner.command_of(["true"]) == ["true"]
    with pytest.raises(InvalidInput, match="goes after `--`"):
        runner.command_of(None)
    with pytest.raises(InvalidInput, match="no command"):
        runner.command_of([])


def test_exit_codes_follow_the_shell() -> None:
    assert runner.exit_code_of(0) == 0
    assert runner.exit_code_of(3) == 3
    assert runner.exit_code_of(-signal.SIGTERM) == 143
    assert runner.exit_code_of(-signal.SIGKILL) == 137
    lost = runner.Outcome(-signal.SIGTERM, Expired("gone"), (), killed=False)
    assert (lost.exit_code, lost.ended_by) == (ExitCode.LOST, "LockLost")
    signalled = runner.Outcome(-signal.SIGINT, None, (signal.SIGINT,), killed=False)
    assert (signalled.exit_code, signalled.ended_by) == (130, "Signal")


def held_claim() -> ClaimInfo:
    return ClaimInfo.from_body({
        "metadata": {"name": "c1", "namespace": "agents", "uid": "u", "resourceVersion": "5"},
        "spec": {"resource": "deploy://x", "holder": "agent-a", "wait": False},
        "status": {"phase": "Held", "reason": "Granted", "holder": "agent-a", "fencingToken": 7},
    })


def test_result_shapes() -> None:
    info = held_claim()
    done = output.ran(info, runner.Outcome(0, None, (), killed=False), released=True)
    assert done == {
        "ok": True, "resource": "deploy://x", "holder": "agent-a", "namespace": "agents", "fencingToken": 7,
        "claim": "c1", "grants": [{"resource": "deploy://x", "fencingToken": 7, "lock": ""}],
        "fencingTokens": {"deploy://x": 7}, "exitCode": 0, "signal": None, "endedBy": "CommandExited",
        "forwardedSignals": [], "killed": False, "leftBehind": 0, "released": True,
    }
    lost = output.ran(info, runner.Outcome(-signal.SIGKILL, Expired("gone"), (), killed=True), released=False)
    assert (lost["ok"], lost["exitCode"], lost["signal"], lost["endedBy"]) == (False, 137, "SIGKILL", "LockLost")
    assert (lost["error"], lost["lost"], lost["message"], lost["killed"]) == ("LeaseExpired", True, "gone", True)


class StandInLease:
    """What `supervise` reads of a lease: the `lost` event and the `error` (set here by the test)."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.error: LockError | None = None
        self.revocation_seen = asyncio.Event()
        self.revocation_requested: RevocationInfo | None = None
        self.deadline = math.inf  # loss_at(): never, unless a test says so

    def loss_at(self) -> float:
        return self.deadline

    def cluster_now(self) -> float:
        return time.time()

    def lose(self) -> None:
        self.error = Expired("the lease ran out")
        self.lost.set()

    def ask(self, grace: float) -> None:
        now = datetime.now(UTC)
        self.revocation_requested = RevocationInfo(now, "user:admin", int(grace), now + timedelta(seconds=grace), "why")
        self.revocation_seen.set()


CHILD = """
import os, pathlib, signal, sys, time
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
marker = pathlib.Path(sys.argv[1])
marker.with_suffix(".tmp").write_text(str(os.getpgrp()))
marker.with_suffix(".tmp").rename(marker)  # whole: the test signals the group as soon as it exists
time.sleep(60)
"""


def supervise(
    tmp_path: Path, mode: str, grace: float, revoke_grace: float | None = None
) -> tuple[runner.Outcome, int, float]:
    """Run CHILD under supervision, then lose the lease (or, with `revoke_grace`, ask for it back)."""
    marker = tmp_path / "pgid"

    async def scenario() -> tuple[runner.Outcome, float]:
        lease = StandInLease()
        argv = [sys.executable, "-c", CHILD, str(marker), mode]
        task = asyncio.create_task(runner.supervise(lease, argv, os.environ, grace))
        while not marker.exists():  # noqa: ASYNC110 (the child process writes it: nothing to await)
            await asyncio.sleep(0.02)
        lost_at = time.monotonic()
        if revoke_grace is not None:
            lease.ask(revoke_grace)
        else:
            lease.lose()
        outcome = await task
        return outcome, time.monotonic() - lost_at

    outcome, took = asyncio.run(scenario())
    return outcome, int(marker.read_text()), took


def test_a_lost_lease_stops_the_command_with_sigterm(tmp_path: Path) -> None:
    outcome, pgid, took = supervise(tmp_path, "plain", grace=5)
    assert outcome.returncode == -signal.SIGTERM and not outcome.killed and outcome.exit_code == ExitCode.LOST
    assert pgid != os.getpgrp()  # its own process group
    assert took < 5


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    outcome, _, took = supervise(tmp_path, "ignore", grace=0.5)
    assert outcome.returncode == -signal.SIGKILL and outcome.killed
    assert took >= 0.5


def test_a_revocation_request_reaches_the_command_as_sigterm(tmp_path: Path) -> None:
    outcome, _, took = supervise(tmp_path, "plain", grace=5, revoke_grace=30)
    assert outcome.returncode == -signal.SIGTERM and not outcome.killed
    assert outcome.revocation is not None and outcome.lost is None
    assert (outcome.ended_by, outcome.exit_code) == ("RevocationRequested", 143)
    assert took < 5, "at once, not at the deadline"


def test_a_command_ignoring_a_revocation_is_killed_before_its_deadline(tmp_path: Path) -> None:
    """The operator breaks the lock at the deadline: the command is killed REVOCATION_MARGIN before."""
    outcome, _, took = supervise(tmp_path, "ignore", grace=30, revoke_grace=2.5)
    assert outcome.returncode == -signal.SIGKILL and outcome.killed
    assert 1.0 <= took < 2.5 - runner.REVOCATION_MARGIN + 1.0


def test_the_result_names_the_revocation() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    request = RevocationInfo(now, "user:admin", 30, now + timedelta(seconds=30), "hotfix")
    payload = output.ran(held_claim(), runner.Outcome(-signal.SIGTERM, None, (), False, request), released=True)
    assert payload["endedBy"] == "RevocationRequested" and payload["exitCode"] == 143
    assert payload["revocation"] == {"requestedBy": "user:admin", "reason": "hotfix",
                                     "deadline": "2026-01-01T00:00:30.000000Z"}


def test_the_command_keeps_the_default_signal_dispositions(tmp_path: Path) -> None:
    """Nothing between kubelock run and the command ignores a signal (ignoring is inherited by exec):
    a SIGINT passed on to the group ends a command that does not handle it."""
    marker = tmp_path / "pgid"

    async def scenario() -> runner.Outcome:
        lease = StandInLease()
        argv = [sys.executable, "-c", CHILD, str(marker), "plain"]
        task = asyncio.create_task(runner.supervise(lease, argv, os.environ, 5))
        while not marker.exists():  # noqa: ASYNC110 (the child process writes it: nothing to await)
            await asyncio.sleep(0.02)
        os.killpg(int(marker.read_text()), signal.SIGINT)
        return await asyncio.wait_for(task, 20)  # an ignored SIGINT would leave it running

    outcome = asyncio.run(scenario())
    assert outcome.returncode == -signal.SIGINT


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def leave_behind(tmp_path: Path, script: str, grace: float, lose: bool) -> tuple[runner.Outcome, int, float]:
    """Run `sh -c script` under supervision; the script starts a process meant to outlive it and
    writes its pid to $1 (whole: a temporary name renamed). With `lose`, the lease is lost once the
    pid is there; otherwise the command ends by itself. Returns the outcome, that pid and how long
    supervision took after the pid was known."""
    marker = tmp_path / "left.pid"

    async def scenario() -> tuple[runner.Outcome, float]:
        lease = StandInLease()
        task = asyncio.create_task(runner.supervise(lease, ["sh", "-c", script, "sh", str(marker)], os.environ, grace))
        while not marker.exists():  # noqa: ASYNC110 (the child process writes it: nothing to await)
            await asyncio.sleep(0.02)
        seen = time.monotonic()
        if lose:
            lease.lose()
        outcome = await asyncio.wait_for(task, 60)
        return outcome, time.monotonic() - seen

    left = 0
    try:
        outcome, took = asyncio.run(scenario())
        left = int(marker.read_text())
        return outcome, left, took
    finally:
        if left and running(left):  # the defect under test: do not leave it behind the test either
            os.kill(left, signal.SIGKILL)


# The pid of a background job, written whole; the job's output goes elsewhere (a pipe it kept open
# would hold up whoever reads the command's output).
WRITE_PID = 'echo $! > "$1.tmp"; mv "$1.tmp" "$1"'


def test_a_background_job_the_command_left_is_stopped_before_the_lock_is_released(tmp_path: Path) -> None:
    """`sh -c 'sleep 300 &'` ends at once: the job it left in its group must not go on working with
    the lock's token once the lock is released (supervision returns only when it is gone)."""
    outcome, left, _ = leave_behind(tmp_path, f"sleep 300 >/dev/null 2>&1 & {WRITE_PID}; exit 3", grace=5, lose=False)
    assert not running(left)
    assert (outcome.returncode, outcome.exit_code, outcome.ended_by) == (3, 3, "CommandExited")
    assert outcome.left_behind == 1 and not outcome.killed


def test_a_grandchild_that_left_the_session_is_stopped_when_the_lease_is_lost(tmp_path: Path) -> None:
    """`setsid` takes the grandchild out of the command's process group and session: the SIGTERM and
    SIGKILL to the group miss it; the watchdog, its subreaper, still finds it."""
    # The grandchild writes its own pid once it has left: a loss before that would still find it in the group.
    grandchild = """'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 300' sh "$1" """
    script = f"setsid sh -c {grandchild} >/dev/null 2>&1 & sleep 300"
    outcome, left, took = leave_behind(tmp_path, script, grace=5, lose=True)
    assert not running(left)
    assert outcome.exit_code == ExitCode.LOST and outcome.returncode == -signal.SIGTERM
    assert outcome.left_behind == 1
    assert took < 5  # SIGTERM ended both: no wait for the grace


def test_a_double_forked_daemon_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    """A daemon (double fork, its own session, SIGTERM ignored) of a command that ended normally:
    re-parented to the watchdog, sent SIGTERM, killed after the grace."""
    script = f"(trap '' TERM; setsid sh -c 'trap \"\" TERM; sleep 300' >/dev/null 2>&1 & {WRITE_PID}) ; exit 0"
    outcome, left, took = leave_behind(tmp_path, script, grace=0.5, lose=False)
    assert not running(left)
    assert outcome.returncode == 0 and outcome.left_behind >= 1
    assert took >= 0.5


def test_what_ignores_sigterm_at_a_loss_is_gone_within_one_grace(tmp_path: Path) -> None:
    """At a loss (a break: before the lease's end) the command ignores SIGTERM and so does a
    grandchild that left its session: both are killed when the grace, counted from the loss, ends.
    (The grandchild was given a second grace, counted from the command's end: 2 x 3 s.)"""
    grandchild = """'trap "" TERM; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; while :; do sleep 0.1; done' sh "$1" """
    script = f"trap '' TERM; setsid sh -c {grandchild} >/dev/null 2>&1 & while :; do sleep 0.1; done"
    outcome, left, took = leave_behind(tmp_path, script, grace=3, lose=True)
    assert not running(left)
    assert outcome.exit_code == ExitCode.LOST and outcome.killed and outcome.left_behind >= 1
    assert 3 <= took < 5.5, took


def test_the_line_after_a_loss_repeats_neither_the_loss_nor_its_reason_when_the_lease_said_them() -> None:
    lost = Expired("no renewal of the lease on deploy://x succeeded within the renew deadline of 4s")
    said = stopped_after_loss("deploy://x", lost, runner.Outcome(-signal.SIGTERM, lost, (), killed=False), said=True)
    assert said == "the command was stopped (SIGTERM) because the lock on deploy://x was lost"
    assert lost.message not in said and "lost the lock on" not in said
    # The watchdog's kill, which the lease never reported: the reason is said here, once.
    unsaid = stopped_after_loss("deploy://x", lost, runner.Outcome(-signal.SIGKILL, lost, (), killed=True),
                                said=False)
    assert unsaid == f"lost the lock on deploy://x: {lost.message}; the command was stopped (SIGTERM, then SIGKILL)"
