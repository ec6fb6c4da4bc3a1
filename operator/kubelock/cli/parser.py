"""The argument parser of the commands, which keeps its own record of what it was given.

argparse keeps its options and subcommands in private tables (`_actions`, `_option_string_actions`);
the usage checks (`kubelock.cli.usage`) and the completion scripts (`kubelock.cli.completion`) need
them, so `Parser` records them itself, through argparse's public API only: every `add_argument`
returns its `Action`, and `add_parser` of the subcommands returns the subcommand's parser.

Two things stay outside this record, and are added to it by hand where they are made: the options of
a mutually exclusive group (`group.add_argument`, see `remember`), and subcommands made by
`add_parser` (see `command`). tests/unit/test_cli_parser_record.py compares the record with what
`--help` prints, so an option missing from it fails a test rather than a completion.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from kubelock.cli.exitcodes import ExitCode


class Parser(argparse.ArgumentParser):
    """Usage errors exit with INVALID_INPUT (argparse's own 2 would read as NOT_FOUND).

    `declared`: every argument added to it, its parents' included (with argparse's -h/--help, which
    `ArgumentParser.__init__` adds through `add_argument`); `subcommands`: each command's parser."""

    def __init__(self, prog: str | None = None, *, parents: Sequence[argparse.ArgumentParser] = (),
                 **kwargs: Any) -> None:
        self.declared: list[argparse.Action] = []  # before argparse's __init__ adds -h/--help
        self.subcommands: dict[str, Parser] = {}
        # No prefixes of long options: `acquire URI --wai` taken for --wait hid typing mistakes, and a
        # prefix a script relies on would turn ambiguous (an error) when a later option shares it.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(prog, parents=list(parents), **kwargs)
        for parent in parents:
            self.declared += parent.declared if isinstance(parent, Parser) else []

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.declared.append(action)
        return action

    def remember(self, actions: Iterable[argparse.Action]) -> None:
        """Options added elsewhere than by `add_argument` of this parser (a mutually exclusive group)."""
        self.declared += actions

    def command(self, name: str, parser: argparse.ArgumentParser) -> Parser:
        """Record `parser`, just made by `add_parser(name, ...)`, as the subcommand `name`."""
        if not isinstance(parser, Parser):
            raise TypeError(f"the subcommand {name} must be made with parser_class=Parser")
        self.subcommands[name] = parser
        return parser

    def options(self) -> dict[str, argparse.Action]:
        """Each option string (`-o`, `--output`) and its action."""
        return {flag: action for action in self.declared for flag in action.option_strings}

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.INVALID_INPUT, f"{self.prog}: error: {message}\n")
