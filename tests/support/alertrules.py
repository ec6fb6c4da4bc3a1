"""The chart's alerting rules as helm renders them, and what their PromQL reads.

The expressions are parsed by promql-parser (Python bindings of GreptimeTeam's Rust PromQL parser,
which follows Prometheus' grammar and type-checks function arguments), not matched by regular
expressions: a rule that would not load in Prometheus fails here.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubelock"
RELEASE_NS = "kubelock-system"
# What a cluster with prometheus-operator's CRDs serves.
RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
# Series a rule may read besides the operator's own: Prometheus' scrape health of the target.
PROMETHEUS_SERIES = {"up"}
# The sample suffixes of a histogram family.
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Selector:
    """One series selector of an expression: its metric name and its label matchers."""

    metric: str
    matchers: dict[str, tuple[str, str]]  # label → (operator, value)


def render(helm: Path, *sets: str, api_versions: tuple[str, ...] = (RULE_API,)) -> list[Obj]:
    args = [str(helm), "template", "kubelock", str(CHART), "--namespace", RELEASE_NS]
    args += [arg for api in api_versions for arg in ("--api-versions", api)]
    for s in sets:
        args += ["--set", s]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def rules_of(docs: list[Obj]) -> list[Obj]:
    """The rules of every group of every PrometheusRule in `docs`."""
    return [
        rule
        for doc in docs
        if doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
    ]


def selectors(expr: str) -> list[Selector]:
    """Every series selector of `expr`; raises ValueError where it is not valid PromQL."""
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: (_op(m.op), m.value) for m in node.matchers.matchers}
            found.append(Selector(node.name or "", matchers))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _op(op: promql_parser.MatchOp) -> str:
    return {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}[str(op).rsplit(".", 1)[-1]]


def family(metric: str, histograms: set[str]) -> str:
    """The family a sample name belongs to: a histogram's `_bucket` and the like name their family."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = metric.removesuffix(suffix)
        if base != metric and base in histograms:
            return base
    return metric


def exposition_families(text: str) -> dict[str, str]:
    """Family name → type, from the `# TYPE` lines of a Prometheus text exposition (a family is
    declared there even before its first labelled series exists)."""
    return {m[1]: m[2] for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, flags=re.M)}
