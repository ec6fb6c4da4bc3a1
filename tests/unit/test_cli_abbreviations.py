"""Long options are written in full: argparse's prefix matching took `acquire URI --wai` for
--wait, `--time` for --timeout, `rlock URI --inst w` for --instance and the operator's `--max-ttl`
for --max-ttl-seconds, silently. A prefix hides a typing mistake, and one a script relies on turns
into an error (ambiguous) the day another option starts with it. Each is refused now (exit 4, or
the operator's 2), naming the whole option; every option written in full works as before."""

from __future__ import annotations

import json

import pytest

from kubelock.cli import compat
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import build_parser, main
from kubelock.operator.settings import flag_parser


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # NotConfigured (6) if parsing got through
    monkeypatch.setenv("KUBELOCK_INSTANCE", "w1")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["acquire", "a://b", "--wai"], "--wai is --wait"),
        (["acquire", "a://b", "--wait", "--time", "5"], "--time is --timeout"),
        (["acquire", "a://b", "--inst", "w2"], "--inst is --instance"),
        (["status", "--all"], "--all is --all-namespaces"),
        (["release", "a://b", "--kubec", "/x"], "--kubec is --kubeconfig"),
        (["run", "a://b", "--wai", "--", "true"], "--wai is --wait"),
        (["--inst", "w2", "acquire", "a://b"], "--inst is not an option of kubelock"),
        (["--kubec=/x", "status"], "--kubec is not an option of kubelock"),
    ],
)
def test_kubelock_refuses_an_abbreviated_option(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == ExitCode.INVALID_INPUT
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        (compat.rlock, ["a://b", "--inst", "w2"]),
        (compat.rlock, ["a://b", "--wai"]),
        (compat.runlock, ["a://b", "--kubec", "/x"]),
        (compat.rlock_heartbeat, ["a://b", "--names", "agents"]),
    ],
)
def test_the_compatible_commands_refuse_an_abbreviated_option(
    command: object, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(command)
    with pytest.raises(SystemExit) as exited:
        command(argv)
    assert exited.value.code == ExitCode.INVALID_INPUT
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"] == "InvalidInput" and "unrecognized arguments" in answer["message"], answer


@pytest.mark.parametrize(
    "argv",
    [
        ["acquire", "a://b", "--wait", "--timeout", "5", "--ttl", "60", "--instance", "w2", "--namespace", "agents"],
        ["--kubeconfig=/nonexistent/kubeconfig", "-n", "agents", "status", "--all-namespaces", "-o", "wide"],
        ["release", "a://b", "--kubeconfig", "/nonexistent/kubeconfig", "--context", "c"],
        ["heartbeat", "a://b", "--instance=w2", "--json"],
    ],
)
def test_options_written_in_full_still_work(argv: list[str]) -> None:
    assert main(argv) == ExitCode.UNREACHABLE  # parsed; then no cluster


def test_every_option_of_every_command_is_accepted_whole() -> None:
    # The whole spellings argparse knows: each parses alone (with a value where it takes one), so
    # refusing prefixes refused no real option.
    parser = build_parser()
    for name, sub in parser.subcommands.items():
        for flag, action in sub.options().items():
            if flag in ("-h", "--help") or not flag.startswith("--"):
                continue
            value = [] if action.nargs == 0 else [str(action.choices[0]) if action.choices else "1"]
            positional = [str(a.choices[0]) if a.choices else "a://b" for a in sub._actions
                          if not a.option_strings and a.nargs not in ("?", "*")]
            required = [part for a in sub._actions if a.option_strings and a.required and flag not in a.option_strings
                        for part in (a.option_strings[-1], "1")]
            trailing = ["--", "true"] if name == "run" else []
            try:
                parser.parse_known_args([name, *positional, *required, flag, *value, *trailing])
            except SystemExit as error:  # pragma: no cover - shown by the assertion
                raise AssertionError(f"kubelock {name} {flag} refused") from error


@pytest.mark.parametrize("argv", [["--max-ttl", "60"], ["--resource-lock", "60"], ["--verb"]])
def test_the_operator_refuses_an_abbreviated_flag(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        flag_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
