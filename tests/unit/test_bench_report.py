"""The pure parts of the benchmark (bench/report.py): percentiles, round summaries, targets, the
JSON shape of a result and its Markdown table. bench/ is a directory of scripts, not a package."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


report = _load()
Row, Target, Document = report.Row, report.Target, report.Document


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        (list(map(float, range(1, 101))), 99, 99.01),  # NumPy's linear method
        ([10.0, 20.0], 25, 12.5),
    ],
)
def test_percentile_interpolates_between_closest_ranks(values: list[float], q: float, expected: float) -> None:
    assert report.percentile(values, q) == pytest.approx(expected)


def test_percentile_rejects_no_values_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        report.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        report.percentile([1.0], 101)


def test_summarise_takes_the_median_of_each_rounds_percentiles() -> None:
    rounds = [[0.010, 0.012, 0.100], [0.011, 0.013, 0.014], [0.009, 0.010, 0.011], []]
    s = report.summarise(rounds, scale=1000)
    # per-round p50s: 12, 13, 10 ms -> median 12; the empty round is ignored
    assert s.p50 == pytest.approx(12.0)
    assert s.rounds == 3
    assert s.samples == 9
    assert s.max == pytest.approx(100.0)
    # one round's outlier moves only that round's p99
    p99s = sorted(report.percentile(r, 99) * 1000 for r in rounds if r)
    assert s.p99 == pytest.approx(p99s[1])


def test_summarise_without_samples_fails() -> None:
    with pytest.raises(ValueError, match="no samples"):
        report.summarise([[], []])


@pytest.mark.parametrize(
    ("target", "value", "anchor", "bound", "met"),
    [
        (Target("p50 <= 3 x O", 3), 14.9, 5.0, 15.0, True),
        (Target("p50 <= 3 x O", 3), 15.1, 5.0, 15.0, False),
        (Target("p50 <= 3 x O", 3), 15.0, 5.0, 15.0, True),  # the bound itself is met
        (Target("p99 <= 2 x W + 50 ms", 2, 50), 60.0, 6.0, 62.0, True),
        (Target("p99 <= 2 x W + 50 ms", 2, 50), 63.0, 6.0, 62.0, False),
        (Target("≥ 0.4 x T(N)", 0.4, at_least=True), 41.0, 100.0, 40.0, True),
        (Target("≥ 0.4 x T(N)", 0.4, at_least=True), 39.0, 100.0, 40.0, False),
        (Target("<= 5 writes", 0, 5), 5.0, None, 5.0, True),  # no anchor needed
        (Target("<= 5 writes", 0, 5), 6.0, None, 5.0, False),
        (Target("p50 <= 3 x O", 3), 10.0, None, None, None),  # anchor missing: undecided
    ],
)
def test_target_bound_and_met(
    target: Any, value: float, anchor: float | None, bound: float | None, met: bool | None
) -> None:
    assert target.bound(anchor) == (pytest.approx(bound) if bound is not None else None)
    assert target.met(value, anchor) is met


def test_row_ratio_and_met() -> None:
    row = Row(1, "uncontended acquire p50", "ms", 12.0, 4.0, "O p50", Target("p50 <= 3 x O", 3))
    assert row.ratio == pytest.approx(3.0)
    assert row.met is True
    assert Row(1, "x", "ms", 12.0, 0.0).ratio is None  # a zero anchor gives no ratio
    assert Row(1, "x", "ms", None, 4.0).ratio is None
    assert Row(1, "x", "ms", 12.0).met is None  # no target: informative only


def test_error_rows_are_failed_rows_with_the_reason() -> None:
    rows = report.error_rows(4, ["TTL expiry lateness"], TimeoutError("gave up after 60 s"))
    assert len(rows) == 1
    row = rows[0]
    assert row.value is None
    assert row.met is False
    assert row.error == "TimeoutError: gave up after 60 s"
    assert row.to_json()["error"] == "TimeoutError: gave up after 60 s"


def _document() -> dict[str, Any]:
    doc = Document(machine={"cpu": "test cpu", "cores": 2, "mode": "quick"})
    doc.rows = [
        Row(1, "uncontended acquire p50 (Held seen)", "ms", 15.123456, 5.0, "O p50", Target("p50 <= 3 x O", 3),
            "kubelock", "3 rounds"),
        Row(1, "uncontended acquire p99 (Held seen)", "ms", 30.0, 7.0, "O p99", Target("p99 <= 4 x O", 4)),
        Row(2, "cycles/s N=50", "cycles/s", 120.0, 400.0, "T(50)", Target("≥ 0.4 x T(N)", 0.4, at_least=True)),
        Row(2, "API writes per cycle N=50", "writes", 6.0, None, "", Target("<= 5 writes per cycle", 0, 5)),
        *report.error_rows(8, ["restart"], "RuntimeError: operator | did not start"),
    ]
    doc.anchors = {"O": {"p50": 5.0, "p99": 7.0, "unit": "ms", "samples": 36}}
    doc.resources = [
        {"block": "1 acquire", "flavour": "kubelock", "units": 36, "cpu": {"operator (kubelock)": 0.36},
         "requests_per_unit": {"POST lockclaims": 1.0}}
    ]
    data: dict[str, Any] = doc.to_json()
    return data


def test_document_json_shape() -> None:
    data = _document()
    json.dumps(data)  # serialisable as it is
    assert set(data) >= {"machine", "metrics"}
    metrics = data["metrics"]
    assert isinstance(metrics, list)
    keys = {"id", "name", "unit", "value", "anchor", "ratio", "target", "met"}
    assert all(keys <= set(m) for m in metrics)
    first = metrics[0]
    assert first["id"] == 1
    assert first["value"] == 15.1235  # rounded to 4 decimals
    assert first["ratio"] == pytest.approx(3.0247, abs=1e-4)
    assert first["target"] == "p50 <= 3 x O"
    assert first["bound"] == 15.0
    assert first["met"] is False
    assert metrics[1]["met"] is False  # 30 > 4 x 7
    assert metrics[2]["met"] is False  # 120 < 0.4 x 400
    assert metrics[3]["met"] is False and metrics[3]["anchor"] is None
    assert metrics[4]["error"].startswith("RuntimeError")


def test_markdown_has_one_table_row_per_metric_entry() -> None:
    data = _document()
    text = report.render_markdown(data)
    lines = text.splitlines()
    header = lines.index("| # | metric | flavour | value | anchor | ratio | target | met |")
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == len(data["metrics"])
    assert rows[0].startswith("| 1 | uncontended acquire p50 (Held seen) | kubelock | 15.1 ms (3 rounds) |")
    assert "O p50 = 5.00 ms" in rows[0]
    assert "| 3.02 |" in rows[0]
    assert rows[0].endswith("| **no** |")
    assert "error: RuntimeError: operator \\| did not start" in rows[4]  # pipes escaped
    assert "| O | 5.00 | 7.00 | ms | 36 |" in text
    assert "operator (kubelock) 0.36 (10.00 ms)" in text
    assert "cpu: test cpu, cores: 2, mode: quick" in text


def test_fmt_picks_precision_by_magnitude() -> None:
    assert report.fmt(None) == "—"
    assert report.fmt(3.14159, "ms") == "3.14 ms"
    assert report.fmt(31.4159, "ms") == "31.4 ms"
    assert report.fmt(314.159, "ms") == "314 ms"
    assert report.fmt(12.6, "cycles/s") == "13 cycles/s"


def test_a_block_out_of_time_says_so_and_what_to_do() -> None:
    # asyncio's TimeoutError has an empty message: the row read "error: TimeoutError: " and left a
    # newcomer to guess. It names the time, the limit that ended it, the load, and the way out.
    text = report.out_of_time(25.0, budget=False, load=14.6)
    assert text == ("timed out: the block did not finish within 25 s (its time limit) at a load average of 14.6; "
                    "give the blocks more time with --patience 3 (make bench BENCH_ARGS='--patience 3') "
                    "or run on a quieter machine")
    assert "(what was left of the run's time budget)" in report.out_of_time(7.0, budget=True, load=2.0)
    row = report.error_rows(6, ["deadlock reported"], text)[0]
    assert row.error == text[:300]
