"""Claims of several resources on the client side: the input checked before any request, the claim
the SDK writes, the result and lease it returns (a grant and a token per resource), and a lease
lost when any grant is. The API is the recording fake of tests/support, answering as the operator's
status would read; what the operator really decides is tested in tests/integration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubelock.api.types import MAX_RESOURCES
from kubelock.cli import compat, output
from kubelock.cli import main as cli
from kubelock.cli import run as runner
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, lock_name, normalise
from kubelock.kube import paths
from kubelock.kube.config import Credentials
from kubelock.sdk import AsyncLockClient, InvalidInput, Revoked
from kubelock.sdk.admin import Explanation, summarise
from kubelock.sdk.graph import build
from kubelock.sdk.model import ClaimInfo, LockInfo
from kubelock.sdk.targets import Target, listed
from tests.support.fakeapi import Body, FakeApi

NOWHERE = Credentials(server="https://127.0.0.1:1", namespace="agents")
HOLDER = "user:alice/w1"
A, B = "github://acme/app/issues/42", "git://acme/app/fix-42"


# ---- the input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uris", "words"),
    [
        ([], "at least one URI"),
        ([f"r://{i}" for i in range(MAX_RESOURCES + 1)], f"at most {MAX_RESOURCES} resources, not 17"),
        ([A, "GitHub://acme/app/issues/42/"], f"name {A} more than once"),
        ([A, B, A, B], f"name {B}, {A} more than once"),
        ([A, "no-scheme"], "has no '://'"),
        ([A, 7], "must be a string"),
        (b"r://1", "list of URIs, not bytes"),
        ({A: 1}, "list of URIs, not dict"),
    ],
)
def test_bad_lists_are_refused_with_what_is_wrong(uris: Any, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        Target.of(uris)


def test_a_lone_string_is_not_a_list_for_lock_all() -> None:
    with pytest.raises(InvalidInput, match="give a list of URIs"):
        listed(A)
    assert listed((A, B)) == [A, B]


def test_the_claim_name_covers_the_set_not_its_order() -> None:
    both = Target.of([A, B])
    assert both.several and both.resources == (B, A)  # normalised, sorted
    assert both.claim_name(HOLDER) == Target.of([B, A]).claim_name(HOLDER) == Target.of([B + "/", A]).claim_name(HOLDER)
    assert both.claim_name(HOLDER) != Target.of([A, "git://acme/app/fix-43"]).claim_name(HOLDER)
    assert both.claim_name(HOLDER) != both.claim_name("user:bob/w1")
    # One URI, alone or in a list, is the claim `lock(uri)` has always made.
    assert Target.of(A).claim_name(HOLDER) == Target.of([A]).claim_name(HOLDER) == claim_name(HOLDER, A)
    assert Target.of([A]).spec() == {"resource": A} and both.spec() == {"resources": [A, B]}
    assert both.matches([A, B]) and both.matches([B, A]) and not both.matches([A])
    assert both.label == f"{B} and {A}"


# ---- the claim written, the result returned ---------------------------------------------------


def status(resources: list[str], *, granted: list[str] | None = None, token: int = 10) -> Body:
    """A Held status as the operator writes it for a claim of several: grants sorted by resource,
    no top-level lockName or fencingToken."""
    now = datetime.now(UTC)
    chosen = sorted(granted if granted is not None else resources)
    return {
        "phase": "Held", "reason": "Granted", "holder": HOLDER,
        "acquiredAt": now.isoformat(), "renewedAt": now.isoformat(),
        "expiresAt": (now + timedelta(seconds=60)).isoformat(),
        "grants": [{"resource": r, "lockName": lock_name(r), "fencingToken": token + i, "mode": "Exclusive",
                    "permits": 1} for i, r in enumerate(chosen)],
    }


def granting(api: FakeApi, **kw: Any) -> None:
    """The create answers with the claim already Held (as if the operator had been quick)."""

    async def create(path: str, body: Body | None, default: Any) -> Body:
        assert body is not None
        listed = body["spec"].get("resources") or [body["spec"]["resource"]]
        body["status"] = status([normalise(u) for u in listed], **kw)
        return default()  # type: ignore[no-any-return]

    api.react("create", create)


def client_on(api: FakeApi) -> AsyncLockClient:
    client = AsyncLockClient(credentials=NOWHERE, holder=HOLDER, env={}, retries=0)
    api.close = client.kube.close  # type: ignore[attr-defined]  # the real client's session is closed
    client.kube = api  # type: ignore[assignment]
    return client


async def test_acquire_all_writes_one_claim_and_returns_a_grant_per_resource() -> None:
    api = FakeApi()
    granting(api)
    client = client_on(api)
    result = await client.acquire_all([A, B], ttl=60)
    name = Target.of([A, B]).claim_name(HOLDER)
    assert api.writes == [("create", paths.claims("agents"))]
    stored = api.objects[paths.claims("agents", name)]
    assert stored["spec"]["resources"] == [A, B] and "resource" not in stored["spec"]
    assert result.ok and result.claim_name == name
    assert result.fencing_token is None and result.lock_name is None  # each resource has its own
    assert result.fencing_tokens == {B: 10, A: 11}
    assert [(g.resource, g.lock_name) for g in result.grants] == [(B, lock_name(B)), (A, lock_name(A))]
    assert result.resources == (B, A)
    await client.close()


async def test_a_held_status_with_part_of_the_set_is_not_held_and_is_given_back() -> None:
    api = FakeApi()
    granting(api, granted=[A])
    client = client_on(api)
    with pytest.raises(Revoked, match=f"without a grant on {B}"):
        await client.acquire_all([A, B], wait=False)
    assert ("delete", paths.claims("agents", Target.of([A, B]).claim_name(HOLDER))) in api.writes
    await client.close()


async def test_bad_input_sends_no_request() -> None:
    api = FakeApi()
    client = client_on(api)
    for call in (
        lambda: client.acquire_all([A, normalise(A) + "/"]),
        lambda: client.acquire_all(A),
        lambda: client.try_acquire_all([]),
        lambda: client.release([A, A]),
        lambda: client.heartbeat([f"r://{i}" for i in range(17)]),
    ):
        with pytest.raises(InvalidInput):
            await call()
    with pytest.raises(InvalidInput):
        client.lock_all([A, A])
    assert api.requests == []
    await client.close()


# ---- the lease ------------------------------------------------------------------------------


class Watched:
    """A watch of the claim whose events the test sends."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Body] = asyncio.Queue()

    async def __call__(self, path: str, **params: Any) -> AsyncIterator[Body]:
        while True:
            yield await self.events.get()


async def test_a_lease_of_several_is_lost_when_any_grant_is() -> None:
    api = FakeApi()
    granting(api)
    watched = Watched()
    api.watch = watched  # type: ignore[attr-defined]
    client = client_on(api)
    losses: list[Exception] = []
    async with client.lock_all([A, B], ttl=60, on_lost=losses.append) as lease:
        assert lease.fencing_token is None
        assert lease.fencing_tokens == {B: 10, A: 11}
        assert [g.resource for g in lease.grants] == [B, A]
        assert lease.resources == (B, A)
        name = lease.claim_name
        body = api.objects[paths.claims("agents", name)]
        partial = {**body, "status": status([A, B], granted=[B])}  # the grant on A is gone
        await watched.events.put({"type": "MODIFIED", "object": partial})
        await asyncio.wait_for(lease.lost.wait(), 5)
        assert isinstance(lease.error, Revoked) and A in lease.error.message
        assert losses == [lease.error]
    assert ("delete", paths.claims("agents", name)) in api.writes
    await client.close()


def test_a_single_lease_keeps_its_token_and_gains_the_map() -> None:
    info = ClaimInfo.from_body({
        "metadata": {"name": "c", "namespace": "agents", "uid": "u", "resourceVersion": "5"},
        "spec": {"resource": A, "holder": HOLDER},
        "status": {"phase": "Held", "fencingToken": 7, "lockName": "l"},  # an operator writing no grants
    })
    assert info.tokens == {A: 7} and [(g.resource, g.lock_name) for g in info.held_grants] == [(A, "l")]


# ---- the command's environment and the CLI's checks --------------------------------------------


def claim_of(resources: list[str], tokens: dict[str, int]) -> ClaimInfo:
    spec: Body = {"resources": resources} if len(resources) > 1 else {"resource": resources[0]}
    grants = [{"resource": r, "lockName": lock_name(r), "fencingToken": t} for r, t in sorted(tokens.items())]
    top = {"fencingToken": tokens[resources[0]]} if len(resources) == 1 else {}
    return ClaimInfo.from_body({
        "metadata": {"name": "c", "namespace": "agents", "uid": "u", "resourceVersion": "5"},
        "spec": {**spec, "holder": HOLDER},
        "status": {"phase": "Held", "grants": grants, **top},
    })


def test_the_command_environment_of_one_and_of_several_resources() -> None:
    inherited = {"PATH": "/bin", runner.ENV_TOKEN: "99", runner.ENV_RESOURCE: "old://x"}
    one = runner.child_environment(claim_of([A], {A: 7}), inherited)
    assert (one[runner.ENV_TOKEN], one[runner.ENV_RESOURCE]) == ("7", A)
    assert json.loads(one[runner.ENV_TOKENS]) == {A: 7}
    several = runner.child_environment(claim_of([A, B], {A: 7, B: 3}), inherited)
    assert runner.ENV_TOKEN not in several and runner.ENV_RESOURCE not in several  # also when inherited
    assert json.loads(several[runner.ENV_TOKENS]) == {A: 7, B: 3}
    assert (several[runner.ENV_CLAIM], several[runner.ENV_HOLDER], several["PATH"]) == ("c", HOLDER, "/bin")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["acquire", A, "GITHUB://acme/app/issues/42"], "more than once"),
        (["release", A, A], "more than once"),
        (["acquire", *(f"r://{i}" for i in range(17))], "at most 16"),
        (["run", A, A, "--", "true"], "more than once"),
        (["run", A, B, "--ttl", "10", "--renew-deadline", "10", "--", "true"], "shorter than the TTL"),
    ],
)
def test_the_cli_refuses_bad_lists_before_looking_for_a_cluster(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert cli.main([*argv[:1], "-o", "json", *argv[1:]]) == ExitCode.INVALID_INPUT
    payload = json.loads(capsys.readouterr().out)
    assert payload["error"] == "InvalidInput" and words in payload["message"]


def test_rlock_refuses_a_repeated_resource_with_one_json_object(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert compat.rlock([A, B, "Git://acme/app/fix-42/"]) == ExitCode.INVALID_INPUT
    [line] = capsys.readouterr().out.splitlines()
    payload = json.loads(line)
    assert (payload["ok"], payload["error"], payload["resource"], payload["resources"]) == (
        False, "InvalidInput", None, [B, B, A])
    assert f"{B} more than once" in payload["message"]


# ---- the views of every claim: graph, status ------------------------------------------------------


def pending(holder: str, *resources: str) -> ClaimInfo:
    spec: Body = {"resources": list(resources)} if len(resources) > 1 else {"resource": resources[0]}
    return ClaimInfo.from_body({
        "metadata": {"name": f"{holder}-c", "namespace": "agents", "uid": "u"},
        "spec": {**spec, "holder": holder, "wait": True},
        "status": {"phase": "Pending"},
    })


def test_a_waiting_claim_of_several_waits_for_each_resource() -> None:
    graph = build([pending("agent-a", A, B)], [])
    assert graph.waits == (("agent-a", B), ("agent-a", A))
    locks = [LockInfo.from_body({"metadata": {"name": lock_name(r), "namespace": "agents", "uid": r},
                                 "spec": {"resource": r, "holder": "agent-b", "fencingToken": 1}}) for r in (A, B)]
    assert [s.waiters for s in summarise(locks, [pending("agent-a", A, B), pending("agent-c", A)])] == [1, 2]


def test_a_claim_of_several_in_the_list_and_why_output() -> None:
    held = claim_of([A, B], {A: 7, B: 3})
    shown = output.claim(held)
    assert shown["resources"] == [B, A] and shown["fencingTokens"] == {A: 7, B: 3}
    table = output.claims_table([held])
    assert f"{B},{A}" in table and "3,7" in table
    why = output.explanation_text(Explanation(claim=held, lock=None, ahead=()))
    assert f"resource:  {B} and {A}" in why


def test_a_refusal_of_several_says_none_was_taken() -> None:
    message = output.held_message(f"{B} and {A}", "agent-b", None, "rlock --wait", several=True)
    assert message == (f"agent-b holds at least one of {B} and {A}, so none was taken; try again later, or queue "
                       "for all of them with rlock --wait")


def test_a_command_without_double_dash_is_not_taken_for_a_uri(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert cli.main(["run", A, "true"]) == ExitCode.INVALID_INPUT
    assert "the command goes after `--`" in capsys.readouterr().err
