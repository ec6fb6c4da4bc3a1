"""The command-line options the benchmark scripts share, set up once: a script's parser described by
its docstring, where its result and its control plane go, and the windows of a run of agents."""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(doc: str | None, *, whole_doc: bool = False) -> argparse.ArgumentParser:
    """A script's parser described by the first line of `doc` (its docstring), or by all of it as
    written with `whole_doc`; the script adds its own options."""
    if whole_doc:
        return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(description=doc.splitlines()[0] if doc else "")


def add_outputs(parser: argparse.ArgumentParser) -> None:
    """`--out` (the file the result is written to; none: printed only) and `--workdir` (the control
    plane and logs; none: a temporary directory)."""
    parser.add_argument("--out", type=Path, default=None, help="write the result here as JSON")
    parser.add_argument("--workdir", type=Path, default=None)


def add_windows(
    parser: argparse.ArgumentParser, *, agents: int, seconds: float, rounds: int = 4, warmup: float = 1.5
) -> None:
    """A run of `--agents` agents measured in `--rounds` windows of `--seconds` each, after a
    `--warmup` of seconds."""
    parser.add_argument("--agents", type=int, default=agents)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--warmup", type=float, default=warmup)
