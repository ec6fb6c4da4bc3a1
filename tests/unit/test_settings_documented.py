"""The operator's defaults and bounds, as README.md, docs/install.md and the chart give them.

tests/unit/test_settings_table.py holds the names together (flag, variable, Helm value); this holds
what they say: README.md's default column is the flag's default, the range its row states is the
flag's bounds, the chart's values.schema.json bounds a value as the flag does, and docs/install.md's
default of each plain value is values.yaml's.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.operator import settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubelock"


def readme_rows(text: str | None = None) -> dict[str, list[str]]:
    """README.md's operator settings: each flag's row, as its cells."""
    text = text if text is not None else (REPO / "README.md").read_text()
    section = text.split("## Operator settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            for flag in re.findall(r"--[a-z][\w-]*", cells[0]):
                rows[flag] = cells
    return rows


def actions(monkeypatch: pytest.MonkeyPatch) -> dict[str, argparse.Action]:
    """The flags with their defaults as the operator has them in an empty environment."""
    for name in [n for n in __import__("os").environ if n.startswith("KUBELOCK_") or n == "KUBECONFIG"]:
        monkeypatch.delenv(name)
    return {s: a for a in settings.flag_parser()._actions for s in a.option_strings if s.startswith("--")}


def bounds(action: argparse.Action) -> tuple[int, int | None] | None:
    """The bounds a number flag's check enforces (`_bounded(low, high)`, `_positive`)."""
    if action.type is settings._positive:
        return (1, None)
    if callable(action.type) and action.type.__name__ == "parse":
        closure = inspect.getclosurevars(action.type).nonlocals
        return (closure["low"], closure["high"])
    return None


def test_the_default_column_is_the_flags_default(monkeypatch: pytest.MonkeyPatch) -> None:
    flags, rows = actions(monkeypatch), readme_rows()
    checked = 0
    for flag, cells in rows.items():
        default = flags[flag].default
        if isinstance(default, bool) or default in (None, []) or flag == "--metrics-port":
            continue  # said in words ("off", "none", "on"); the metrics port's 0 is "off"
        shown = cells[3].split(" (")[0].split(" / ")[-1 if flag == "--metrics-address" else 0]
        value: Any = float(Fraction(shown)) if isinstance(default, float) else type(default)(shown)
        assert value == default, f"README.md gives {flag} the default {shown}; the operator's is {default}"
        checked += 1
    assert checked >= 12


def test_the_range_a_row_states_is_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    flags, rows = actions(monkeypatch), readme_rows()
    for flag, action in flags.items():
        bound = bounds(action)
        if bound is None:
            continue
        meaning = rows[flag][4]
        low, high = bound
        stated = f"{low}–{high}" if high is not None else f"at least {low}"
        assert stated in meaning, f"README.md's row of {flag} does not state its range, {stated}"


def test_the_charts_schema_bounds_a_value_as_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    flags, rows = actions(monkeypatch), readme_rows()
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    checked = 0
    for flag, action in flags.items():
        bound = bounds(action)
        values = re.findall(r"^`(\w+)`$", rows[flag][2]) if bound is not None else []
        if bound is None or not values:
            continue
        entry = schema[values[0]]
        assert (entry.get("minimum"), entry.get("maximum")) == bound, f"values.schema.json's {values[0]} vs {flag}"
        checked += 1
    assert checked >= 6


def _install_defaults() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "install.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w.]+)` \| `([^`|]*)` \|", section, flags=re.M)


@pytest.mark.parametrize(("key", "shown"), _install_defaults())
def test_install_md_gives_values_yaml_defaults(key: str, shown: str) -> None:
    node: Any = yaml.safe_load((CHART / "values.yaml").read_text())
    for part in key.split("."):
        node = node[part]
    assert yaml.safe_load(shown) == node, f"docs/install.md gives {key} the default {shown}; values.yaml {node!r}"


def test_a_wrong_default_or_range_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "README.md").read_text().replace("| 50 | a held lock not renewed", "| 40 | a held lock not renewed")
    assert readme_rows(text)["--stale-after-percent"][3] == "40"
    assert bounds(actions(monkeypatch)["--stale-after-percent"]) == (34, 100)
    assert ("resourceLockTimeout", "1800") in _install_defaults()
