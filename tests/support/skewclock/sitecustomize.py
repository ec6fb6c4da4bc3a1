"""A wall clock `KUBELOCK_TEST_CLOCK_OFFSET` seconds off (positive: ahead), for an operator process
in tests/integration/test_clock_skew.py, as on a node whose NTP is broken.

`tests.support.operator.OperatorProcess(path=(this directory,))` puts it on the operator's
PYTHONPATH; Python imports `sitecustomize` at start, before any of the operator's modules. It shifts
`time.time` and `time.time_ns`, which are what the operator's clock and its logs read. `datetime.now`
is left alone: kubelock's operator never reads it (its stamps are formatted from `time.time()`), and
a replaced `datetime` class would break the `isinstance` checks of the libraries that build datetimes
in C. The monotonic clock, the event loop's, is not a wall clock and is left alone too; so is
OpenSSL's own reading of the clock for certificate validity.
Never part of the operator: a test aid only.
"""

from __future__ import annotations

import os
import time

OFFSET = float(os.environ.get("KUBELOCK_TEST_CLOCK_OFFSET") or 0)

if OFFSET:
    _time, _time_ns = time.time, time.time_ns
    _offset_ns = round(OFFSET * 1e9)

    def _skewed_time() -> float:
        return _time() + OFFSET

    def _skewed_time_ns() -> int:
        return _time_ns() + _offset_ns

    time.time = _skewed_time
    time.time_ns = _skewed_time_ns
