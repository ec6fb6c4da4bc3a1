"""The view log (`kubelock.view`): silent unless its logger is at debug level; then one line when a
claim enters and leaves the view and one per decision, naming the claim as the chaos runs' explain
tool looks for it."""

from __future__ import annotations

import logging

import pytest

from kubelock.operator import viewlog
from tests.support.arbitration import claim

BODY = {"metadata": {"name": "c1", "namespace": "a", "uid": "u1", "resourceVersion": "7",
                     "creationTimestamp": "2026-11-26T21:00:00Z"}, "spec": {"resource": "r://x"}}


def test_nothing_is_logged_at_the_default_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    viewlog.entered(BODY, "ADDED")
    viewlog.decided(("a", "r://x"), [claim("c1", 7)], [], [])
    assert caplog.records == []


def test_entering_leaving_and_decisions_name_the_claim(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kubelock.view")
    viewlog.entered(BODY, "ADDED")
    viewlog.decided(("a", "r://x"), [claim("c1", 7)], [], [])
    viewlog.left(BODY, known=True)
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == [
        "claim a/c1 entered the view (ADDED)",
        "decided r://x in a on claims [c1:-:7] grants []",
        "claim a/c1 left the view (DELETED)",
    ]
    assert "version 7" in caplog.records[0].getMessage()
    assert caplog.records[1].getMessage().endswith("[c1:-:7] grants []: nothing")
