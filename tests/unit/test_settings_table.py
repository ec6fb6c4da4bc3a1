"""README.md's table of operator settings says what the operator and its chart take: a row for each
flag of `kubelock-operator --help`, in it the environment variable the flag reads (every
`KUBELOCK_*` of operator/kubelock/operator/settings.py is in the table), and the Helm value the
chart passes it from (each named value exists in values.yaml, and each flag the chart's Deployment
passes names, in its row, a value the template passes it from). A flag, a variable or a chart value
added without its row fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.operator import settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubelock"
Row = tuple[set[str], set[str], set[str]]  # flags, environment variables, Helm values


def table_rows(readme: str) -> list[Row]:
    """The rows of the table under "## Operator settings", each as the backticked names of its first
    three columns."""
    section = readme.split("## Operator settings\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0].split("|")[1:4] == [" flag ", " environment ", " Helm value "], lines[0]
    rows = []
    for line in lines[2:]:
        cells = line.split("|")[1:4]
        flags = {f for cell in re.findall(r"`([^`]*)`", cells[0]) for f in re.findall(r"--?[A-Za-z][\w-]*", cell)}
        env = set(re.findall(r"\b(KUBELOCK_[A-Z_]+|KUBECONFIG)\b", cells[1]))
        values = {v for v in re.findall(r"`([^`]*)`", cells[2]) if v != "extraArgs"}
        rows.append((flags, env, values))
    return rows


def option_strings() -> dict[str, argparse.Action]:
    """The flags `--help` lists, each with its action (not -h, not the replaced ones, hidden)."""
    return {
        s: a
        for a in settings.flag_parser()._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
        for s in a.option_strings
    }


def template_flags() -> dict[str, set[str]]:
    """Each flag the chart's Deployment passes, with the values it is passed from: those on its line
    and on the `if`/`range` line that opens its block."""
    text = (CHART / "templates" / "deployment.yaml").read_text()
    args = text.split("args:", 1)[1].split("env:", 1)[0]
    out: dict[str, set[str]] = {}
    opening: set[str] = set()
    for line in args.splitlines():
        refs = set(re.findall(r"\.Values\.([\w.]+)", line))
        if re.search(r"\{\{-?\s*(if|range|with)\b", line):
            opening = refs
        elif re.search(r"\{\{-?\s*(end|else)\b", line):
            opening = set() if "end" in line else opening
        flag = re.match(r"\s*- (--[a-z][\w-]*)", line)
        if flag:
            out[flag.group(1)] = refs | opening
    return out


def value_exists(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return table_rows((REPO / "README.md").read_text())


def test_every_flag_has_a_row_and_every_row_a_flag(rows: list[Row]) -> None:
    options = option_strings()
    listed = {f for flags, _, _ in rows for f in flags}
    assert not set(options) - listed, f"flags without a row in README.md's operator settings: {set(options) - listed}"
    assert not listed - set(options), f"rows of README.md's operator settings that are no flag: {listed - set(options)}"


def test_every_environment_variable_is_in_the_row_of_its_flag(rows: list[Row]) -> None:
    source = Path(settings.__file__).read_text()
    read = set(re.findall(r'"(KUBELOCK_[A-Z_]+)"', source)) - set(settings.REPLACED)
    listed = {e for _, env, _ in rows for e in env}
    assert read - listed == set(), f"variables without a row in README.md's operator settings: {read - listed}"
    assert listed - read - {"KUBECONFIG"} == set(), f"variables the operator does not read: {listed - read}"
    for flags, env, _ in rows:
        for variable in env - {"KUBECONFIG"}:
            name = variable.removeprefix("KUBELOCK_").lower().replace("_", "-")
            assert any(name in f or f.lstrip("-") in name for f in flags), (variable, flags)


def test_every_helm_value_exists_and_every_flag_the_chart_passes_names_its_value(rows: list[Row]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for _, _, named in rows:
        missing = [v for v in named if not value_exists(values, v)]
        assert not missing, f"README.md names Helm values the chart does not have: {missing}"
    passed = template_flags()
    assert "--log-format" in passed and "--verbose" in passed  # the template was read
    for flag, sources in passed.items():
        row = next((r for r in rows if flag in r[0]), None)
        assert row is not None, f"the chart passes {flag}, which has no row in README.md"
        assert row[2] & sources, f"the row of {flag} names none of the values the chart passes it from: {sources}"


def test_a_flag_without_a_row_fails(rows: list[Row]) -> None:
    """The table parser sees a missing row: the table less the row of --debug lacks a flag."""
    readme = (REPO / "README.md").read_text()
    without = "\n".join(line for line in readme.splitlines() if not line.startswith("| `--debug"))
    assert {f for flags, _, _ in table_rows(without) for f in flags} == {f for r in rows for f in r[0]} - {"--debug"}
