"""Usage mistakes a newcomer makes, answered with what to write instead (exit 4, before any
request): a duration given to --wait, a unit on a number of seconds, a command's option written
before the command."""

from __future__ import annotations

import pytest

from kubelock.cli.usage import seconds_hint
from tests.support.usage import kubelock_output_when_parsed, kubelock_usage_error, no_cluster, rlock_usage_error

WAIT = "--wait takes no value (it only says to queue): give the longest wait with --timeout SECONDS, for example "


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["acquire", "a://b", "--wait=30s"], WAIT + "--wait --timeout 30"),
        (["acquire", "a://b", "--wait", "5m"], WAIT + "--wait --timeout 300"),
        (["acquire", "--wait", "30", "a://b"], WAIT + "--wait --timeout 30"),
        (["run", "a://b", "--wait=10", "--", "sleep", "1"], WAIT + "--wait --timeout 10"),
        (["acquire", "a://b", "--wait", "--timeout", "5m"], "'5m' is not a number of seconds; write 300 (a plain "
         "number of seconds, no unit)"),
        (["acquire", "a://b", "--ttl", "1h"], "'1h' is not a whole number of seconds; write 3600"),
        (["--ttl", "5", "acquire", "a://b"], "--ttl is an option of the command, so it goes after the command's "
         "name: kubelock acquire ... --ttl 5 (only the connection options, -o and --json may come before it)"),
        (["--wait", "acquire", "a://b"], "--wait is an option of the command"),
        (["-A", "status"], "-A is an option of the command, so it goes after the command's name: kubelock status"),
        (["--reason=x", "unlock", "a://b"], "kubelock unlock ... --reason=x"),
    ],
)
def test_kubelock_says_what_to_write_instead(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_cluster(monkeypatch)
    assert words in kubelock_usage_error(argv, capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "agents", "-ojson", "--kubeconfig=/x", "--as", "acquire", "status"],  # a value that names a command
        ["run", "a://b", "--", "sleep", "--wait", "30"],  # the command's own arguments are its own
        ["acquire", "--wait", "a://b"],  # a URI after --wait is a URI
    ],
)
def test_what_argparse_accepts_is_left_alone(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_cluster(monkeypatch, instance="w1")
    assert "option of the command" not in kubelock_output_when_parsed(argv, capsys)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["a://b", "--wait=30s"], WAIT + "--wait --timeout 30"),
        (["a://b", "--wait", "30"], WAIT + "--wait --timeout 30"),
        (["a://b", "--ttl", "10m"], "'10m' is not a number of seconds; write 600"),
    ],
)
def test_rlock_says_it_in_its_one_json_object(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert words in rlock_usage_error(argv, capsys)["message"]


@pytest.mark.parametrize(("text", "hint"), [("30s", "; write 30"), ("1.5m", "; write 90"), ("30", ""), ("abc", ""),
                                            ("2d", "")])
def test_seconds_hint(text: str, hint: str) -> None:
    assert seconds_hint(text).split(" (")[0] == hint
