"""The chart's PrometheusRule, rendered with the real helm binary (no cluster): off unless asked
for and served, a valid PrometheusRule when on, every expression valid PromQL selecting this
release's series, every alert documented where its runbook_url points.

That the metrics the expressions read are the ones a running operator exports is checked against a
real operator in tests/integration/test_alert_metrics.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.alertrules import CHART, RELEASE_NS, REPO, RULE_API, render, rules_of, selectors

ON = "prometheusRule.enabled=true"
DEFAULT_SELECTOR = {"job": ("=", "kubelock-operator-metrics"), "namespace": ("=", RELEASE_NS)}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SEVERITIES = {"critical", "warning"}


@pytest.mark.parametrize(
    ("sets", "api_versions"),
    [
        pytest.param((), (RULE_API,), id="default-off"),
        pytest.param((ON,), (), id="api-not-served"),
        pytest.param((ON, "metrics.enabled=false"), (RULE_API,), id="metrics-off"),
    ],
)
def test_no_rule_unless_enabled_served_and_scraped(
    helm: Path, sets: tuple[str, ...], api_versions: tuple[str, ...]
) -> None:
    docs = render(helm, *sets, api_versions=api_versions)
    assert docs, "the chart rendered nothing"
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]


def test_enabled_renders_one_valid_prometheus_rule(helm: Path) -> None:
    docs = render(helm, ON, "prometheusRule.labels.release=prom", "prometheusRule.namespace=monitoring")
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "kubelock-operator"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "kubelock"
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"} and group["name"] and group["rules"]
    alerts = rules_of(docs)
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), f"alert names repeat: {names}"
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert
        assert re.fullmatch(r"Kubelock[A-Z][A-Za-z]+", alert["alert"])
        assert isinstance(alert["expr"], str) and alert["expr"].strip()
        assert "for" not in alert or DURATION.match(alert["for"]), alert["for"]
        assert alert["labels"]["severity"] in SEVERITIES
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert all(isinstance(v, str) and v.strip() for v in annotations.values())
    # The alerts the operator's failure modes call for are all there.
    for wanted in ("KubelockOperatorDown", "KubelockFailingClosed", "KubelockClockOffset", "KubelockDeadlocks"):
        assert wanted in names


def test_prometheus_templates_in_annotations_survive_helm(helm: Path) -> None:
    # helm must pass `{{ $value }}` through to Prometheus, not expand it (or fail on it) itself.
    descriptions = [a["annotations"]["description"] for a in rules_of(render(helm, ON))]
    assert any("{{ $value | humanize" in d for d in descriptions)


def test_every_expression_is_valid_promql_over_this_releases_series(helm: Path) -> None:
    alerts = rules_of(render(helm, ON))
    for alert in alerts:
        found = selectors(alert["expr"])  # raises on anything Prometheus would not load
        assert found, f"{alert['alert']} reads no series"
        for selector in found:
            assert selector.metric.startswith("kubelock_") or selector.metric == "up", selector
            # Another release's operator (or anything else) in the same Prometheus is not read.
            assert DEFAULT_SELECTOR.items() <= selector.matchers.items(), (alert["alert"], selector)


def test_the_selector_can_be_set(helm: Path) -> None:
    alerts = rules_of(render(helm, ON, 'prometheusRule.selector=job="locks"\\,cluster=~"eu-.*"'))
    for alert in alerts:
        for selector in selectors(alert["expr"]):
            assert selector.matchers["job"] == ("=", "locks")
            assert selector.matchers["cluster"] == ("=~", "eu-.*")
            assert "namespace" not in selector.matchers


def test_extra_alert_labels_go_on_every_alert(helm: Path) -> None:
    alerts = rules_of(render(helm, ON, "prometheusRule.additionalAlertLabels.team=platform"))
    assert alerts and all(a["labels"]["team"] == "platform" and a["labels"]["severity"] for a in alerts)


def test_a_broken_expression_is_caught() -> None:
    # The parser this file relies on rejects what Prometheus rejects, so the test above can fail.
    for bad, why in (
        ("sum(rate(kubelock_grants_total[5m])", "parenthesis"),
        ("rate(kubelock_grants_total)", "expected type matrix"),
        ('up{job="a"', "braces"),
    ):
        with pytest.raises(ValueError, match=why):
            selectors(bad)


def test_every_runbook_url_points_at_a_documented_alert(helm: Path) -> None:
    docs = (REPO / "docs" / "install.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^### (Kubelock\w+)$", docs, flags=re.M)}
    base = "https://github.com/kubelock/kubelock/blob/main/docs/install.md#"
    alerts = rules_of(render(helm, ON))
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url == base + alert["alert"].lower(), url
        assert alert["alert"].lower() in headings, f"docs/install.md has no section ### {alert['alert']}"
    assert headings == {a["alert"].lower() for a in alerts}, "an alert section documents no alert"
    custom = rules_of(render(helm, ON, "prometheusRule.runbookBaseUrl=https://wiki.example/kubelock"))
    assert custom[0]["annotations"]["runbook_url"].startswith("https://wiki.example/kubelock#")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("prometheusRule.selector={job=\"a\"}", "selector", id="selector-with-braces"),
        pytest.param("prometheusRule.runbookBaseUrl=docs/install.md", "runbookBaseUrl", id="runbook-not-a-url"),
        pytest.param("prometheusRule.enabled=yes", "enabled", id="enabled-not-a-bool"),
        pytest.param("prometheusRule.severity=page", "severity", id="unknown-key"),
    ],
)
def test_bad_values_are_rejected(helm: Path, setting: str, message: str) -> None:
    args = [str(helm), "template", "kubelock", str(CHART), "--set", setting]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert message in result.stderr
