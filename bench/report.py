"""The pure part of the benchmark: percentiles, round summaries, targets, and the JSON and Markdown
forms of the result. No I/O here, so all of it is unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (NumPy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Summary:
    """A figure over several rounds: the median of the rounds' p50s and of their p99s."""

    p50: float
    p99: float
    max: float
    rounds: int
    samples: int


def summarise(rounds: Sequence[Sequence[float]], scale: float = 1.0) -> Summary:
    """Each round's p50 and p99, then their medians across rounds (a noisy machine's outliers then
    move one round's figure, not the result); `scale` converts units (1000: seconds → ms)."""
    kept = [r for r in rounds if r]
    if not kept:
        raise ValueError("no samples in any round")
    return Summary(
        p50=median([percentile(r, 50) for r in kept]) * scale,
        p99=median([percentile(r, 99) for r in kept]) * scale,
        max=max(max(r) for r in kept) * scale,
        rounds=len(kept),
        samples=sum(len(r) for r in kept),
    )


@dataclass(frozen=True)
class Target:
    """`value <= factor x anchor + offset` (or `>=` with `at_least`); the text is what the table shows."""

    text: str
    factor: float = 1.0
    offset: float = 0.0
    at_least: bool = False

    def bound(self, anchor: float | None) -> float | None:
        if self.factor and anchor is None:
            return None
        return self.factor * (anchor or 0.0) + self.offset

    def met(self, value: float | None, anchor: float | None) -> bool | None:
        bound = self.bound(anchor)
        if value is None or bound is None:
            return None
        return value >= bound if self.at_least else value <= bound


@dataclass(frozen=True)
class Row:
    """One figure of the table: a metric's p50, p99, rate ... for one flavour and one parameter."""

    id: int
    name: str
    unit: str
    value: float | None
    anchor: float | None = None
    anchor_name: str = ""
    target: Target | None = None
    flavour: str = "kubelock"
    detail: str = ""
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.anchor is None or self.anchor <= 0:
            return None
        return self.value / self.anchor

    @property
    def met(self) -> bool | None:
        if self.error is not None:
            return False
        return None if self.target is None else self.target.met(self.value, self.anchor)

    def to_json(self) -> dict[str, Any]:
        bound = self.target.bound(self.anchor) if self.target else None
        return {
            "id": self.id,
            "name": self.name,
            "unit": self.unit,
            "value": _round(self.value),
            "anchor": _round(self.anchor),
            "anchor_name": self.anchor_name,
            "ratio": _round(self.ratio),
            "target": self.target.text if self.target else None,
            "bound": _round(bound),
            "met": self.met,
            "flavour": self.flavour,
            "detail": self.detail,
            "error": self.error,
        }


def out_of_time(seconds: float, *, budget: bool, load: float) -> str:
    """Why a block that ran out of time lost its figures, and what to do: asyncio's TimeoutError says
    nothing by itself (its message is empty), and a loaded machine is the usual cause."""
    limit = "what was left of the run's time budget" if budget else "its time limit"
    return (f"timed out: the block did not finish within {seconds:.0f} s ({limit}) at a load average of "
            f"{load:.1f}; give the blocks more time with --patience 3 (make bench BENCH_ARGS='--patience 3') "
            "or run on a quieter machine")


def error_rows(id_: int, names: Sequence[str], error: BaseException | str, flavour: str = "kubelock") -> list[Row]:
    """Rows for figures a failed scenario could not produce: the run goes on and says why."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return [Row(id_, name, "", None, flavour=flavour, error=text[:300]) for name in names]


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return round(value, digits)


@dataclass
class Document:
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    anchors: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "metrics": [row.to_json() for row in self.rows],
            "anchors": self.anchors,
            "resources": self.resources,
        }


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit in ("cycles/s",) or abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[value]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The Markdown table of a result document (the JSON form), one row per metric entry."""
    machine = doc.get("machine") or {}
    lines = [
        "# kubelock benchmark",
        "",
        ", ".join(f"{k}: {v}" for k, v in machine.items() if not isinstance(v, dict | list)),
        "",
        "| # | metric | flavour | value | anchor | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in doc.get("metrics", []):
        if m.get("error"):
            value = f"error: {m['error']}"
        else:
            value = fmt(m.get("value"), m.get("unit", ""))
            if m.get("detail"):
                value += f" ({m['detail']})"
        anchor = fmt(m.get("anchor"), m.get("unit", "")) if m.get("anchor") is not None else "—"
        if m.get("anchor_name") and m.get("anchor") is not None:
            anchor = f"{m['anchor_name']} = {anchor}"
        ratio = f"{m['ratio']:.2f}" if m.get("ratio") is not None else "—"
        cells = [str(m.get("id", "")), m.get("name", ""), m.get("flavour", ""), value, anchor, ratio,
                 m.get("target") or "—", _met(m.get("met"))]
        lines.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    anchors = doc.get("anchors") or {}
    if anchors:
        lines += ["", "## Anchors (same run, same API server, same client)", "",
                  "| anchor | p50 | p99 | unit | samples |", "|---|---|---|---|---|"]
        for name, a in anchors.items():
            lines.append(
                f"| {_cell(name)} | {fmt(a.get('p50'))} | {fmt(a.get('p99'))} | {a.get('unit', '')} "
                f"| {a.get('samples', '')} |"
            )
    resources = doc.get("resources") or []
    if resources:
        lines += ["", "## CPU seconds and API requests per block", "",
                  "| block | flavour | units | CPU s (per unit) | requests per unit |", "|---|---|---|---|---|"]
        for r in resources:
            units = r.get("units") or 0
            cpu = ", ".join(
                f"{k} {v:.2f}" + (f" ({1000 * v / units:.2f} ms)" if units else "")
                for k, v in (r.get("cpu") or {}).items()
            )
            per = ", ".join(f"{k} {v:.2f}" for k, v in (r.get("requests_per_unit") or {}).items())
            lines.append(f"| {_cell(r.get('block', ''))} | {r.get('flavour', '')} | {units} | {_cell(cpu)} "
                         f"| {_cell(per)} |")
    return "\n".join(lines) + "\n"
