"""`on_unanswered` hooks of the synchronous client that raise, block, or call back into the client,
against the real API server with no operator watching the namespace (so the claim stays unanswered).

The hook is a notice: whatever it does, the acquire must end as it would without it (here TimedOut
at the caller's own timeout, the claim withdrawn). On the client's event loop a blocking hook stalled
the wait, and one that called the same client waited for the loop it blocked: the acquire never
returned. The synchronous client therefore runs the hook in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from kubernetes.client import ApiClient

from kubelock.sdk import LockClient
from kubelock.sdk.client import UNANSWERED_NOTICE_SECONDS
from kubelock.sdk.errors import TimedOut
from kubelock.sdk.model import ClaimInfo
from tests.support.claims import Locks, wait_until

Cluster = Any
WAIT = 8.0  # the caller's own timeout, past the notice (5 s)
# How long the acquire may take past WAIT on two loaded cores (its withdrawal is one more request).
SLACK = 60.0


def acquire_with(control_plane: Cluster, namespace: str, make_hook: Any) -> tuple[BaseException | None, float]:
    """Runs a sync acquire with the hook `make_hook(client)` in a thread of its own; returns what it
    raised and how long it took, or fails the test when it has not returned WAIT + SLACK seconds later."""
    outcome: list[BaseException | None] = []
    took: list[float] = []
    client = LockClient(kubeconfig=str(control_plane.kubeconfig), namespace=namespace, instance="hooked")
    hook = make_hook(client)
    holder: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            client.acquire("deploy://unanswered-hook", wait=True, timeout=WAIT, on_unanswered=hook)
            outcome.append(None)
        except BaseException as error:  # reported to the test
            outcome.append(error)
        took.append(time.monotonic() - started)

    holder["thread"] = threading.Thread(target=run, daemon=True)
    holder["thread"].start()
    holder["thread"].join(WAIT + SLACK)
    assert not holder["thread"].is_alive(), f"the acquire has not returned {WAIT + SLACK:g} s after it began"
    client.close()
    return outcome[0], took[0]


def claims_left(admin_api: ApiClient, namespace: str) -> list[str]:
    return [item["metadata"]["name"] for item in Locks(admin_api, namespace).claims()]


def test_a_hook_that_calls_back_into_the_client_does_not_hang_the_acquire(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str
) -> None:
    seen: list[str] = []

    def make_hook(client: LockClient) -> Any:
        def hook(info: ClaimInfo) -> None:
            # A caller that asks its client who it is, to say so in its notice: on the loop thread this
            # waited for the loop it held, and neither ever went on.
            seen.append(client.whoami())
        return hook

    error, _ = acquire_with(control_plane, iso_ns, make_hook)
    assert isinstance(error, TimedOut), error
    assert len(seen) == 1
    wait_until(lambda: claims_left(admin_api, iso_ns) == [], "the claim withdrawn", timeout=SLACK)


def test_a_hook_that_blocks_does_not_hold_up_the_acquire(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str
) -> None:
    release = threading.Event()
    called = threading.Event()

    def hook(info: ClaimInfo) -> None:
        called.set()
        release.wait(WAIT + 2 * SLACK)  # a prompt nobody answers, a log handler stuck on a full pipe

    try:
        error, took = acquire_with(control_plane, iso_ns, lambda client: hook)
        assert called.is_set()
        assert isinstance(error, TimedOut), error
        assert not release.is_set()  # it returned while the hook still blocked
        assert took >= WAIT
    finally:
        release.set()
    wait_until(lambda: claims_left(admin_api, iso_ns) == [], "the claim withdrawn", timeout=SLACK)


def test_a_hook_that_raises_is_logged_and_the_acquire_ends_as_it_would(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(info: ClaimInfo) -> None:
        raise RuntimeError("the notice's own bug")

    with caplog.at_level(logging.WARNING, logger="kubelock.sdk"):
        error, took = acquire_with(control_plane, iso_ns, lambda client: hook)
    assert isinstance(error, TimedOut), error
    assert took >= max(WAIT, UNANSWERED_NOTICE_SECONDS)
    assert any("on_unanswered hook" in r.getMessage() and "the notice's own bug" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    wait_until(lambda: claims_left(admin_api, iso_ns) == [], "the claim withdrawn", timeout=SLACK)
