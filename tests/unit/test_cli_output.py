"""What the commands print: JSON shapes built as objects (never pasted together) and human tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from kubelock.cli import output
from kubelock.domain.reasons import QUEUE_ADVICE, REST_ADVICE, Phase
from kubelock.sdk.admin import Explanation, LockStatus
from kubelock.sdk.errors import Deadlock, Expired, NotFound, Rejected, Revoked, TimedOut, Unreachable
from kubelock.sdk.model import AcquireResult, ClaimInfo, GrantInfo, LockInfo, ReleaseResult, RenewResult

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
NOW = T0.timestamp() + 65


def held_result(resource: str = "github://acme/app/issues/42") -> AcquireResult:
    return AcquireResult(
        ok=True, resource=resource, holder="agent-a", namespace="agents", claim_name="c", lock_name="l",
        fencing_token=7, acquired_at=T0, expires_at=T0.replace(minute=34), held_since=T0,
        resources=(resource,), grants=(GrantInfo(resource, "l", 7),),
    )


def test_acquired_shape() -> None:
    assert output.acquired(held_result()) == {
        "ok": True,
        "resource": "github://acme/app/issues/42",
        "holder": "agent-a",
        "namespace": "agents",
        "fencingToken": 7,
        "acquiredAt": "2026-01-02T03:04:05.123456Z",
        "expiresAt": "2026-01-02T03:34:05.123456Z",
        "claim": "c",
        "lock": "l",
        "grants": [{"resource": "github://acme/app/issues/42", "fencingToken": 7, "lock": "l"}],
        "fencingTokens": {"github://acme/app/issues/42": 7},
    }


def test_acquired_shape_of_several_resources() -> None:
    """The same keys: no single resource, token or lock; a grant and a token per resource."""
    result = AcquireResult(
        ok=True, resource="a://1 and b://2", holder="agent-a", namespace="agents", claim_name="c",
        acquired_at=T0, expires_at=T0, held_since=T0, resources=("a://1", "b://2"),
        grants=(GrantInfo("a://1", "l1", 7), GrantInfo("b://2", "l2", 3)),
    )
    shown = output.acquired(result)
    assert list(shown) == list(output.acquired(held_result()))
    assert (shown["resource"], shown["fencingToken"], shown["lock"]) == (None, None, None)
    assert shown["grants"] == [{"resource": "a://1", "fencingToken": 7, "lock": "l1"},
                               {"resource": "b://2", "fencingToken": 3, "lock": "l2"}]
    assert shown["fencingTokens"] == {"a://1": 7, "b://2": 3}
    assert output.tokens_text(result.fencing_tokens) == "fencing tokens a://1=7, b://2=3"
    assert output.tokens_text(held_result().fencing_tokens) == "fencing token 7"


def test_conflict_and_failure_shapes_of_several_resources() -> None:
    result = AcquireResult(ok=False, resource="a://1 and b://2", holder="agent-b", namespace="n", claim_name="c",
                           held_since=T0, message="held", resources=("a://1", "b://2"))
    expected = {"ok": False, "error": "HeldByAnotherHolder", "resource": None, "holder": "agent-b",
                "heldSince": "2026-01-02T03:04:05.123456Z", "message": "held", "resources": ["a://1", "b://2"]}
    assert output.acquired(result) == expected
    error = Rejected("held", holder="agent-b", held_since="2026-01-02T03:04:05.123456Z")
    assert output.failure(error, ["B://2/", "a://1"]) == expected  # normalised and sorted, as a result lists them
    assert output.failure(NotFound("none"), ["a://1", "b://2"]) == {
        "ok": False, "error": "NotFound", "resource": None, "resources": ["a://1", "b://2"], "message": "none"}
    assert output.failure(NotFound("none"), ["a://1"]) == output.failure(NotFound("none"), "a://1")


def test_conflict_shape_from_a_result_and_from_an_error() -> None:
    result = AcquireResult(ok=False, resource="deploy://x", holder="agent-b", namespace="n", claim_name="c",
                           held_since=T0, message="held")
    expected = {"ok": False, "error": "HeldByAnotherHolder", "resource": "deploy://x", "holder": "agent-b",
                "heldSince": "2026-01-02T03:04:05.123456Z", "message": "held"}
    assert output.acquired(result) == expected
    error = Rejected("held", holder="agent-b", held_since="2026-01-02T03:04:05.123456Z")
    assert output.failure(error, "deploy://x") == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            Deadlock(["a", "r://1", "b", "r://2", "a"]),
            {"ok": False, "error": "DeadlockDetected", "resource": "r://2", "deadlock": True,
             "cycle": ["a", "r://1", "b", "r://2", "a"], "message": "deadlock: a → r://1 → b → r://2 → a"},
        ),
        (
            TimedOut("gave up", holder="b"),
            {"ok": False, "error": "WaitTimedOut", "resource": "r://2", "timedOut": True, "holder": "b",
             "message": "gave up"},
        ),
        (
            Expired("lease ran out"),
            {"ok": False, "error": "LeaseExpired", "resource": "r://2", "lost": True, "message": "lease ran out"},
        ),
        (
            Revoked("broken", reason="LockBroken"),
            {"ok": False, "error": "LockBroken", "resource": "r://2", "lost": True, "message": "broken"},
        ),
        (NotFound("none"), {"ok": False, "error": "NotFound", "resource": "r://2", "message": "none"}),
        (Unreachable("down"), {"ok": False, "error": "Unreachable", "resource": "r://2", "message": "down"}),
    ],
)
def test_failure_shapes(error: Exception, expected: dict[str, Any]) -> None:
    assert output.failure(error, "r://2") == expected  # type: ignore[arg-type]


def test_released_and_renewed_shapes() -> None:
    assert output.released(ReleaseResult("r://1", "c", Phase.HELD, ("r://1",))) == {
        "ok": True, "resource": "r://1", "released": True, "previousPhase": "Held", "claim": "c"
    }
    assert output.renewed(RenewResult("r://1", "c", 3, T0, True, ("r://1",), {"r://1": 3})) == {
        "ok": True, "resource": "r://1", "fencingToken": 3, "expiresAt": "2026-01-02T03:04:05.123456Z",
        "confirmed": True, "claim": "c", "fencingTokens": {"r://1": 3},
    }
    both = ("r://1", "r://2")
    assert output.released(ReleaseResult("r://1 and r://2", "c", Phase.HELD, both)) == {
        "ok": True, "resource": None, "resources": ["r://1", "r://2"], "released": True, "previousPhase": "Held",
        "claim": "c",
    }
    assert output.renewed(RenewResult("r://1 and r://2", "c", None, T0, True, both, {"r://1": 3, "r://2": 9})) == {
        "ok": True, "resource": None, "fencingToken": None, "expiresAt": "2026-01-02T03:04:05.123456Z",
        "confirmed": True, "claim": "c", "fencingTokens": {"r://1": 3, "r://2": 9},
    }


def test_crafted_values_cannot_inject_fields() -> None:
    crafted = 'github://x","ok":true,"holder":"me'
    text = output.dumps(output.failure(Rejected("held", holder='b","ok":true'), crafted))
    parsed = json.loads(text)
    assert parsed["ok"] is False
    assert parsed["resource"] == crafted
    assert parsed["holder"] == 'b","ok":true'
    assert "\n" not in output.dumps({"message": "two\nlines"})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"), (90061, "1d01h"), (-5, "-5s")],
)
def test_durations(seconds: int, text: str) -> None:
    assert output.duration(seconds) == text


def test_status_table() -> None:
    lock = LockInfo(name="l", namespace="agents", uid="u", resource_version="1", resource="deploy://api-prod",
                    holder="agent-a", claim_name="c", fencing_token=12, acquired_at=T0, renewed_at=T0,
                    expires_at=datetime.fromtimestamp(T0.timestamp() + 120, UTC), lease_seconds=120, annotations={})
    expired = LockInfo(name="m", namespace="agents", uid="v", resource_version="1", resource="github://a/b",
                       holder="agent-b", claim_name="d", fencing_token=13, acquired_at=T0, renewed_at=T0,
                       expires_at=T0, lease_seconds=1, annotations={})
    table = output.status_table(
        [LockStatus(lock, waiters=2, stale=False), LockStatus(expired, waiters=0, stale=True)],
        all_namespaces=True, now=NOW,
    )
    assert table.splitlines() == [
        "NAMESPACE   RESOURCE            HOLDER    TOKEN   AGE     EXPIRES IN   WAITERS   STALE",
        "agents      deploy://api-prod   agent-a   12      1m05s   55s          2",
        "agents      github://a/b        agent-b   13      1m05s   expired      0         stale",
    ]


def test_claims_table_and_claim_json() -> None:
    info = ClaimInfo.from_body(
        {
            "metadata": {"name": "c1", "namespace": "n", "uid": "u", "resourceVersion": "5"},
            "spec": {"resource": "GitHub://a/b/", "holder": "agent-a", "wait": True},
            "status": {"phase": "Pending", "reason": "Queued", "queuePosition": 2, "holder": "agent-b",
                       "unknownField": "ignored"},
        }
    )
    assert info.resource == "github://a/b"  # normalised
    assert output.claims_table([info], now=NOW).splitlines()[1].split() == [
        "github://a/b", "agent-a", "Pending", "-", "-", "2", "c1"
    ]
    as_json = output.claim(info)
    assert (as_json["phase"], as_json["queuePosition"], as_json["currentHolder"]) == ("Pending", 2, "agent-b")


def test_wide_status_table_adds_renewal_lease_lock_and_claim() -> None:
    lock = LockInfo(name="l", namespace="agents", uid="u", resource_version="1", resource="deploy://api-prod",
                    holder="team/agent:a", claim_name="c", fencing_token=12, acquired_at=T0, renewed_at=T0,
                    expires_at=datetime.fromtimestamp(T0.timestamp() + 120, UTC), lease_seconds=120, annotations={})
    header, row = output.status_table([LockStatus(lock, 0, False)], all_namespaces=False, now=NOW, wide=True) \
        .splitlines()
    assert header.split()[-4:] == ["RENEWED", "LEASE", "LOCK", "CLAIM"]
    assert row.split()[1] == "team/agent:a"  # a holder with '/' and ':' stays one column
    assert row.split()[-5:] == ["1m05s", "ago", "2m00s", "l", "c"]


def test_wide_claims_table_adds_holder_reason_and_message() -> None:
    info = ClaimInfo.from_body({
        "metadata": {"name": "c1", "namespace": "n", "uid": "u", "resourceVersion": "5"},
        "spec": {"resource": "deploy://x", "holder": "agent-a", "wait": True},
        "status": {"phase": "Pending", "reason": "Queued", "queuePosition": 1, "holder": "agent-b",
                   "message": "waiting"},
    })
    header, row = output.claims_table([info], now=NOW, wide=True).splitlines()
    assert header.split()[-4:] == ["HELD", "BY", "REASON", "MESSAGE"]
    assert row.split()[-3:] == ["agent-b", "Queued", "waiting"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_render_json_and_yaml_carry_the_same_object(fmt: str) -> None:
    payload = {"ok": True, "resource": "github://acme/app/issues/42", "holder": "ägent: 7", "n": [1, 2]}
    text = output.render(payload, fmt)
    assert text.endswith("\n")
    assert (json.loads(text) if fmt == "json" else yaml.safe_load(text)) == payload


def test_held_message_names_the_commands_own_way_to_queue() -> None:
    message = output.held_message("deploy://x", "agent-b", "2026-01-02T03:04:05.123456Z", "rlock --wait")
    assert message == ("deploy://x is held by agent-b since 2026-01-02T03:04:05.123456Z; try again later, "
                       "or queue for it with rlock --wait")
    result = AcquireResult(ok=False, resource="deploy://x", holder="agent-b", namespace="n", claim_name="c",
                           held_since=T0, message="…" + QUEUE_ADVICE)
    assert output.acquired(result, message)["message"] == message


def claim_in(phase: str, reason: str, *, wait: bool, message: str = "") -> ClaimInfo:
    return ClaimInfo.from_body({
        "metadata": {"name": "bob-x", "namespace": "n", "uid": "u", "resourceVersion": "5"},
        "spec": {"resource": "deploy://x", "holder": "bob", "wait": wait},
        "status": {"phase": phase, "reason": reason, "message": message},
    })


def test_why_on_a_revoked_claim_says_what_happened_not_how_it_asked() -> None:
    claim = claim_in("Revoked", "LockBroken", wait=True, message="the lock on deploy://x was broken by lockadmin: x")
    text = output.explanation_text(Explanation(claim=claim, lock=None, ahead=()), now=NOW)
    assert "  holder:    bob\n" in text + "\n"
    assert "(waits" not in text
    assert "  outcome:   the lock was taken away: stop working on the resource" in text


def test_why_on_a_queued_claim_says_it_waits() -> None:
    claim = claim_in("Pending", "Queued", wait=True)
    text = output.explanation_text(Explanation(claim=claim, lock=None, ahead=()), now=NOW)
    assert "  holder:    bob (waits in the queue)" in text
    assert "outcome" not in text


def test_why_on_a_held_claim_asked_back_says_by_whom_why_and_until_when() -> None:
    # Far ahead of the wall clock (a claim whose lease ran out is not held) and of NOW.
    deadline = datetime(2099, 1, 2, 3, 5, 0, tzinfo=UTC)
    claim = ClaimInfo.from_body({
        "metadata": {"name": "bob-x", "namespace": "n", "uid": "u", "resourceVersion": "5"},
        "spec": {"resource": "deploy://x", "holder": "bob"},
        "status": {"phase": "Held", "reason": "Granted", "lockName": "deploy-x", "fencingToken": 7,
                   "acquiredAt": "2099-01-02T03:00:00Z", "renewedAt": "2099-01-02T03:00:00Z",
                   "expiresAt": "2099-01-02T03:30:00Z",
                   "revocation": {"requestedAt": "2099-01-02T03:04:00Z", "requestedBy": "lockadmin",
                                  "graceSeconds": 60, "deadline": "2099-01-02T03:05:00Z", "reason": "hotfix"}},
    })
    assert claim.held
    now = deadline.timestamp() - 59
    text = output.explanation_text(Explanation(claim=claim, lock=None, ahead=()), now=now)
    assert ("  asked back: by lockadmin: hotfix; release it by 2099-01-02T03:05:00.000000Z (in 59s), or the lock is "
            "broken then") in text
    assert output.claim(claim)["revocation"] == {
        "requestedBy": "lockadmin", "reason": "hotfix", "graceSeconds": 60,
        "requestedAt": "2099-01-02T03:04:00.000000Z", "deadline": "2099-01-02T03:05:00.000000Z"}
    assert output.claim(claim_in("Pending", "Queued", wait=True))["revocation"] is None


def test_held_message_keeps_the_operators_sentence_and_swaps_only_its_advice() -> None:
    # A resource of capacity 2 held by two holders, and one reserved for a claim queued ahead: only
    # the operator knows either, and the command's own sentence would name one holder as the only one.
    for told, said in [
        ("deploy://x is held by user:a/1 and 1 other holder since 2026-01-02T03:04:05Z; "
         + QUEUE_ADVICE,
         "deploy://x is held by user:a/1 and 1 other holder since 2026-01-02T03:04:05Z; "
         "try again later, or queue for it with kubelock acquire --wait"),
        ("deploy://x is reserved for the claim of user:c/1 queued ahead for several resources; "
         + QUEUE_ADVICE,
         "deploy://x is reserved for the claim of user:c/1 queued ahead for several resources; "
         "try again later, or queue for it with kubelock acquire --wait"),
    ]:
        assert output.held_message("deploy://x", "user:a/1", "2026-01-02T03:04:05Z", "kubelock acquire --wait",
                                   operator_message=told) == said
    several = output.held_message("a://1 and a://2", "user:a/1", None, "rlock --wait", several=True,
                                  operator_message="not all of a://1, a://2 are free (a://2 held by user:a/1); "
                                                   + QUEUE_ADVICE)
    assert several == ("not all of a://1, a://2 are free (a://2 held by user:a/1); try again later, "
                       "or queue for all of them with rlock --wait")


def test_a_try_lock_turned_away_by_a_rest_is_told_the_commands_way_to_queue() -> None:
    # The operator's sentence for a claim written as YAML ends with REST_ADVICE (wait: true): a command
    # line cannot set that, so the commands say their own --wait instead (the rest of the sentence,
    # until when and why, stays).
    told = ("deploy://x rests until 2026-01-02T03:04:15Z: the lock of user:a/1 was broken at "
            "2026-01-02T03:04:05Z (lock-delay of LockPolicy deploys); " + REST_ADVICE)
    said = told.removesuffix(REST_ADVICE) + "try again then, or queue for it with kubelock acquire --wait"
    assert output.in_command_words(told, "kubelock acquire --wait") == said
    assert output.in_command_words(told, None) == told
    assert output.in_command_words("deploy://x: something else", "rlock --wait") == "deploy://x: something else"
    payload = output.failure(Rejected(told, reason="LockDelay"), "deploy://x", wait_command="rlock --wait")
    assert payload == {"ok": False, "error": "LockDelay", "resource": "deploy://x",
                       "message": told.removesuffix(REST_ADVICE) + "try again then, or queue for it with rlock --wait"}
