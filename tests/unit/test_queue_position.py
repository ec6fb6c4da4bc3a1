"""How often a waiter's position is written: exact at the front, within a factor of two behind it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubelock.domain.model import ClaimStatus
from kubelock.domain.queueposition import out_of_band, worth_writing
from kubelock.domain.reasons import Phase, Reason
from tests.support.arbitration import T0, Space, claim

WAITING = ClaimStatus(Phase.PENDING, Reason.QUEUED, "position 5", 7, holder="agent-a", queue_position=5)


@pytest.mark.parametrize(
    ("written", "actual", "out"),
    [
        (5, 5, False), (5, 3, False), (5, 2, True), (5, 9, False), (5, 10, True),
        (3, 2, False), (2, 1, True), (3, 1, True), (1, 2, True), (1, 1, False),
        (None, 1, True), (1, None, True), (None, None, False),
    ],
)
def test_band(written: int | None, actual: int | None, out: bool) -> None:
    assert out_of_band(written, actual) is out


def test_what_is_written_at_once() -> None:
    assert worth_writing(None, WAITING)
    assert not worth_writing(WAITING, WAITING)
    moved = replace(WAITING, queue_position=4, holder="agent-b", message="position 4")
    assert not worth_writing(WAITING, moved), "a move within the band, with a new holder, waits"
    assert worth_writing(WAITING, replace(moved, queue_position=2)), "halved"
    assert worth_writing(WAITING, replace(moved, reason=Reason.LOCK_DELAY, available_at=T0)), "a new reason"
    assert worth_writing(WAITING, replace(moved, requeues=1))
    first = replace(WAITING, queue_position=1)
    assert worth_writing(first, replace(first, holder="agent-b")), "the first waiter names whom it waits for"


def test_a_long_queue_is_written_about_log2_times_per_waiter() -> None:
    waiters = [f"w{i:02d}" for i in range(1, 17)]
    space = Space().add(claim("h", 1), *(claim(name, i + 2, wait=True) for i, name in enumerate(waiters)))
    space.settle(T0)
    assert [space.get(n).status.queue_position for n in waiters] == list(range(1, 17))  # type: ignore[union-attr]
    current, now = "h", T0
    renumbered: list[tuple[object, ...]] = []
    for i, name in enumerate(waiters):
        start = len(space.log)
        space.remove(current)
        now += 1
        space.settle(now)
        assert space.get(name).status.phase is Phase.HELD  # type: ignore[union-attr]
        for actual, other in enumerate(waiters[i + 1 :], start=1):
            written = space.get(other).status.queue_position  # type: ignore[union-attr]
            assert written is not None and not out_of_band(written, actual), (other, written, actual)
            if actual == 1:
                assert written == 1
                assert space.get(other).status.holder == name  # type: ignore[union-attr]
        renumbered += [e for e in space.log[start:] if e[0] == "status" and e[2] is Phase.PENDING]
        current = name
    # Written exactly after every grant, the waiters behind the new holder would be rewritten
    # 15 + 14 + ... + 1 = 120 times.
    assert len(renumbered) <= 50, len(renumbered)
    last = [e for e in renumbered if e[1] == "w16"]
    assert len(last) == 4, last  # rewritten at 8, 4, 2 and 1, not at every one of 15 moves
