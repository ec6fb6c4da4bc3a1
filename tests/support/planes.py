"""A control plane of a test module's own (a bed with quotas, etcd members, workloads ...)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kubelock.testbed import ControlPlane, MissingBinariesError


@contextmanager
def started(plane: ControlPlane) -> Iterator[ControlPlane]:
    """Start `plane` for a fixture and stop it afterwards. Missing binaries fail the test with their
    message alone (it says how to install them); a traceback would only hide it."""
    try:
        plane.start()
    except MissingBinariesError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()
