"""The operator's share of an expiry's lateness (`kubelock_expiry_lateness_seconds`): from the end its
holder was told to the `Expired` write being begun, observed once per expiry and for nothing else."""

from __future__ import annotations

from prometheus_client import generate_latest

from kubelock.domain.arbiter import end_claim
from kubelock.domain.model import Claim, ClaimStatus, Phase
from kubelock.domain.reasons import Reason
from kubelock.operator.metrics import Metrics

T0 = 1_800_000_000.0


def _held(expires_at: float | None) -> Claim:
    status = ClaimStatus(
        phase=Phase.HELD, reason=Reason.GRANTED, message="held", sequence=7, holder="agent",
        lock_name="lock", fencing_token=9, acquired_at=T0, renewed_at=T0, expires_at=expires_at,
    )
    return Claim(name="c1", uid="u1", resource="r", holder="agent", sequence=7, created_at=T0, status=status)


def _sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, generate_latest(metrics.registry).decode()
    return value


def test_an_expiry_observes_the_time_from_the_told_end_to_the_write() -> None:
    metrics = Metrics()
    claim = _held(expires_at=T0 + 30)
    expired = end_claim(claim, Phase.EXPIRED, Reason.LEASE_EXPIRED, "lease expired", T0 + 31.5, warning=True)
    metrics.applied("ns", expired, T0 + 31.75)
    assert _sample(metrics, "kubelock_expiry_lateness_seconds_count") == 1
    assert abs(_sample(metrics, "kubelock_expiry_lateness_seconds_sum") - 1.75) < 1e-9
    # 1.75 s falls in the 2.5 s bucket, not the 1 s one
    assert metrics.registry.get_sample_value("kubelock_expiry_lateness_seconds_bucket", {"le": "1.0"}) == 0
    assert metrics.registry.get_sample_value("kubelock_expiry_lateness_seconds_bucket", {"le": "2.5"}) == 1


def test_other_ends_and_an_untold_end_observe_nothing() -> None:
    metrics = Metrics()
    claim = _held(expires_at=T0 + 30)
    revoked = end_claim(claim, Phase.REVOKED, Reason.LOCK_BROKEN, "broken", T0 + 40, warning=True)
    metrics.applied("ns", revoked, T0 + 40)
    untold = end_claim(_held(expires_at=None), Phase.EXPIRED, Reason.LEASE_EXPIRED, "expired", T0 + 40, warning=True)
    metrics.applied("ns", untold, T0 + 40)
    assert _sample(metrics, "kubelock_expiry_lateness_seconds_count") == 0
    # the untold one still counts as an expiry
    assert metrics.registry.get_sample_value("kubelock_expirations_total", {"namespace": "ns"}) == 1
