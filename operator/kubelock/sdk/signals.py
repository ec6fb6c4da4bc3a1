"""SIGTERM and SIGHUP while an acquire waits: withdraw the claim, then end as the signal asked.

A process killed by SIGTERM (Kubernetes stopping a pod, `timeout`, a supervisor) or SIGHUP (its
terminal closing) runs no cleanup, so a queued claim would stay and later be granted to nobody. While
an acquire is in progress, and only where the signal would otherwise kill the process (its handler
is the default one, and this is the main thread), the SDK turns the signal into `Terminated`: the
acquire leaves the queue (and gives back a grant that arrived meanwhile), and `Terminated` (a
`SystemExit` with the shell's code for the signal: 143 for SIGTERM, 129 for SIGHUP) unwinds the
caller's `with` and `finally` blocks and ends the process. A program with its own handlers keeps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(SystemExit):
    """The process was asked to stop (SIGTERM, SIGHUP) during an acquire; nothing is held."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


def _defaults() -> list[signal.Signals]:
    if threading.current_thread() is not threading.main_thread():
        return []
    return [s for s in SIGNALS if signal.getsignal(s) == signal.SIG_DFL]


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """For a blocking call in the main thread: the signals raise Terminated instead of killing."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    installed = {s: signal.signal(s, handler) for s in _defaults()}
    try:
        yield
    finally:
        for s, previous in installed.items():
            signal.signal(s, previous)


@contextlib.asynccontextmanager
async def cancelling() -> AsyncIterator[None]:
    """For a coroutine on the main thread's event loop: the signals cancel the current task (its
    cleanup runs), and Terminated is raised once it has unwound."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    received: list[int] = []
    names = _defaults() if task is not None else []

    def on_signal(signum: int) -> None:
        if not received:
            received.append(signum)
            assert task is not None
            task.cancel()

    for s in names:
        loop.add_signal_handler(s, on_signal, s)
    try:
        yield
    except asyncio.CancelledError:
        if received and task is not None:
            task.uncancel()
            raise Terminated(received[0]) from None
        raise
    finally:
        for s in names:
            loop.remove_signal_handler(s)
