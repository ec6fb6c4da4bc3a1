"""What the SDK says about a claim that ended: for a caller of the SDK or the commands, not for
kubectl users (the operator's status message advises `wait: true`, a claim field)."""

from __future__ import annotations

from typing import Any

from kubelock.domain.reasons import QUEUE_ADVICE
from kubelock.sdk.client import _ending
from kubelock.sdk.model import ClaimInfo


def ended(phase: str, reason: str, message: str, holder: str | None = None) -> ClaimInfo:
    status: dict[str, Any] = {"phase": phase, "reason": reason, "message": message}
    if holder:
        status["holder"] = holder
    return ClaimInfo.from_body({"spec": {"resource": "x://r", "holder": "user:a/w1"}, "status": status})


def test_a_rejection_names_the_holder_without_kubectl_advice() -> None:
    claim = ended("Rejected", "HeldByAnotherHolder",
                  "x://r is held by user:b/w1 since 2026-01-01T00:00:00Z; " + QUEUE_ADVICE,
                  holder="user:b/w1")
    assert _ending(claim) == "Rejected: x://r was held by user:b/w1"


def test_other_endings_keep_the_operators_message() -> None:
    claim = ended("TimedOut", "WaitTimedOut", "gave up after waiting 4s for x://r (held by user:b/w1)", "user:b/w1")
    assert _ending(claim) == "TimedOut: gave up after waiting 4s for x://r (held by user:b/w1)"


def test_a_wait_that_no_operator_looked_at_says_so_when_it_times_out() -> None:
    """`rlock --wait --timeout 20` with the operator down: the claim was never queued behind anyone,
    and "gave up after waiting 20s" alone hid that nothing answers claims (still exit 7: the caller
    asked for a bounded wait)."""
    from types import SimpleNamespace

    from kubelock.sdk.client import AsyncLockClient
    from kubelock.sdk.errors import TimedOut

    body = {"metadata": {"name": "c", "namespace": "agents", "resourceVersion": "1"},
            "spec": {"resource": "x://r", "holder": "user:a/w1", "wait": True}}
    unseen = ClaimInfo.from_body(body)
    client: Any = SimpleNamespace(decision_timeout=60.0)
    error = AsyncLockClient._silence(client, unseen, wait_deadline=10.0, wait_timeout=5.0, now=11.0)
    assert isinstance(error, TimedOut)
    assert str(error) == ("gave up after waiting 5s for x://r; no kubelock operator acted on claim agents/c in that "
                          "time: is the operator running and watching namespace agents?")
    queued = ClaimInfo.from_body({**body, "status": {"phase": "Pending", "holder": "user:b/w1"}})
    error = AsyncLockClient._silence(client, queued, wait_deadline=10.0, wait_timeout=5.0, now=11.0)
    assert str(error) == "gave up after waiting 5s for x://r (held by user:b/w1)"  # seen: as before
