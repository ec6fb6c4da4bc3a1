"""The SDK refuses bad input before sending anything, with a message that says what to write."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading

import pytest

from kubelock.kube.config import Credentials
from kubelock.sdk import AsyncLockClient, InvalidInput, LockClient, Unreachable, validation
from kubelock.sdk.sync import _LoopThread
from kubelock.sdk.targets import Target

# Nothing listens on port 1: a request would fail with Unreachable, so InvalidInput proves that none was sent.
NOWHERE = Credentials(server="https://127.0.0.1:1", namespace="default")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "between 1 and 86400"),
        (86401, "between 1 and 86400"),
        (-5, "between 1 and 86400"),
        (1.5, "whole number"),
        (math.nan, "whole number"),
        ("60", "whole number"),
        (True, "whole number"),
    ],
)
def test_ttl_bounds_and_type(value: object, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validation.ttl(value)
    assert words in caught.value.message
    assert caught.value.reason == "InvalidInput"


@pytest.mark.parametrize("value", [1, 1800, 86400, None])
def test_valid_ttls(value: int | None) -> None:
    assert validation.ttl(value) == value


@pytest.mark.parametrize("value", [0, -1, 86401, math.inf, math.nan, "5", False])
def test_timeout_bounds_and_type(value: object) -> None:
    with pytest.raises(InvalidInput):
        validation.timeout(value)


@pytest.mark.parametrize("value", [0.5, 1, 86400])
def test_valid_timeouts(value: float) -> None:
    assert validation.timeout(value) == float(value)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("", "must not be empty"),
        ("no-scheme", "has no '://'"),
        ("1abc://x", "scheme"),
        ("github://", "nothing after"),
        ("github://a b", "whitespace"),
        ("github://a\nb", "control"),
        ("github://" + "x" * 1100, "at most 1024"),
    ],
)
def test_resource_rules(uri: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validation.resource(uri)
    assert words in caught.value.message


@pytest.mark.parametrize("name", ["", "UPPER", "-x", "x" * 64, "a_b"])
def test_namespace_rules(name: str) -> None:
    with pytest.raises(InvalidInput):
        validation.namespace(name)


def test_bad_holder_and_namespace_are_refused_at_construction() -> None:
    with pytest.raises(InvalidInput):
        AsyncLockClient(credentials=NOWHERE, holder="has space")
    with pytest.raises(InvalidInput):
        AsyncLockClient(credentials=NOWHERE, namespace="Not_A_Namespace")


async def test_requests_are_validated_before_they_are_sent() -> None:
    async with AsyncLockClient(credentials=NOWHERE, holder="agent-a", retries=0) as client:
        for call in (
            client.try_acquire("nope"),
            client.try_acquire("github://x", ttl=0),
            client.acquire("github://x", timeout=0),
            client.acquire("github://x", wait=False, timeout=5),
            client.acquire("github://x", mode="Shared", permits=2),
            client.acquire("github://x", mode="Read"),
            client.try_acquire("github://x", permits=0),
            # Only looks like a priority or a flag: the claim's model would coerce each (True: priority 1).
            client.acquire("github://x", priority=True),  # type: ignore[arg-type]
            client.acquire("github://x", priority="5"),  # type: ignore[arg-type]
            client.acquire("github://x", priority=1.0),  # type: ignore[arg-type]
            client.acquire("github://x", priority=1001),
            client.acquire("github://x", wait="no"),  # type: ignore[arg-type]
            client.release("bad uri"),
            client.heartbeat("also bad"),
            client.get(""),
        ):
            with pytest.raises(InvalidInput):
                await call
        # A valid request does go out, and an unreachable server is an error, never a success.
        with pytest.raises(Unreachable):
            await client.try_acquire("github://x")


def test_missing_configuration_is_an_error() -> None:
    with pytest.raises(Unreachable) as caught:
        LockClient(kubeconfig="/nonexistent/kubeconfig")
    assert caught.value.reason == "NotConfigured"


def test_interrupting_a_blocking_call_cancels_its_task_and_waits_for_cleanup() -> None:
    runner = _LoopThread()
    cleaned = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.1)  # cleanup that takes a moment (as withdrawing a claim does)
            cleaned.set()

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(forever())
        assert cleaned.is_set()
    finally:
        timer.cancel()
        runner.stop()


def test_an_exclusive_claim_is_sent_as_ever_and_a_shared_or_counted_one_says_so() -> None:
    from kubelock.sdk.identity import Identity

    client = AsyncLockClient(credentials=NOWHERE, holder="agent-a", retries=0)
    ident = Identity(holder="agent-a", namespace="default")
    plain = client._claim_body(ident, "c", Target.of("github://x"), wait=True, ttl=None, wait_timeout=None)
    assert "mode" not in plain["spec"] and "permits" not in plain["spec"]
    one = Target.of("github://x")
    shared = client._claim_body(ident, "c", one, wait=True, ttl=None, wait_timeout=None, mode="Shared")
    assert (shared["spec"]["mode"], shared["spec"]["permits"]) == ("Shared", 1)
    counted = client._claim_body(ident, "c", one, wait=True, ttl=None, wait_timeout=None, permits=3)
    assert (counted["spec"]["mode"], counted["spec"]["permits"]) == ("Exclusive", 3)
    several = client._claim_body(ident, "c", Target.of(["github://x", "Git://y/"]), wait=True, ttl=None,
                                 wait_timeout=None)
    assert several["spec"]["resources"] == ["github://x", "Git://y/"] and "resource" not in several["spec"]
    alone = client._claim_body(ident, "c", Target.of(["github://x"]), wait=True, ttl=None, wait_timeout=None)
    assert alone["spec"] == plain["spec"]  # a list of one is the claim of that one resource
    asyncio.run(client.close())


@pytest.mark.parametrize(
    ("value", "words"),
    [(True, "whole number"), ("5", "whole number"), (1.0, "whole number"), (1001, "between -1000 and 1000"),
     (-1001, "between -1000 and 1000")],
)
def test_priority_bounds_and_type(value: object, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        validation.priority(value)


@pytest.mark.parametrize("value", [-1000, 0, 1000])
def test_valid_priorities(value: int) -> None:
    assert validation.priority(value) == value
