"""A deleted namespace's metric series go (`Metrics.drop_namespaces`, fed by `namespacewatch`): every
counter labelled by namespace loses that namespace's series, and no other namespace's."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any, ClassVar

from prometheus_client import Counter, generate_latest

from kubelock.domain.arbiter import end_claim
from kubelock.domain.model import Claim, ClaimStatus, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.operator.metrics import Metrics
from kubelock.operator.namespacewatch import NamespaceSink

T0 = 1_800_000_000.0


def _count_all(metrics: Metrics, namespace: str) -> None:
    for counter in (metrics.grants, metrics.rejections, metrics.expirations, metrics.deadlocks, metrics.timeouts,
                    metrics.quota_rejections):
        metrics.count(counter, namespace)
    metrics.count(metrics.revocations, namespace, "LockBroken")
    metrics.count(metrics.revocations, namespace, "PodGone")
    metrics.count(metrics.lock_delays, namespace, "LeaseExpired")


def _lines_of(metrics: Metrics, namespace: str) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if f'namespace="{namespace}"' in line]


def _pending() -> Claim:
    status = ClaimStatus(phase=Phase.PENDING, reason=Reason.QUEUED, message="queued", sequence=7)
    return Claim(name="c1", uid="u1", resource="r", holder="agent", sequence=7, created_at=T0, status=status)


def _held() -> Claim:
    status = ClaimStatus(
        phase=Phase.HELD, reason=Reason.GRANTED, message="held", sequence=7, holder="agent",
        lock_name="lock", fencing_token=9, acquired_at=T0, renewed_at=T0, expires_at=T0 + 30,
    )
    return Claim(name="c1", uid="u1", resource="r", holder="agent", sequence=7, created_at=T0, status=status)


def test_every_count_the_reconciler_makes_is_dropped_with_its_namespace() -> None:
    """Every `namespace` series `applied` makes, whatever the outcome, is one `drop_namespaces` knows."""
    metrics = Metrics()
    held = _held()
    assert held.status is not None
    outcomes = [
        SetStatus(_pending(), held.status),
        end_claim(_pending(), Phase.REJECTED, Reason.QUOTA_EXCEEDED, "over", T0, warning=True),
        end_claim(held, Phase.EXPIRED, Reason.LEASE_EXPIRED, "expired", T0 + 31, warning=True, available_at=T0 + 60),
        end_claim(held, Phase.REVOKED, Reason.LOCK_BROKEN, "broken", T0 + 40, warning=True),
        end_claim(_pending(), Phase.DEADLOCKED, Reason.DEADLOCK, "cycle", T0, warning=True),
        end_claim(_pending(), Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT, "waited", T0, warning=True),
    ]
    for action in outcomes:
        metrics.applied("ci", action, T0 + 50)
    names = {line.split("{")[0] for line in _lines_of(metrics, "ci") if not line.startswith("#")}
    assert {"kubelock_grants_total", "kubelock_rejections_total", "kubelock_quota_rejections_total",
            "kubelock_expirations_total", "kubelock_lock_delays_total", "kubelock_revocations_total",
            "kubelock_deadlocks_total", "kubelock_timeouts_total"} <= names
    labelled = {
        value._name for value in vars(metrics).values()
        if isinstance(value, Counter) and "namespace" in value._labelnames
    }
    assert {n.removesuffix("_total") for n in names} >= labelled  # every namespace counter was reached
    metrics.drop_namespaces(["ci"])
    assert _lines_of(metrics, "ci") == []


def test_a_gone_namespace_loses_its_series_and_the_others_keep_theirs() -> None:
    metrics = Metrics()
    _count_all(metrics, "ci-1")
    _count_all(metrics, "team")
    metrics.api_requests.labels("get", "200").inc()
    kept = _lines_of(metrics, "team")
    assert metrics.namespaces() == {"ci-1", "team"}

    assert metrics.drop_namespaces(["ci-1", "never-seen"]) == 9
    assert _lines_of(metrics, "ci-1") == []
    assert _lines_of(metrics, "team") == kept
    assert metrics.namespaces() == {"team"}
    assert metrics.registry.get_sample_value("kubelock_api_requests_total", {"verb": "get", "code": "200"}) == 1
    assert metrics.drop_namespaces([]) == 0


def test_a_namespace_made_again_counts_from_zero() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.count(metrics.grants, "ci")
    metrics.drop_namespaces(["ci"])
    metrics.count(metrics.grants, "ci")
    assert metrics.registry.get_sample_value("kubelock_grants_total", {"namespace": "ci"}) == 1


class _Namespaces:
    """The two LISTs the sink makes, answered from a fixed set of namespaces at a fixed version."""

    def __init__(self, names: list[str], version: str) -> None:
        self.names = names
        self.version = version
        self.calls: list[str] = []

    async def list(self, path: str, **params: Any) -> dict[str, Any]:
        self.calls.append(f"list limit={params.get('limit')}")
        return {"metadata": {"resourceVersion": self.version}, "items": []}

    async def list_all(self, path: str, **params: Any) -> tuple[builtins.list[dict[str, Any]], str]:
        self.calls.append("list_all")
        return [{"metadata": {"name": n}} for n in self.names], self.version


def test_the_watch_drops_on_deleted_only() -> None:
    metrics = Metrics()
    _count_all(metrics, "a")
    sink = NamespaceSink(_Namespaces([], "1"), metrics)  # type: ignore[arg-type]
    for kind in ("ADDED", "MODIFIED"):
        sink.event(None, kind, {"metadata": {"name": "a", "deletionTimestamp": "2026-11-28T00:00:00Z"}})
    sink.seen_to(None, 9)  # the watch's progress drops nothing either (`watches.QuietSink`)
    sink.unwatched(None)
    sink.watched(None)
    assert metrics.namespaces() == {"a"}
    sink.event(None, "DELETED", {"metadata": {"name": "a"}})
    assert metrics.namespaces() == set()


def test_a_relist_drops_the_namespaces_it_no_longer_has() -> None:
    metrics = Metrics()
    _count_all(metrics, "kept")
    _count_all(metrics, "deleted-meanwhile")
    client = _Namespaces(["kept", "other"], "42")
    version = asyncio.run(NamespaceSink(client, metrics).relist(None))  # type: ignore[arg-type]
    assert version == 42
    assert client.calls == ["list_all"]
    assert metrics.namespaces() == {"kept"}


def test_with_no_series_a_relist_reads_one_namespace_for_the_version() -> None:
    client = _Namespaces(["a", "b"], "7")
    version = asyncio.run(NamespaceSink(client, Metrics()).relist(None))  # type: ignore[arg-type]
    assert version == 7
    assert client.calls == ["list limit=1"]


class _LookedUp(Counter):
    """A counter that counts its label lookups (`labels`): one per series first seen, not per count."""

    lookups: ClassVar[builtins.list[tuple[str, ...]]] = []

    def labels(self, *values: Any, **named: Any) -> Any:
        _LookedUp.lookups.append(values)
        return super().labels(*values, **named)


def test_a_series_is_indexed_when_first_seen_and_again_after_its_namespace_went() -> None:
    metrics = Metrics()
    counter = _LookedUp("kubelock_test_counts", "test", ["namespace", "reason"], registry=metrics.registry)
    _LookedUp.lookups.clear()
    for _ in range(50):
        metrics.count(counter, "ci", "LeaseExpired")
        metrics.count(counter, "team", "LeaseExpired")
    metrics.count(counter, "ci", "LockBroken")
    assert _LookedUp.lookups == [("ci", "LeaseExpired"), ("team", "LeaseExpired"), ("ci", "LockBroken")]
    value = metrics.registry.get_sample_value
    assert value("kubelock_test_counts_total", {"namespace": "ci", "reason": "LeaseExpired"}) == 50
    assert metrics.drop_namespaces(["ci"]) == 2
    assert metrics.namespaces() == {"team"}
    assert value("kubelock_test_counts_total", {"namespace": "ci", "reason": "LeaseExpired"}) is None
    metrics.count(counter, "ci", "LeaseExpired")  # made again: a new series, seen for the first time
    metrics.count(counter, "team", "LeaseExpired")
    assert _LookedUp.lookups[3:] == [("ci", "LeaseExpired")]
    assert value("kubelock_test_counts_total", {"namespace": "ci", "reason": "LeaseExpired"}) == 1
    assert value("kubelock_test_counts_total", {"namespace": "team", "reason": "LeaseExpired"}) == 51
    assert metrics.drop_namespaces(["ci", "team"]) == 2
    assert metrics.namespaces() == set()
