"""`kubelock.cli.parser.Parser` records its options and subcommands through argparse's public API
(argparse keeps its own tables private). What it records must be what `--help` shows: an option
left out of the record would be called "an option of the command" when written before the command,
and would be missing from the completion scripts. These tests compare the two for the program and
every command, so a change of argparse (or an option added past the record) fails here, loudly."""

from __future__ import annotations

import argparse
import re

import pytest

from kubelock.cli import completion
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import HANDLERS, build_parser, main
from kubelock.cli.parser import Parser

_OPTION_LINE = re.compile(r"^  (-.*?)(?:  |$)")  # "  -n NAMESPACE, --namespace NAMESPACE   lock space ..."
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def shown_in_help(parser: Parser) -> set[str]:
    """Every option string `--help` lists in its options section."""
    flags: set[str] = set()
    for line in parser.format_help().splitlines():
        if (match := _OPTION_LINE.match(line)) is not None:
            flags |= set(_FLAG.findall(match.group(1)))
    return flags


def test_the_programs_record_is_what_its_help_shows() -> None:
    parser = build_parser()
    assert set(parser.options()) == shown_in_help(parser)
    assert {"-h", "--help", "--version", "-n", "--namespace", "-o", "--output", "--json"} <= set(parser.options())


@pytest.mark.parametrize("command", sorted(build_parser().subcommands))
def test_each_commands_record_is_what_its_help_shows(command: str) -> None:
    sub = build_parser().subcommands[command]
    assert set(sub.options()) == shown_in_help(sub)
    assert set(completion.options(sub)) == shown_in_help(sub)  # and so every option completes


def test_every_command_is_recorded() -> None:
    parser = build_parser()
    shown = set(re.findall(r"^    ([a-z]+)\s", parser.format_help(), flags=re.M))  # the list under COMMAND
    assert shown == set(parser.subcommands) == {*HANDLERS, "completion"}


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["--version"], ["-h", "acquire"]])
def test_the_programs_own_options_are_never_taken_for_a_commands(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == ExitCode.OK
    assert "option of the command" not in capsys.readouterr().err


def test_a_subcommand_made_without_the_record_is_refused() -> None:
    parser = Parser(prog="p")
    with pytest.raises(TypeError, match="parser_class=Parser"):
        parser.command("x", argparse.ArgumentParser(prog="x"))
