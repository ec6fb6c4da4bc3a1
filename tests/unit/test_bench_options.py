"""bench/options.py: the options the benchmark scripts share, set up once."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import options  # noqa: E402  # after bench/ is on the path

DOC = """A first line that describes the script.

More lines, kept as written only when the whole docstring is asked for."""


def test_a_parser_is_described_by_the_first_line_or_the_whole_docstring() -> None:
    assert options.parser(DOC).description == "A first line that describes the script."
    assert options.parser(None).description == ""
    assert options.parser(DOC, whole_doc=True).description == DOC


def test_outputs_and_windows_default_as_the_scripts_had_them() -> None:
    parser = options.parser(DOC)
    options.add_windows(parser, agents=200, seconds=5.0)
    options.add_outputs(parser)
    args = parser.parse_args([])
    assert (args.agents, args.rounds, args.seconds, args.warmup) == (200, 4, 5.0, 1.5)
    assert (args.out, args.workdir) == (None, None)
    given = parser.parse_args(["--rounds", "2", "--seconds", "15", "--out", "r.json", "--workdir", "w"])
    assert (given.rounds, given.seconds, given.out, given.workdir) == (2, 15.0, Path("r.json"), Path("w"))
