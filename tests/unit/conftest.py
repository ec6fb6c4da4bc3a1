"""Fixtures shared by unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelock.testbed import MissingBinariesError, find_binaries


@pytest.fixture(scope="module")
def helm() -> Path:
    """The helm binary of the test bed's cache, for tests that render the chart (skipped without it)."""
    try:
        return find_binaries(("helm",), kwok_stages=False) / "helm"
    except MissingBinariesError as error:
        pytest.skip(f"helm is needed to render the chart: {error}")
