"""Shared by every test tier (unit, integration, e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INTEGRATION_DIR = REPO_ROOT / "tests" / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: runs against the local control plane (every test under tests/integration); "
        "deselect with -m 'not integration'",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Marked by location, so that `-m "not integration"` never starts a control plane.
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds crds/, config/, examples/)."""
    return REPO_ROOT
