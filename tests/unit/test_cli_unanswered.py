"""An acquire or a run that no operator answers says so after a few seconds, once, on stderr: "waiting
for a kubelock operator to act on claim NS/NAME (is it running and watching NS?)", rather than nothing
until the decision timeout (60 s) fails it `OperatorUnavailable`. stdout stays the result's alone.
The SDK's `lock()` passes its `on_unanswered` on, and by default logs the same words as a warning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from kubelock.cli import main as cli
from kubelock.cli.exitcodes import ExitCode
from kubelock.sdk import client as sdk_client
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import Unreachable
from kubelock.sdk.model import ClaimInfo

URI = "github://acme/app/issues/42"
LINE = ("kubelock: waiting for a kubelock operator to act on claim agents/c-1 (is it running and watching "
        "agents?)\n")


def body(phase: str | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {"metadata": {"name": "c-1", "namespace": "agents", "uid": "u1", "resourceVersion": "7"},
                            "spec": {"resource": URI, "holder": "user:alice/laptop"}}
    if phase is not None:
        made["status"] = {"phase": phase, "reason": "Granted", "message": "held", "holder": "user:alice/laptop",
                          "fencingToken": 3, "expiresAt": "2099-01-01T00:00:00Z"}
    return made


def made() -> ClaimInfo:
    return ClaimInfo.from_body(body())


class NoOperator:
    """A client whose claim nobody answers: the SDK calls `on_unanswered` (here at once, and again to
    show that the command says it once), then gives up as after its decision timeout."""

    def __init__(self, *_: Any, **__: Any) -> None:
        self.calls: list[str] = []

    async def __aenter__(self) -> NoOperator:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def _unanswered(self, on_unanswered: Any) -> None:
        on_unanswered(made())
        on_unanswered(made())
        raise Unreachable("no kubelock operator acted on claim agents/c-1 within 60s; is the operator running "
                          "and watching namespace agents?", reason="OperatorUnavailable")

    async def try_acquire(self, uri: str, ttl: Any = None, *, on_unanswered: Any = None, **_: Any) -> Any:
        self.calls.append("try")
        await self._unanswered(on_unanswered)

    async def acquire(self, uri: str, *, on_unanswered: Any = None, **_: Any) -> Any:
        self.calls.append("wait")
        await self._unanswered(on_unanswered)

    def lock(self, uri: str, *, on_unanswered: Any = None, **_: Any) -> Any:
        self.calls.append("run")
        outer = self

        class Lease:
            async def __aenter__(self) -> Any:
                if on_unanswered is not None:  # None: the SDK's default (a log warning), never stderr
                    await outer._unanswered(on_unanswered)
                raise Unreachable("no kubelock operator acted on claim agents/c-1 within 60s",
                                  reason="OperatorUnavailable")

        return Lease()


@pytest.mark.parametrize("argv", [["acquire", URI], ["acquire", "--wait", URI], ["acquire", "-o", "json", URI],
                                  ["run", URI, "--", "true"], ["run", "--wait", "-o", "json", URI, "--", "true"]])
def test_the_command_says_once_on_stderr_what_it_waits_for(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "make_client", NoOperator)
    assert cli.main(argv) == ExitCode.UNREACHABLE
    out, err = capsys.readouterr()
    assert err.count(LINE) == 1, err
    assert "waiting for a kubelock operator" not in out
    if "json" in argv:
        answer = json.loads(out)  # stdout is the JSON answer alone
        assert answer["error"] == "OperatorUnavailable", answer


async def _follow(bodies: list[tuple[float, dict[str, Any] | None]]) -> AsyncGenerator[dict[str, Any] | None, None]:
    for delay, body in bodies:
        await asyncio.sleep(delay)
        yield body


def _decide(monkeypatch: pytest.MonkeyPatch, bodies: list[tuple[float, dict[str, Any] | None]]) -> list[ClaimInfo]:
    """Runs the SDK's wait for the operator's decision on a fake watch; returns what `on_unanswered` got."""
    monkeypatch.setattr(sdk_client, "UNANSWERED_NOTICE_SECONDS", 0.2)
    monkeypatch.setattr(sdk_client, "follow_claim", lambda *_, **__: _follow(bodies))
    client = AsyncLockClient.__new__(AsyncLockClient)
    client.decision_timeout = 30.0
    client.kube = None  # type: ignore[assignment]  # the watch is the fake above
    client._seen = {}
    told: list[ClaimInfo] = []

    async def go() -> None:
        decided = await client._await_decision(made(), wait=False, wait_timeout=None, on_unanswered=told.append)
        assert decided.phase is not None
        await asyncio.sleep(0.4)  # past the notice's moment: a timer left behind would fire now

    asyncio.run(go())
    return told


def test_the_sdk_calls_on_unanswered_once_when_the_operator_is_silent_past_the_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = _decide(monkeypatch, [(0.6, body("Held"))])
    assert [(t.namespace, t.name) for t in told] == [("agents", "c-1")]


def test_the_sdk_says_nothing_when_the_operator_answers_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _decide(monkeypatch, [(0.01, body("Held"))]) == []


class Unanswering:
    """The SDK's client with no operator: `acquire_claim` calls `on_unanswered` as `_await_decision`
    would after the notice's seconds (tested above), then fails as after the decision timeout."""

    async def acquire_claim(self, uri: str, *, on_unanswered: Any = None, **_: Any) -> ClaimInfo:
        if on_unanswered is not None:
            on_unanswered(made())
        raise Unreachable("no kubelock operator acted on claim agents/c-1 within 60s", reason="OperatorUnavailable")


def _enter(client: AsyncLockClient, **kwargs: Any) -> None:
    async def go() -> None:
        async with client.lock(URI, **kwargs):
            raise AssertionError("no operator: the lock is never held")

    with pytest.raises(Unreachable):
        asyncio.run(go())


def _unanswering(monkeypatch: pytest.MonkeyPatch) -> AsyncLockClient:
    client = AsyncLockClient.__new__(AsyncLockClient)
    monkeypatch.setattr(client, "acquire_claim", Unanswering().acquire_claim)
    return client


def test_lock_warns_once_in_the_log_by_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`client.lock()` used to wait out the decision timeout in silence: by default it now logs what it
    waits for, once, as a warning on the `kubelock.sdk` logger."""
    client = _unanswering(monkeypatch)
    with caplog.at_level("WARNING", logger="kubelock.sdk"):
        _enter(client)
    said = [r for r in caplog.records if "waiting for a kubelock operator" in r.getMessage()]
    assert [(r.levelname, r.name, r.getMessage()) for r in said] == [
        ("WARNING", "kubelock.sdk", LINE.removeprefix("kubelock: ").rstrip("\n"))]


def test_lock_and_lock_all_pass_on_unanswered_to_the_acquire(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    client = _unanswering(monkeypatch)
    told: list[ClaimInfo] = []
    with caplog.at_level("WARNING", logger="kubelock.sdk"):
        _enter(client, on_unanswered=told.append)

        async def go() -> None:
            async with client.lock_all([URI, "git://acme/app/fix-42"], on_unanswered=told.append):
                raise AssertionError("never held")

        with pytest.raises(Unreachable):
            asyncio.run(go())
    assert [(t.namespace, t.name) for t in told] == [("agents", "c-1")] * 2
    assert not [r for r in caplog.records if "waiting for a kubelock operator" in r.getMessage()]
