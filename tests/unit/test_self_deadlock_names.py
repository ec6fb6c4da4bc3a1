"""A wait on its own holder (`SelfDeadlock`) names the claim that holds the resource: a holder that
writes claims with `generateName` has several, and the cycle alone (holder → resource → holder) did
not tell it which one keeps it out, nor which to use or release. (A claim of several resources:
tests/unit/test_multiclaim.py.)"""

from __future__ import annotations

from kubelock.domain.grants import Mode
from kubelock.domain.reasons import Phase, Reason
from tests.support.arbitration import RES, T0, claim, holding, lock_for, only_status, run


def test_a_self_deadlock_names_the_holders_claim_that_holds_the_resource() -> None:
    held = claim("g-7xk2p", 5, holder="user:alice/w1")
    lock = lock_for(held)
    waiter = claim("g-q9z4d", 6, holder="user:alice/w1", wait=True)
    status = only_status(run([holding(held, lock), waiter], lock, T0)).status
    assert (status.phase, status.reason) == (Phase.DEADLOCKED, Reason.SELF_DEADLOCK)
    assert status.message.startswith(f"deadlock: user:alice/w1 → {RES} → user:alice/w1; "), status.message
    assert f"{RES} is held by this holder's own claim g-7xk2p: use that lock, or release it" in status.message
    assert "g-q9z4d" not in status.message  # the waiter is the claim told, not the one that holds


def test_a_self_deadlock_behind_several_shared_grants_names_each_claim_once_and_at_most_three() -> None:
    shared = [claim(f"g-{n}", n, holder="user:alice/w1", mode=Mode.SHARED) for n in range(1, 6)]
    locks = [lock_for(c, token=100 + n) for n, c in enumerate(shared)]
    held = [holding(c, g) for c, g in zip(shared, locks, strict=True)]
    waiter = claim("writer", 9, holder="user:alice/w1", wait=True)
    status = only_status(run([*held, waiter], locks, T0)).status
    assert status.reason == Reason.SELF_DEADLOCK
    assert "this holder's own claims g-1, g-2, g-3, and 2 more:" in status.message, status.message

