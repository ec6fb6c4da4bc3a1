"""SIGTERM and SIGHUP end commands and SDK acquires after their cleanup ran (real signals, sent to
this process)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from kubelock.cli import signals as cli_signals
from kubelock.cli.exitcodes import ExitCode, for_error
from kubelock.sdk import Terminated
from kubelock.sdk import signals as sdk_signals


@pytest.mark.parametrize(("sig", "code", "reason"), [(signal.SIGTERM, ExitCode.TERMINATED, "Terminated"),
                                                     (signal.SIGHUP, ExitCode.HANGUP, "HungUp")])
def test_a_command_is_cancelled_cleans_up_and_reports(sig: int, code: int, reason: str) -> None:
    cleaned: list[bool] = []

    async def command() -> int:
        try:
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), sig)
            await asyncio.sleep(30)
            return 0
        finally:
            await asyncio.sleep(0)  # cleanup may await (the SDK deletes the claim here)
            cleaned.append(True)

    with pytest.raises(cli_signals.Stopped) as stopped:
        cli_signals.run(command())
    assert cleaned == [True]
    assert (stopped.value.reason, for_error(stopped.value)) == (reason, code)
    assert signal.getsignal(sig) == signal.SIG_DFL  # handlers removed afterwards


def test_a_command_that_finishes_returns_its_result() -> None:
    async def command() -> int:
        return 7

    assert cli_signals.run(command()) == 7


def test_a_blocking_sdk_call_raises_terminated_only_where_the_signal_would_kill() -> None:
    with pytest.raises(Terminated) as ended, sdk_signals.raising():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as soon as kill returns
    assert (ended.value.code, ended.value.signal_name) == (143, "SIGTERM")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    seen: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, _frame: seen.append(signum))
    try:
        with sdk_signals.raising():  # the program's own handler stays
            os.kill(os.getpid(), signal.SIGHUP)
        assert seen == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_an_async_acquire_is_cancelled_then_terminated() -> None:
    cleaned: list[bool] = []

    async def acquire() -> None:
        async with sdk_signals.cancelling():
            try:
                asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGHUP)
                await asyncio.sleep(30)
            finally:
                cleaned.append(True)

    with pytest.raises(Terminated) as ended:
        asyncio.run(acquire())
    assert cleaned == [True]
    assert ended.value.code == 129
