"""#4's split of an expiry's time (bench/expiry_ab.py): a Prometheus histogram read from an exposition
(summed over the series a label filter keeps) and the bucket a quantile falls in. bench/ is a
directory of scripts, not a package: it is put on the path as `bench/run.py` has it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
expiry_ab: Any = importlib.import_module("expiry_ab")

EXPOSITION = """\
# HELP apiserver_request_duration_seconds Response latency
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{resource="lockclaims",subresource="status",verb="PUT",le="0.1"} 3
apiserver_request_duration_seconds_bucket{resource="lockclaims",subresource="status",verb="PUT",le="1"} 9
apiserver_request_duration_seconds_bucket{resource="lockclaims",subresource="status",verb="PUT",le="+Inf"} 10
apiserver_request_duration_seconds_sum{resource="lockclaims",subresource="status",verb="PUT"} 4.5
apiserver_request_duration_seconds_count{resource="lockclaims",subresource="status",verb="PUT"} 10
apiserver_request_duration_seconds_bucket{resource="lockclaims",subresource="",verb="PUT",le="0.1"} 50
apiserver_request_duration_seconds_count{resource="lockclaims",subresource="",verb="PUT"} 50
apiserver_request_duration_seconds_sum{resource="lockclaims",subresource="",verb="PUT"} 1
kubelock_expiry_lateness_seconds_bucket{le="0.5"} 1.0
kubelock_expiry_lateness_seconds_bucket{le="+Inf"} 2.0
kubelock_expiry_lateness_seconds_count 2.0
kubelock_expiry_lateness_seconds_sum 3.25
"""


def test_a_histogram_is_read_for_the_series_the_labels_keep() -> None:
    puts = expiry_ab.histogram(EXPOSITION, "apiserver_request_duration_seconds", expiry_ab.STATUS_PUT)
    assert puts == {"le=0.1": 3, "le=1": 9, "le=+Inf": 10, "sum": 4.5, "count": 10}
    own = expiry_ab.histogram(EXPOSITION, "kubelock_expiry_lateness_seconds")
    assert own == {"le=0.5": 1, "le=+Inf": 2, "count": 2, "sum": 3.25}


def test_a_quantile_is_the_bound_of_its_bucket() -> None:
    puts = expiry_ab.histogram(EXPOSITION, "apiserver_request_duration_seconds", expiry_ab.STATUS_PUT)
    assert expiry_ab.bucket_quantile(puts, 0.3) == 0.1
    assert expiry_ab.bucket_quantile(puts, 0.5) == 1.0
    assert expiry_ab.bucket_quantile(puts, 0.99) == float("inf")
    assert expiry_ab.bucket_quantile({"count": 0.0}, 0.5) is None


def test_the_split_of_a_round() -> None:
    puts = expiry_ab.histogram(EXPOSITION, "apiserver_request_duration_seconds", expiry_ab.STATUS_PUT)
    own = expiry_ab.histogram(EXPOSITION, "kubelock_expiry_lateness_seconds")
    split = expiry_ab._split(puts, own)
    assert split == {"status_put_count": 10, "status_put_mean_ms": 450.0, "operator_share_mean_ms": 1625.0,
                     "operator_share_p50_le_s": 0.5, "operator_share_p99_le_s": float("inf")}
    assert expiry_ab._split({}, {}) == {}  # a tree without the operator's histogram: nothing of it
