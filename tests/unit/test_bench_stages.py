"""bench/acquire_stages.py's cut of one sample into stages by the operator's stamps (pure: stamps in,
stage times out). bench/ is a directory of scripts, not a package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import acquire_stages  # noqa: E402  # after bench/ is on the path

SAMPLE = {"kind": "acquire", "name": "a-1", "resource": "bench://stages/a-1", "lock": "lk-1",
          "t0": 100.000, "created": 100.010, "held": 100.040}


def stamps(name: str = "a-1", resource: str = "bench://stages/a-1", lock: str = "lk-1",
           shift: float = 0.0) -> list[dict[str, Any]]:
    at = 100.0 + shift
    return [
        {"k": "ev", "noun": "claim", "type": "ADDED", "name": name, "t0": at + 0.008, "t1": at + 0.0081},
        {"k": "run", "resource": resource, "t0": at + 0.009, "t1": at + 0.030},
        {"k": "decide", "resource": resource, "t0": at + 0.0091, "t1": at + 0.0092},
        {"k": "req", "m": "POST", "p": "/apis/kubelock.dev/v1alpha1/namespaces/ns/resourcelocks", "name": lock,
         "t0": at + 0.0093, "t1": at + 0.016, "s": 200, "bytes": 485},
        {"k": "req", "m": "PUT", "p": f"/apis/kubelock.dev/v1alpha1/namespaces/ns/lockclaims/{name}/status",
         "name": None, "t0": at + 0.0162, "t1": at + 0.030, "s": 200, "bytes": 1179},
        {"k": "gc", "gen": 0, "t0": at + 0.020, "t1": at + 0.021},
    ]


def test_a_sample_is_cut_at_each_stamp() -> None:
    cut = acquire_stages.stages(SAMPLE, stamps())
    assert cut["create"] == pytest.approx(0.010)
    assert cut["event"] == pytest.approx(0.008)
    assert cut["queue"] == pytest.approx(0.001)
    assert cut["decide"] == pytest.approx(0.0001)
    assert cut["grant"] == pytest.approx(0.016 - 0.0092)
    assert cut["lock_request"] == pytest.approx(0.016 - 0.0093)
    assert cut["held_write"] == pytest.approx(0.014)
    assert cut["seen"] == pytest.approx(0.010)
    assert cut["total"] == pytest.approx(0.040)
    assert cut["requests"] == {"POST resourcelocks 200": 1, "PUT lockclaims/status 200": 1}
    assert cut["gc_ms"] == pytest.approx(1.0)


def test_another_claims_stamps_are_not_taken_for_the_samples() -> None:
    other = stamps(name="a-2", resource="bench://stages/a-2", lock="lk-2")
    cut = acquire_stages.stages(SAMPLE, other)
    assert cut["event"] is None and cut["grant"] is None and cut["held_write"] is None
    # Its requests fall in the window all the same: they are counted beside the sample.
    assert cut["requests"] == {"POST resourcelocks 200": 1, "PUT lockclaims/status 200": 1}


def test_stamps_outside_the_samples_window_are_left_out() -> None:
    cut = acquire_stages.stages(SAMPLE, stamps(shift=1.0))
    assert cut["event"] is None and cut["requests"] == {} and cut["gc_ms"] == 0


def test_a_grant_added_to_a_lock_is_its_patch() -> None:
    rows = stamps()
    rows[3] = {**rows[3], "m": "PATCH", "p": rows[3]["p"] + "/lk-1", "name": None, "bytes": 3392}
    cut = acquire_stages.stages(SAMPLE, rows)
    assert cut["lock_request"] == pytest.approx(0.016 - 0.0093)
    assert cut["lock_body_bytes"] == 3392
    assert cut["requests"] == {"PATCH resourcelocks 200": 1, "PUT lockclaims/status 200": 1}


def test_the_summary_takes_the_slowest_tenth_by_total() -> None:
    rows = [{"total": t / 1000, **dict.fromkeys(acquire_stages.STAGES[:-1], 0.001),
             "status_request": 0.001, "lock_request": 0.001} for t in range(1, 21)]
    summary = acquire_stages.summary(rows)
    assert summary["n"] == 20
    assert summary["median_ms"]["total"] == pytest.approx(10.5)
    assert summary["slowest_tenth_ms"]["total"] == pytest.approx(19.5)
    assert [r["total"] for r in summary["slowest"]] == [19.0, 20.0]
