"""SIGTERM and SIGHUP stop a command the way Ctrl-C does, and it still says how it ended.

`timeout -s TERM`, a pod being stopped or a closed terminal used to kill a waiting `rlock --wait`
on the spot: no output, and its queued claim was later granted to nobody. Now the command's task is
cancelled (the SDK withdraws a waiting claim and gives back a grant that arrived meanwhile), the
command prints its result (`Terminated` or `HungUp`; one JSON object with `--json` and for `rlock`,
`runlock`, `rlock-heartbeat`) and exits with the shell's code for the signal: 143 (SIGTERM) or 129
(SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from kubelock.sdk.errors import LockError

T = TypeVar("T")
SIGNALS = (signal.SIGTERM, signal.SIGHUP)
REASONS = {signal.SIGTERM: "Terminated", signal.SIGHUP: "HungUp", signal.SIGINT: "Interrupted"}

# The handler `run` installed, innermost last. A command that takes the signals over for a while
# (`kubelock run` passes them on to its command) gives them back with `restore`: asyncio's
# `remove_signal_handler` would leave the default action, and a SIGTERM then would kill the process
# without a word, in the middle of whatever it was doing (the release after the command ended).
_installed: list[Callable[[int], None]] = []


class Stopped(LockError):
    """The command was stopped by a signal; whatever it was acquiring was withdrawn."""

    def __init__(self, signum: int, unwithdrawn: Sequence[str] = ()) -> None:
        name = signal.Signals(signum).name
        # A claim whose withdrawal failed (the API server away, the credentials lapsed) is named
        # instead: it stays queued, and "nothing new is held" would not be true once it is granted.
        acquiring = "; ".join(unwithdrawn) or "a lock this command was acquiring was withdrawn (nothing new is held)"
        super().__init__(
            f"stopped by {name}: {acquiring}; a release or renewal it was making may not have happened",
            reason=REASONS.get(signal.Signals(signum), "Terminated"),
        )
        self.signum = signum
        self.exit_code = 128 + signum


def run(coro: Coroutine[Any, Any, T], unwithdrawn: Callable[[], Sequence[str]] = tuple) -> T:
    """`asyncio.run(coro)`, except that SIGTERM and SIGHUP cancel it and then raise Stopped
    (naming what `unwithdrawn` then returns: the claims the cancelled command could not withdraw)."""
    received: list[int] = []
    tasks: list[asyncio.Task[Any]] = []

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        if received:  # the signal came before the command started
            coro.close()
            raise asyncio.CancelledError
        return await coro

    def on_signal(signum: int) -> None:
        if not received:
            received.append(signum)
            for task in tasks:
                task.cancel()

    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        _installed.append(on_signal)
        for s in SIGNALS:
            loop.add_signal_handler(s, on_signal, s)
        try:
            return runner.run(main())
        except asyncio.CancelledError:
            if received:
                raise Stopped(received[0], unwithdrawn()) from None
            raise
        finally:
            _installed.remove(on_signal)
            for s in SIGNALS:
                loop.remove_signal_handler(s)


def restore(loop: asyncio.AbstractEventLoop, signums: Sequence[int]) -> None:
    """Give `signums` back to what handled them before a command took them over: `run`'s handler
    for SIGTERM and SIGHUP (the default action outside `run`), Python's KeyboardInterrupt for SIGINT."""
    for s in signums:
        loop.remove_signal_handler(s)
        if _installed and s in SIGNALS:
            loop.add_signal_handler(s, _installed[-1], s)


@contextlib.contextmanager
def held(loop: asyncio.AbstractEventLoop) -> Iterator[list[int]]:
    """SIGTERM, SIGHUP and SIGINT noted, not acted on, for a block of work that a stop must not cut
    short, such as `kubelock run`'s release after its command ended (one request: cancelled, or
    killed by the default action, the lock would stay held by nobody until its lease ended). The
    block yields the signals that came; after it, they are handled as before."""
    noted: list[int] = []
    taken = (*SIGNALS, signal.SIGINT)
    for s in taken:
        loop.add_signal_handler(s, noted.append, s)
    try:
        yield noted
    finally:
        restore(loop, taken)
