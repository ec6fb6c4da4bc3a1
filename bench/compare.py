"""Compare two benchmark runs: `python bench/compare.py BEFORE.json AFTER.json`.

Prints a Markdown table of kubelock's rows present in both runs (value and ratio to the anchor of the
same run, before and after) and whether each target is met. Ratios are what to compare across runs:
each is measured against the floor of its own run, so a busier machine moves both sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import options


def _rows(path: Path) -> dict[tuple[int, str], dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return {(m["id"], m["name"]): m for m in document["metrics"] if m.get("flavour") == "kubelock"}


def _figure(metric: dict[str, Any] | None) -> str:
    if metric is None or metric.get("value") is None:
        return "—"
    value = f"{metric['value']:.3g} {metric['unit']}"
    return f"{value} ({metric['ratio']:.2f}×)" if metric.get("ratio") is not None else value


def _met(metric: dict[str, Any] | None) -> str:
    if metric is None or metric.get("met") is None:
        return "—"
    return "yes" if metric["met"] else "**no**"


def table(before: Path, after: Path) -> str:
    old, new = _rows(before), _rows(after)
    lines = [
        "| # | metric | target | before (ratio) | after (ratio) | met after |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(new, key=lambda k: k[0]):
        metric = new[key]
        lines.append(
            f"| {key[0]} | {key[1]} | {metric.get('target') or '—'} | {_figure(old.get(key))} | "
            f"{_figure(metric)} | {_met(metric)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    print(table(args.before, args.after))


if __name__ == "__main__":
    main()
