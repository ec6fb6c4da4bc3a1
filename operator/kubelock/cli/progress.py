"""While `--wait` queues on a terminal: one line on stderr with the queue position and the holder.

Nothing is shown when stderr is not a terminal (a script or an agent reads only the result), and the
line is erased before the result is printed.
"""

from __future__ import annotations

from typing import TextIO

from kubelock.sdk.model import ClaimInfo

ERASE = "\r\033[K"


class QueueProgress:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = False
        self.enabled = stream.isatty()

    def __call__(self, info: ClaimInfo) -> None:
        if not self.enabled:
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
    position = f"position {info.queue_position}" if info.queue_position else "in the queue"
    holder = f", held by {info.current_holder}" if info.current_holder else ""
    return f"waiting for {info.label}: {position}{holder} (Ctrl-C gives up)"
