"""The exit codes of `kubelock`, `rlock`, `runlock` and `rlock-heartbeat` (one table for all)."""

from __future__ import annotations

from enum import IntEnum

from kubelock.cli.signals import Stopped
from kubelock.domain.reasons import BUSY_REASONS
from kubelock.sdk.errors import (
    Deadlock,
    Forbidden,
    HeldByAnotherProcess,
    InvalidInput,
    LockError,
    Lost,
    NotFound,
    Rejected,
    TimedOut,
    Unreachable,
)


class ExitCode(IntEnum):
    OK = 0  # done: acquired, released, renewed, listed ...
    HELD = 1  # held by another holder (try-lock), or this instance's claim is another live process's
    NOT_FOUND = 2  # no such claim or lock; nothing held to release or renew; `status -n` of no namespace
    FORBIDDEN = 3  # the API server refused this identity (RBAC, admission) or its credentials (a 401);
    # also unlock without admin rights
    INVALID_INPUT = 4  # bad URI, TTL, timeout, arguments; refused before any request
    DEADLOCK = 5  # waiting would close a wait-for cycle: release your locks and retry
    UNREACHABLE = 6  # API server (or operator) unreachable, or not configured: never a success
    TIMED_OUT = 7  # waited longer than --timeout
    LOST = 8  # the lock was held but is no more: expired or revoked
    INTERNAL = 9  # a bug in kubelock (reported with its traceback on stderr)
    HANGUP = 129  # SIGHUP (any claim being acquired was withdrawn)
    INTERRUPTED = 130  # Ctrl-C (any claim being acquired was withdrawn)
    TERMINATED = 143  # SIGTERM (any claim being acquired was withdrawn)


def for_error(error: LockError) -> ExitCode:
    if isinstance(error, Stopped):
        return ExitCode(error.exit_code)
    if isinstance(error, HeldByAnotherProcess):
        return ExitCode.HELD  # busy like a held resource: it may be had once that process is done
    if isinstance(error, Rejected):
        return ExitCode.HELD if error.reason in BUSY_REASONS else ExitCode.INVALID_INPUT
    if isinstance(error, Deadlock):
        return ExitCode.DEADLOCK
    if isinstance(error, TimedOut):
        return ExitCode.TIMED_OUT
    if isinstance(error, Lost):
        return ExitCode.LOST
    if isinstance(error, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(error, Forbidden):
        return ExitCode.FORBIDDEN
    if isinstance(error, InvalidInput):
        return ExitCode.INVALID_INPUT
    if isinstance(error, Unreachable):
        return ExitCode.UNREACHABLE
    return ExitCode.UNREACHABLE
