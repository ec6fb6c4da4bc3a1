"""A waiter whose grant the API server refuses (`LockRefused`) is told so while it waits: by the
command's progress on stderr (a line of its own once per refusal episode when stderr is no terminal),
and by the SDK's timeout error."""

from __future__ import annotations

import io
from typing import Any

from kubelock.cli.progress import QueueProgress, waiting_line
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.model import ClaimInfo

REFUSED = ("the API server refused to create lock x, so nothing is granted: exceeded quota: locks; "
           "trying again every 10 s")


def pending(reason: str, message: str, position: int | None = 1) -> ClaimInfo:
    status: dict[str, Any] = {"phase": "Pending", "reason": reason, "message": message}
    if position is not None:
        status["queuePosition"] = position
    return ClaimInfo.from_body({"spec": {"resource": "x://r", "holder": "user:a/w1", "wait": True},
                                "status": status})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_only_a_pending_refusal_is_a_refusal() -> None:
    assert pending("LockRefused", REFUSED).refused == REFUSED
    assert pending("Queued", "waiting").refused is None
    ended = ClaimInfo.from_body({"spec": {"resource": "x://r", "holder": "user:a/w1"},
                                 "status": {"phase": "Rejected", "reason": "LockRefused", "message": REFUSED}})
    assert ended.refused is None  # an answer, not a wait: the SDK raises it


def test_without_a_terminal_each_refusal_episode_is_one_line() -> None:
    stream = io.StringIO()
    progress = QueueProgress(stream)
    for info in (pending("Queued", "waiting", 2), pending("LockRefused", REFUSED), pending("LockRefused", REFUSED),
                 pending("Queued", "waiting", 1), pending("LockRefused", REFUSED)):
        progress(info)
    assert stream.getvalue() == f"kubelock: waiting for x://r: {REFUSED}\n" * 2


def test_on_a_terminal_the_waiting_line_says_why() -> None:
    stream = Terminal()
    progress = QueueProgress(stream)
    progress(pending("LockRefused", REFUSED))
    assert REFUSED in stream.getvalue() and "\n" not in stream.getvalue()
    assert waiting_line(pending("Queued", "waiting", 3)) == "waiting for x://r: position 3 (Ctrl-C gives up)"


def test_the_sdks_timeout_says_the_grant_was_refused() -> None:
    client = AsyncLockClient.__new__(AsyncLockClient)
    error = client._silence(pending("LockRefused", REFUSED), 10.0, 5.0, 11.0)
    assert error.message == ("gave up after waiting 5s for x://r; not granted because the API server refused to "
                             "create lock x, so nothing is granted: exceeded quota: locks")
    plain = client._silence(pending("Queued", "waiting"), 10.0, 5.0, 11.0)
    assert plain.message == "gave up after waiting 5s for x://r"
