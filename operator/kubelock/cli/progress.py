"""While `--wait` queues on a terminal: one line on stderr with the queue position and the holder.

Nothing else is shown when stderr is not a terminal (a script or an agent reads only the result), and
the line is erased before the result is printed. One thing is said either way: that the API server
refused the operator's grant (`LockRefused`, a used-up ResourceQuota on ResourceLocks, say), once per
refusal episode, as a line of its own when stderr is not a terminal: the wait cannot end in a grant
until someone lifts the refusal, and nothing else would tell a script why it waits.
"""

from __future__ import annotations

from typing import TextIO

from kubelock.sdk.client import unanswered_message
from kubelock.sdk.model import ClaimInfo

ERASE = "\r\033[K"


class QueueProgress:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = False
        self._refused: str | None = None  # what the refusal being waited out said
        self.enabled = stream.isatty()

    def __call__(self, info: ClaimInfo) -> None:
        refused, told = info.refused, self._refused
        self._refused = refused
        if not self.enabled:
            if refused is not None and told is None:
                self._stream.write(f"kubelock: waiting for {info.label}: {refused}\n")
                self._stream.flush()
            return
        self._stream.write(ERASE + waiting_line(info))
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write(ERASE)
            self._stream.flush()
            self._shown = False


def waiting_line(info: ClaimInfo) -> str:
    if info.refused is not None:
        return f"waiting for {info.label}: {info.refused} (Ctrl-C gives up)"
    position = f"position {info.queue_position}" if info.queue_position else "in the queue"
    holder = f", held by {info.current_holder}" if info.current_holder else ""
    return f"waiting for {info.label}: {position}{holder} (Ctrl-C gives up)"


class UnansweredNotice:
    """`on_unanswered` of an acquire: one line on stderr, once, when no operator has acted on the claim
    a few seconds after it was made. Without it a plain acquire with no operator running prints
    nothing until the decision timeout (60 s) fails it `OperatorUnavailable`. Said whether or not
    stderr is a terminal (a script's log shows why it waited); stdout stays the result's alone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.told = False

    def __call__(self, info: ClaimInfo) -> None:
        if self.told:
            return
        self.told = True
        self._stream.write(unanswered_line(info) + "\n")
        self._stream.flush()


def unanswered_line(info: ClaimInfo) -> str:
    return f"kubelock: {unanswered_message(info)}"
