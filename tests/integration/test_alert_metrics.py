"""The chart's alerting rules read only metrics a real operator exports, with labels it gives them.

An operator runs against the test bed's API server, grants a claim and lets another's lease run out
(so the counters the rules read have series), and its `/metrics` answer is compared with every
series selector of every alert the chart renders.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, V1Namespace, V1ObjectMeta

from kubelock.testbed import find_binaries
from tests.support.alertrules import PROMETHEUS_SERIES, REPO, exposition_families, family, render, rules_of, selectors
from tests.support.claims import Locks, wait_until
from tests.support.operator import OperatorProcess

# Labels Prometheus gives every series of the target (the chart's ServiceMonitor): not the operator's.
TARGET_LABELS = {"job", "namespace"}
# The verbs the operator's API client counts its requests under.
CLIENT_VERBS = set(re.findall(r'verb="(\w+)"', (REPO / "operator" / "kubelock" / "kube" / "client.py").read_text()))
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? \S+$", flags=re.M)


def exposition(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def series_labels(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name → the label sets of its samples."""
    out: dict[str, list[dict[str, str]]] = {}
    for match in SAMPLE.finditer(text):
        labels = dict(re.findall(r'([a-zA-Z_]\w*)="([^"]*)"', match["labels"] or ""))
        out.setdefault(match["name"], []).append(labels)
    return out


def _check_alternatives(alert: str, label: str, pattern: str, seen: set[str]) -> None:
    """Each alternative of a label regex can match a value the operator gives that label: a typo
    (`verb=~"crate"`, `code=~"50"`) would make an alert silently never fire."""
    for alternative in pattern.split("|"):
        if label == "code":  # errors do not happen here: the shape of an HTTP status, or 0 (unreachable)
            assert re.fullmatch(r"0|[1-5][0-9.]{2}", alternative), (alert, label, alternative)
        elif label == "verb":  # every verb the operator's client counts, not only those this run used
            assert alternative in CLIENT_VERBS, (alert, label, alternative, CLIENT_VERBS)
        else:
            assert any(re.fullmatch(alternative, v) for v in seen), (alert, label, alternative, seen)
    assert any(re.fullmatch(pattern, v) for v in seen) or label == "code", (alert, label, pattern, seen)


@pytest.fixture
def operator_metrics(control_plane, admin_api: ApiClient, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The exposition of a real operator that has granted a claim and expired another."""
    ns = f"kla-{secrets.token_hex(4)}"
    CoreV1Api(admin_api).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=ns)))
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(ns,), metrics=True).start()
    try:
        locks = Locks(admin_api, ns)
        locks.claim("held", "deploy://alerts", "agent-a")
        locks.wait_phase("held", "Held")
        locks.claim("short", "deploy://short", "agent-b", ttl=1)
        locks.wait_phase("short", "Expired")

        def counted() -> bool:
            samples = series_labels(exposition(op.metrics_port))
            return "kubelock_expirations_total" in samples and any(
                s.get("verb") == "create" and s.get("code", "").startswith("2")
                for s in samples.get("kubelock_api_requests_total", [])
            )

        wait_until(counted, "the grant's create and the expiry counted in /metrics")
        yield exposition(op.metrics_port)
    finally:
        op.stop()
        with contextlib.suppress(ApiException):
            CoreV1Api(admin_api).delete_namespace(ns)


def test_every_alert_reads_exported_metrics_and_labels(operator_metrics: str) -> None:
    helm = find_binaries(("helm",), kwok_stages=False) / "helm"
    alerts = rules_of(render(helm, "prometheusRule.enabled=true"))
    assert alerts, "the chart rendered no alerts"
    families = exposition_families(operator_metrics)
    histograms = {name for name, kind in families.items() if kind == "histogram"}
    samples = series_labels(operator_metrics)
    read = set()
    for alert in alerts:
        for selector in selectors(alert["expr"]):
            if selector.metric in PROMETHEUS_SERIES:
                continue
            name = family(selector.metric, histograms)
            read.add(name)
            assert name in families, f"{alert['alert']} reads {selector.metric}, which the operator does not export"
            if name != selector.metric:  # a histogram's _bucket/_count/_sum
                assert selector.metric in samples, f"{alert['alert']}: no {selector.metric} samples"
            own = {label: m for label, m in selector.matchers.items() if label not in TARGET_LABELS}
            if not own:
                continue
            series = samples.get(selector.metric, [])
            assert series, f"{alert['alert']} filters {selector.metric} by {sorted(own)}, which has no series to check"
            for label, (op, pattern) in own.items():
                assert all(label in s for s in series), f"{alert['alert']}: {selector.metric} has no label {label}"
                if op == "=~":
                    _check_alternatives(alert["alert"], label, pattern, {s[label] for s in series})
    # The failure modes the rules are there for are all read.
    assert {"kubelock_api_requests_total", "kubelock_clock_offset_seconds", "kubelock_deadlocks_total"} <= read
