"""The command line as a shell user meets it: --version, help with examples, completion scripts that
a shell accepts, `kubectl lock` as a plugin, no tracebacks into a closed pipe, and `make help`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kubelock import __version__
from kubelock.cli import completion
from kubelock.cli.main import build_parser, main, program_name

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
COMMAND = [sys.executable, "-c", "import sys; from kubelock.cli.main import main; sys.exit(main())"]
RLOCK = [sys.executable, "-c", "import sys; from kubelock.cli.compat import rlock; sys.exit(rlock())"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"kubelock {__version__}\n"


@pytest.mark.parametrize(("argv0", "prog"), [("/usr/bin/kubelock", "kubelock"), ("/x/kubectl-lock", "kubectl lock")])
def test_program_name_follows_how_it_was_run(argv0: str, prog: str) -> None:
    assert program_name(argv0) == prog


def test_help_shows_examples_under_the_name_it_was_run_as() -> None:
    text = build_parser("kubectl lock").format_help()
    assert "examples:\n  kubectl lock acquire github://acme/app/issues/42" in text
    assert "exit codes: 0 ok, 1 held" in text


@pytest.mark.parametrize("command", ["acquire", "release", "heartbeat", "status", "list", "why", "unlock", "graph"])
def test_every_command_has_examples_and_the_output_option(command: str) -> None:
    sub = completion.commands(build_parser())[command]
    assert "examples:\n  kubelock " + command in sub.format_help()
    assert {"-o", "--output", "--json"} <= set(completion.options(sub))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["kubelock", "acq"], "acquire"),
        (["kubelock", "acquire", "deploy://x", "--w"], "--wait"),
        (["kubelock", "status", "-o", ""], "json yaml wide"),
        (["kubelock", "completion", "z"], "zsh"),
    ],
)
def test_bash_completion(words: list[str], expected: str) -> None:
    script = completion.script(build_parser(), "bash")
    array = " ".join(f"'{w}'" for w in words)
    probe = f'{script}\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _kubelock; echo "${{COMPREPLY[*]}}"'
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str) -> None:
    script = completion.script(build_parser(), shell)
    for command in completion.commands(build_parser()):
        assert command in script
    checker = shutil.which(shell)
    if checker is not None:
        flag = "-n" if shell == "zsh" else "--no-execute"
        subprocess.run([checker, flag], input=script, text=True, check=True)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([*COMMAND, "completion", "bash"], id="kubelock-output"),
        pytest.param([*RLOCK, "not a uri"], id="rlock-json"),
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(argv: list[str]) -> None:
    """`kubelock ... | head`: the reader goes away; no traceback, the exit a shell expects (SIGPIPE)."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, env=ENV, timeout=60, check=False)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == -signal.SIGPIPE


def test_make_help_lists_every_target_and_prints_no_colour_into_a_pipe() -> None:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    done = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True)
    targets = {line.split()[0] for line in done.stdout.splitlines()[2:] if line.strip()}
    assert {"e2e", "test", "up", "run", "help"} <= targets
    assert "\033" not in done.stdout


@pytest.mark.parametrize(
    ("before", "current", "expected"),
    [
        ([], "st", ["status"]),
        (["acquire", "deploy://x"], "--t", ["--timeout", "--ttl"]),
        (["status", "-o"], "", ["json", "wide", "yaml"]),
        (["completion"], "f", ["fish"]),
    ],
)
def test_completion_candidates_for_kubectl(before: list[str], current: str, expected: list[str]) -> None:
    assert sorted(completion.candidates(build_parser("kubectl lock"), before, current)) == expected
