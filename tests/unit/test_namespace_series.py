"""A deleted namespace's metric series go (`Metrics.drop_namespaces`, fed by `namespacewatch`): every
counter labelled by namespace loses that namespace's series, and no other namespace's."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Counter, generate_latest

from kubelock.operator.metrics import Metrics
from kubelock.operator.namespacewatch import NamespaceSink


def _count_all(metrics: Metrics, namespace: str) -> None:
    metrics.grants.labels(namespace).inc()
    metrics.rejections.labels(namespace).inc()
    metrics.expirations.labels(namespace).inc()
    metrics.revocations.labels(namespace, "LockBroken").inc()
    metrics.revocations.labels(namespace, "PodGone").inc()
    metrics.deadlocks.labels(namespace).inc()
    metrics.timeouts.labels(namespace).inc()
    metrics.lock_delays.labels(namespace, "LeaseExpired").inc()
    metrics.quota_rejections.labels(namespace).inc()


def _lines_of(metrics: Metrics, namespace: str) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if f'namespace="{namespace}"' in line]


def test_every_counter_labelled_by_namespace_is_dropped_with_it() -> None:
    metrics = Metrics()
    labelled = [
        value for value in vars(metrics).values()
        if isinstance(value, Counter) and "namespace" in value._labelnames
    ]
    covered = [counter for counter, _ in metrics._namespaced]
    assert {id(c) for c in labelled} == {id(c) for c in covered}


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
    metrics.grants.labels("ci").inc(3)
    metrics.drop_namespaces(["ci"])
    metrics.grants.labels("ci").inc()
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

    async def list_all(self, path: str, **params: Any) -> tuple[list[dict[str, Any]], str]:
        self.calls.append("list_all")
        return [{"metadata": {"name": n}} for n in self.names], self.version


def test_the_watch_drops_on_deleted_only() -> None:
    metrics = Metrics()
    _count_all(metrics, "a")
    sink = NamespaceSink(_Namespaces([], "1"), metrics)  # type: ignore[arg-type]
    for kind in ("ADDED", "MODIFIED"):
        sink.event(None, kind, {"metadata": {"name": "a", "deletionTimestamp": "2026-11-28T00:00:00Z"}})
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
