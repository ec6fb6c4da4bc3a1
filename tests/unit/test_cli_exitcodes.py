"""One table of exit codes for every command, mapped from the SDK's errors and documented as it is."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from kubelock.cli import compat
from kubelock.cli.exitcodes import ExitCode, for_error
from kubelock.cli.main import build_parser, main
from kubelock.cli.signals import Stopped
from kubelock.domain.reasons import Reason
from kubelock.sdk.errors import (
    Deadlock,
    Expired,
    Forbidden,
    InvalidInput,
    LockError,
    NotFound,
    Rejected,
    Revoked,
    TimedOut,
    Unreachable,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_codes_are_the_documented_numbers() -> None:
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0, "HELD": 1, "NOT_FOUND": 2, "FORBIDDEN": 3, "INVALID_INPUT": 4, "DEADLOCK": 5,
        "UNREACHABLE": 6, "TIMED_OUT": 7, "LOST": 8, "INTERNAL": 9, "HANGUP": 129, "INTERRUPTED": 130,
        "TERMINATED": 143,
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Rejected("held", holder="b"), ExitCode.HELD),
        (Rejected("bad pod", reason=Reason.POD_NOT_FOUND.value), ExitCode.INVALID_INPUT),
        (Rejected("resting after a lost lease", reason=Reason.LOCK_DELAY.value), ExitCode.HELD),
        (Rejected("over quota", reason=Reason.QUOTA_EXCEEDED.value), ExitCode.INVALID_INPUT),
        (NotFound("none"), ExitCode.NOT_FOUND),
        (Forbidden("no"), ExitCode.FORBIDDEN),
        (InvalidInput("bad"), ExitCode.INVALID_INPUT),
        (Deadlock(["a", "r://x", "a"]), ExitCode.DEADLOCK),
        (Unreachable("down"), ExitCode.UNREACHABLE),
        (TimedOut("slow"), ExitCode.TIMED_OUT),
        (Expired("gone"), ExitCode.LOST),
        (Revoked("broken"), ExitCode.LOST),
        (LockError("anything else"), ExitCode.UNREACHABLE),
        (Stopped(signal.SIGTERM), ExitCode.TERMINATED),
        (Stopped(signal.SIGHUP), ExitCode.HANGUP),
    ],
)
def test_errors_map_to_codes(error: LockError, code: ExitCode) -> None:
    assert for_error(error) == code


def _table_codes(text: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\| (\d+) \| ([^|]+)\|", text, flags=re.M)}


def test_sdk_doc_lists_every_code() -> None:
    documented = _table_codes((DOCS / "sdk.md").read_text())
    assert set(documented) == {c.value for c in ExitCode}


def test_skill_lists_the_lock_outcomes() -> None:
    documented = _table_codes((DOCS / "SKILL.md").read_text())
    assert set(documented) == set(range(9))


@pytest.mark.parametrize(
    ("command", "argv", "words"),
    [
        (compat.rlock, ["--ttl"], "expected one argument"),
        (compat.rlock, [], "the following arguments are required: uri"),
        (compat.runlock, ["x://y", "--nope"], "unrecognized arguments"),
        (compat.rlock_heartbeat, ["x://y", "--nope"], "unrecognized arguments"),
        (compat.rlock, ["x://y", "--permits", "two"], "'two' is not a whole number"),
    ],
)
def test_compat_usage_errors_are_one_json_object(
    command: object, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        command(argv)  # type: ignore[operator]
    assert exited.value.code == ExitCode.INVALID_INPUT
    [line] = capsys.readouterr().out.splitlines()
    payload = json.loads(line)
    assert payload["ok"] is False
    assert payload["error"] == "InvalidInput"
    assert words in payload["message"]


@pytest.mark.parametrize(
    "argv",
    [["no-scheme"], ["x://y", "--ttl", "0"], ["x://y", "--ttl", "99999"], ["x://y", "--wait", "--timeout", "0"],
     ["x://y", "--namespace", "Bad_NS"], ["x://y", "--holder", "two words"], ["x://y", "--timeout", "5"],
     ["x://y", "--shared", "--permits", "2"], ["x://y", "--permits", "0"], ["x://y", "--permits", "1001"]],
)
def test_compat_refuses_bad_input_before_looking_for_a_cluster(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # would be NotConfigured (6) if reached
    assert compat.rlock(argv) == ExitCode.INVALID_INPUT
    payload = json.loads(capsys.readouterr().out)
    assert payload["error"] == "InvalidInput"


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["revoke", "--request", "x://y", "--grace", "-3"], "the grace must be"),
     (["revoke", "--request", "x://y", "--grace", "86401"], "the grace must be"),
     (["revoke", "--request", "x://y", "--reason", "two\nlines"], "one line"),
     (["revoke", "--request", "x://y", "--holder", "two words"], "whitespace"),
     (["unlock", "x://y", "--reason", " "], "a reason is required"),
     (["unlock", "--holder", "two words", "--reason", "stuck"], "whitespace")],
)
def test_admin_commands_refuse_bad_input_before_looking_for_a_cluster(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # would be NotConfigured (6) if reached
    assert main(argv) == ExitCode.INVALID_INPUT
    assert words in capsys.readouterr().err


def test_missing_configuration_fails_closed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert compat.rlock(["github://acme/app/issues/1"]) == ExitCode.UNREACHABLE
    assert json.loads(capsys.readouterr().out)["error"] == "NotConfigured"
    assert main(["acquire", "github://acme/app/issues/1"]) == ExitCode.UNREACHABLE
    assert "no Kubernetes API server configured" in capsys.readouterr().err


def test_kubelock_usage_errors_exit_invalid_input(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["acquire"], ["bogus"], ["unlock", "--reason"], ["graph", "--dot", "--svg"], []):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == ExitCode.INVALID_INPUT, argv
    capsys.readouterr()


def test_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--json", "-n", "agents", "--holder", "h", "status"])
    after = parser.parse_args(["status", "--json", "-n", "agents", "--holder", "h"])
    assert (before.json, before.namespace, before.holder) == (after.json, after.namespace, after.holder)
    unlock = parser.parse_args(["unlock", "--holder", "a", "--holder", "b", "--reason", "stuck"])
    assert unlock.break_holders == ["a", "b"]  # in unlock, --holder selects whose locks to break


def test_graph_svg_without_graphviz_is_refused_before_any_cluster_is_looked_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--svg` cannot succeed without graphviz's `dot`: refused as input (4), with what to install and
    the DOT output to use instead, before the kubeconfig is looked for (no cluster here: that would
    be 6, and fixing it would only lead to this refusal)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert main(["graph", "--svg"]) == ExitCode.INVALID_INPUT
    err = capsys.readouterr().err
    assert "kubelock graph: --svg needs graphviz's `dot`" in err and "install graphviz" in err, err
    assert "leave out --svg for the DOT text" in err and "no Kubernetes API server" not in err, err
    # The DOT text, and JSON (which carries the DOT text), need no graphviz: on to the cluster.
    for argv in (["graph"], ["graph", "--dot"], ["graph", "--svg", "-o", "json"]):
        assert main(argv) == ExitCode.UNREACHABLE, argv
    capsys.readouterr()
    # With a `dot` on PATH, --svg goes on to the cluster too.
    dot = tmp_path / "dot"
    dot.write_text("#!/bin/sh\nexit 0\n")
    dot.chmod(0o755)
    assert main(["graph", "--svg"]) == ExitCode.UNREACHABLE
    assert "no Kubernetes API server configured" in capsys.readouterr().err


def test_a_stop_names_the_claims_it_could_not_withdraw() -> None:
    """A claim whose withdrawal failed stays queued: the message says so instead of "nothing new is held"."""
    assert "withdrawn (nothing new is held)" in Stopped(signal.SIGTERM).message
    note = "claim ns/c was not withdrawn (refused): it stays queued for deploy://x"
    stopped = Stopped(signal.SIGTERM, [note])
    assert stopped.message.startswith(f"stopped by SIGTERM: {note}; ") and "nothing new" not in stopped.message
