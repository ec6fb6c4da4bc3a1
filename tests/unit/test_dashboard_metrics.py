"""Every query of the Grafana dashboard names a metric the operator really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from kubelock.operator.cache import Cache
from kubelock.operator.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "kubelock" / "dashboards" / "kubelock.json"


def _queries(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [q for k, v in node.items() for q in ([v] if k == "expr" else _queries(v))]
    if isinstance(node, list):
        return [q for v in node for q in _queries(v)]
    return []


def _exported() -> set[str]:
    """Sample names in the exposition of a Metrics whose labelled series all exist once."""
    metrics = Metrics()
    metrics.watch_cache(Cache())
    for counter in (metrics.grants, metrics.rejections, metrics.expirations, metrics.deadlocks, metrics.timeouts):
        counter.labels("ns").inc()
    metrics.revocations.labels("ns", "LockBroken").inc()
    metrics.api_requests.labels("get", "200").inc()
    names = set()
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("# TYPE "):
            # Families without samples yet (the cache gauges of an empty cache) are exported too.
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_dashboard_query_names_an_exported_metric() -> None:
    queries = _queries(json.loads(DASHBOARD.read_text()))
    assert queries, "the dashboard has no queries"
    exported = _exported()
    for query in queries:
        used = set(re.findall(r"\bkubelock_[a-z_]+", query))
        assert used, f"query names no kubelock metric: {query}"
        assert used <= exported, f"{query} uses {sorted(used - exported)}, not exported"


def test_the_names_follow_prometheus_conventions() -> None:
    exported = _exported()
    assert "kubelock_grants_total" in exported  # counters end in _total
    assert "kubelock_acquire_latency_seconds_bucket" in exported  # histograms in base units
    assert "kubelock_locks_held" in exported and "kubelock_claims_pending" in exported
