"""`kubelock run URI [URI...] -- CMD ARGS`: run a command while holding a lock, and never let it
outlive it.

The command starts only once the lock is held (all of its resources, for several: one claim), in
its own process group, with the lock in its environment (`ENV_*` below). Several resources are one
lease: losing any of them is losing it. While it runs the lease is renewed; when the lease is lost (it expired,
was broken or revoked, the holder pod ended, the claim was deleted) or no renewal was accepted
within the renew deadline, the group gets SIGTERM and, after the grace period, SIGKILL, and
`kubelock run` exits LOST. A revocation request (`kubelock revoke --request`, or preemption) is
passed on to the group as SIGTERM at once; what is left of the group when the request's deadline is
`REVOCATION_MARGIN` away gets SIGKILL, so the command is gone before the operator breaks the lock.
SIGTERM, SIGINT and SIGHUP sent to `kubelock run` are passed on to the group; once the command has
ended the lock is released and `kubelock run` exits with the command's code (128+N for a death by
signal N). What the command left running when it ended (a background job, a grandchild that left
its process group or session) is stopped the same way, SIGTERM and after the grace period SIGKILL,
before the lock is released. The command's stdout and stderr are its own: the JSON result
(`-o json`) is printed on stdout only after the command ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubelock.cli import signals
from kubelock.cli.exitcodes import ExitCode
from kubelock.sdk.errors import Expired, InvalidInput, LockError
from kubelock.sdk.model import ClaimInfo, RevocationInfo
from kubelock.sdk.renewal import default_renew_deadline, validate_renew_deadline

ENV_TOKEN = "KUBELOCK_FENCING_TOKEN"  # one resource only
ENV_RESOURCE = "KUBELOCK_RESOURCE"  # one resource only
ENV_TOKENS = "KUBELOCK_FENCING_TOKENS"  # always: a JSON object {resource: token}
ENV_CLAIM = "KUBELOCK_CLAIM"
ENV_HOLDER = "KUBELOCK_LOCK_HOLDER"
ENV_NAMESPACE = "KUBELOCK_LOCK_NAMESPACE"
ENVIRONMENT = (ENV_TOKEN, ENV_RESOURCE, ENV_TOKENS, ENV_CLAIM, ENV_HOLDER, ENV_NAMESPACE)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
OPERATOR_DEFAULT_TTL = 1800  # the lease when --ttl is not given (the operator's documented default)
MAX_DEFAULT_GRACE = 10.0
# How long before a revocation request's deadline a command that ignored the SIGTERM is killed: the
# operator breaks the lock at the deadline by its clock (clocks are assumed in sync to well within it).
REVOCATION_MARGIN = 1.0
WATCHDOG = Path(__file__).with_name("watchdog.py")
FEED_INTERVAL = 0.2  # how often the watchdog's deadline is brought up to date (it moves with each renewal)


class Losable(Protocol):
    """What supervision reads of a lease (an AsyncLease): set when lost, and why; set when asked to
    give the lock back, and by whom and when."""

    lost: asyncio.Event
    error: LockError | None
    revocation_seen: asyncio.Event

    @property
    def revocation_requested(self) -> RevocationInfo | None: ...

    def loss_at(self) -> float:
        """When the lease calls itself lost unless renewed meanwhile (event loop time)."""
        ...

    def cluster_now(self) -> float:
        """The latest the cluster's clock can read now (seconds since the epoch)."""
        ...


@dataclass(frozen=True)
class Timing:
    ttl: float  # the lease asked for (or the operator's default)
    renew_deadline: float
    grace: float


def timing(ttl: int | None, renew_deadline: float | None, grace: float | None) -> Timing:
    """The renew deadline and grace period of `kubelock run`, defaulted and checked.

    The renew deadline defaults to two thirds of the TTL. The grace period defaults to half of what
    the TTL leaves after the renew deadline (at most 10 s), and renew deadline plus grace may not
    exceed the TTL: a command cut off from the API server is then killed before its lease can pass
    to another holder."""
    lease = float(ttl if ttl is not None else OPERATOR_DEFAULT_TTL)
    deadline = validate_renew_deadline(renew_deadline, lease)
    if deadline is None:
        deadline = default_renew_deadline(lease)
    if grace is None:
        grace = min(MAX_DEFAULT_GRACE, (lease - deadline) / 2)
    elif grace < 0:
        raise InvalidInput(f"--grace must be 0 or more seconds, not {grace:g}")
    elif deadline + grace > lease:
        raise InvalidInput(
            f"--renew-deadline ({deadline:g}s) plus --grace ({grace:g}s) must not exceed the TTL ({lease:g}s): "
            "the command could outlive its lease"
        )
    return Timing(lease, deadline, grace)


def command_of(argv: Sequence[str] | None) -> list[str]:
    """The command after `--`; `None` means there was no `--`."""
    if argv is None:
        raise InvalidInput("the command goes after `--`: kubelock run URI [URI...] -- CMD [ARGS...]")
    if not argv:
        raise InvalidInput("no command after `--`: kubelock run URI [URI...] -- CMD [ARGS...]")
    return list(argv)


def child_environment(claim: ClaimInfo, base: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: `base` with the lock. `KUBELOCK_FENCING_TOKENS` is always set; the
    single-resource `KUBELOCK_FENCING_TOKEN` and `KUBELOCK_RESOURCE` only for one resource (for
    several they are removed, also when inherited from an enclosing `kubelock run`)."""
    env = {k: v for k, v in base.items() if k not in (ENV_TOKEN, ENV_RESOURCE)}
    env.update({
        ENV_TOKENS: json.dumps(claim.tokens, sort_keys=True, ensure_ascii=False),
        ENV_CLAIM: claim.name,
        ENV_HOLDER: claim.holder,
        ENV_NAMESPACE: claim.namespace,
    })
    if not claim.several:
        env[ENV_TOKEN] = "" if claim.fencing_token is None else str(claim.fencing_token)
        env[ENV_RESOURCE] = claim.resource
    return env


def exit_code_of(returncode: int) -> int:
    """The shell's convention: a death by signal N is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class Outcome:
    returncode: int  # as asyncio reports it: negative for a death by signal
    lost: LockError | None  # the loss that ended the command, if one did
    forwarded: tuple[int, ...]  # signals passed on to the command
    killed: bool  # SIGKILL was needed after the grace period (or at a revocation's deadline)
    revocation: RevocationInfo | None = None  # the revocation request passed on to the command
    left_behind: int = 0  # processes the command left running when it ended (stopped by its watchdog)

    @property
    def exit_code(self) -> int:
        return ExitCode.LOST if self.lost is not None else exit_code_of(self.returncode)

    @property
    def ended_by(self) -> str:
        if self.lost is not None:
            return "LockLost"
        if self.revocation is not None:
            return "RevocationRequested"
        return "Signal" if self.forwarded else "CommandExited"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class WatchedCommand:
    """The command, started under its watchdog (`kubelock.cli.watchdog`): its process group, its
    end, and the deadline the watchdog enforces should `kubelock run` be unable to (frozen, killed)."""

    def __init__(self, process: asyncio.subprocess.Process, control: int, reports: asyncio.StreamReader) -> None:
        self.process = process
        self.control = control
        self.reports = reports
        self.pgid = 0
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.killed_at_deadline = False
        self.left_behind = 0
        self._deadline = math.inf
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, argv: Sequence[str], env: Mapping[str, str], grace: float, deadline: float) -> WatchedCommand:
        control_r, control_w = os.pipe()
        report_r, report_w = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", str(WATCHDOG), str(control_r), str(report_w), repr(grace), repr(deadline),
                "--", *argv, env=dict(env), process_group=0, pass_fds=(control_r, report_w),
            )
        finally:
            os.close(control_r)
            os.close(report_w)
        loop = asyncio.get_running_loop()
        reports = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reports), os.fdopen(report_r, "rb", 0))
        command = cls(process, control_w, reports)
        command._deadline = deadline
        first = (await reports.readline()).decode().split(" ", 1)
        if first[0] != "pid":
            await command.close()
            why = first[1].strip() if len(first) > 1 else "the watchdog did not start it"
            raise InvalidInput(f"cannot run {argv[0]}: {why}")
        command.pgid = int(first[1])
        command._reader = asyncio.create_task(command._read())
        return command

    async def _read(self) -> None:
        while line := (await self.reports.readline()).decode():
            word, _, value = line.strip().partition(" ")
            if word == "killed":
                self.killed_at_deadline = True
            elif word == "left":
                self.left_behind = int(value)
            elif word == "exit" and not self.exited.done():
                self.exited.set_result(int(value))
        if not self.exited.done():  # the watchdog died: the command died with it (PR_SET_PDEATHSIG)
            self.exited.set_result(-signal.SIGKILL)

    def set_deadline(self, deadline: float) -> None:
        """When the watchdog kills the group unless told a later moment (monotonic clock)."""
        if abs(deadline - self._deadline) < 0.001:
            return
        self._deadline = deadline
        with contextlib.suppress(OSError):  # the watchdog is gone; so is the command
            os.write(self.control, f"deadline {deadline!r}\n".encode())

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.control)
        await self.process.wait()
        if self._reader is not None:
            await self._reader


async def _feed(lease: Losable, command: WatchedCommand, grace: float) -> None:
    """Keep the watchdog's deadline at the moment the lease calls itself lost, plus the grace."""
    while True:
        command.set_deadline(lease.loss_at() + grace)
        await asyncio.sleep(FEED_INTERVAL)


async def supervise(lease: Losable, argv: Sequence[str], env: Mapping[str, str], grace: float) -> Outcome:
    """Run the command in its own process group until it ends or the lease is lost."""
    loop = asyncio.get_running_loop()
    forwarded: list[int] = []
    pgid = 0

    def forward(signum: int) -> None:
        forwarded.append(signum)
        if pgid:
            _signal_group(pgid, signum)

    # The signals are taken over before the command starts: a SIGTERM that came while it was being
    # started (it may run, and print, before its pid is read) is the command's, passed on once its
    # group is known, not a stop of `kubelock run` that would report a withdrawn acquire.
    for s in FORWARDED:
        loop.add_signal_handler(s, forward, s)
    try:
        command = await WatchedCommand.start(argv, env, grace, lease.loss_at() + grace)
    except BaseException:
        signals.restore(loop, FORWARDED)
        raise
    pgid = command.pgid
    for signum in forwarded:
        _signal_group(pgid, signum)
    exited = command.exited
    lost = asyncio.ensure_future(lease.lost.wait())
    honour = asyncio.ensure_future(_honour_revocation(lease, pgid, exited))
    feed = asyncio.ensure_future(_feed(lease, command, grace))
    try:
        either: set[asyncio.Future[Any]] = {exited, lost}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        stopped = not exited.done()  # the loss came first
        if stopped:
            # The watchdog's deadline becomes the end of this grace: what the command left running is
            # then killed with it, not a grace later (a break's loss comes before the lease's end).
            feed.cancel()
            command.set_deadline(min(lease.loss_at(), loop.time()) + grace)
        killed = await _stop(pgid, exited, grace) if stopped else False
        returncode = await exited
        killed = killed or await honour or command.killed_at_deadline
        revocation = lease.revocation_requested if lease.revocation_seen.is_set() else None
        lost_with = lease.error if stopped else None
        if command.killed_at_deadline:  # kubelock run could not act in time: the lease is lost or about to be
            lost_with = lease.error or Expired(
                "kubelock run could not renew the lease in time (stopped or starved); its watchdog killed the "
                "command at the renew deadline plus the grace"
            )
        return Outcome(returncode, lost_with, tuple(forwarded), killed, revocation, command.left_behind)
    finally:
        for task in (lost, honour, feed):
            task.cancel()
        if not exited.done():  # cancelled: the command must not outlive kubelock run
            _signal_group(pgid, signal.SIGKILL)
            await asyncio.shield(exited)
        await asyncio.shield(command.close())
        signals.restore(loop, FORWARDED)


async def _honour_revocation(lease: Losable, pgid: int, exited: asyncio.Future[int]) -> bool:
    """Pass a revocation request on to the command: SIGTERM to the group at once, SIGKILL to what is
    left of it `REVOCATION_MARGIN` before the request's deadline. True if SIGKILL was needed."""
    seen = asyncio.ensure_future(lease.revocation_seen.wait())
    either: set[asyncio.Future[Any]] = {seen, exited}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        seen.cancel()
    revocation = lease.revocation_requested
    if exited.done() or revocation is None:
        return False
    _signal_group(pgid, signal.SIGTERM)
    left = revocation.deadline.timestamp() - lease.cluster_now() - REVOCATION_MARGIN
    done, _ = await asyncio.wait({exited}, timeout=max(0.0, left))
    if done:
        return False
    _signal_group(pgid, signal.SIGKILL)
    return True


async def _stop(pgid: int, exited: asyncio.Future[int], grace: float) -> bool:
    """SIGTERM to the group, SIGKILL to what is left of it after `grace`; True if SIGKILL was needed."""
    _signal_group(pgid, signal.SIGTERM)
    done, _ = await asyncio.wait({exited}, timeout=grace)
    _signal_group(pgid, signal.SIGKILL)  # also whatever the command left running in its group
    await exited
    return not done
