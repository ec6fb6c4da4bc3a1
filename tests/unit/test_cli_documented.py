"""The commands as the docs show them are the commands as they are.

- Every invocation of `kubelock` (or `kubectl lock`), `rlock`, `runlock` and `rlock-heartbeat` in the
  code of README.md, docs/sdk.md, docs/SKILL.md, docs/install.md and docs/api.md names a real
  subcommand and only options that subcommand takes, spelled in full.
- docs/sdk.md's table of `kubelock` commands has a row for every subcommand, and the row names every
  option of it; the section names every option common to all of them.
- docs/sdk.md's table of exit codes is `ExitCode`, code for code and name for name; docs/SKILL.md's
  table names only codes that exist.
- The result objects docs/SKILL.md and docs/sdk.md show are JSON, with keys the commands write.

A subcommand, an option or an exit code added without its documentation, or documented and then
removed, fails here.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from kubelock.cli import compat
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
READ = ["README.md", "docs/sdk.md", "docs/SKILL.md", "docs/install.md", "docs/api.md"]
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def code_of(text: str) -> list[str]:
    """The code of a Markdown text: each line of a fenced block (without its shell comment) and each
    inline code span (which may go on over a line break)."""
    out: list[str] = []
    prose: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            out.append(re.sub(r"(^|\s)#\s.*$", "", line))
        else:
            prose.append(line)
    out += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", "\n".join(prose))]
    # Not commands: `helm install kubelock ...` (a release name), `kubelock: waiting for ...` (a message).
    return [code for code in out if not code.lstrip().startswith(("helm ", "kubelock: "))]


def invocations(text: str) -> list[tuple[str, str]]:
    """Each (command, the rest of its command line) in the code of `text`."""
    found = []
    for code in code_of(text):
        # The command's name at the start of the code or after a space, `(`, a pipe or `;`; the
        # command line up to a pipe, `;` or `&&`, and before the ` -- ` that starts a command run.
        for match in re.finditer(r"(?:^|(?<=[\s(;|&$]))(kubelock|kubectl lock|rlock-heartbeat|runlock|rlock)"
                                 r"(?![\w.:-])([^|;&\n]*)", code):
            found.append((match.group(1), match.group(2).split(" -- ")[0]))
    return found


def drop_in_parsers() -> dict[str, argparse.ArgumentParser]:
    return {"rlock": compat.rlock_parser(), "runlock": compat.runlock_parser(),
            "rlock-heartbeat": compat.rlock_heartbeat_parser()}


def problems(text: str) -> list[str]:
    """What in `text` the commands would not accept."""
    parser = build_parser()
    common = set(parser.options())
    drop_ins = {name: set(p._option_string_actions) for name, p in drop_in_parsers().items()}
    wrong = []
    for command, rest in invocations(text):
        if command in drop_ins:
            wrong += [f"{command}{rest}: {o}" for o in OPTION.findall(rest) if o not in drop_ins[command]]
            continue
        words = rest.split()
        # The subcommand: the first word that is neither an option nor an option's value.
        sub, i = None, 0
        while i < len(words):
            word = words[i].lstrip("[")  # `kubelock [-n NS] COMMAND`
            if word.startswith("-"):
                action = parser.options().get(word.split("=")[0].strip("[]"))
                i += 2 if action is not None and action.nargs is None and "=" not in word else 1
                continue
            sub = word.strip("[]")
            break
        if sub is None or sub in ("...", "…", "COMMAND"):
            wrong += [f"{command}{rest}: {o}" for o in OPTION.findall(rest) if o not in common]
            continue
        if sub not in parser.subcommands:
            wrong.append(f"{command}{rest}: no subcommand {sub!r}")
            continue
        allowed = common | set(parser.subcommands[sub].options())
        wrong += [f"{command}{rest}: {o}" for o in OPTION.findall(rest) if o not in allowed]
    return wrong


@pytest.mark.parametrize("name", READ)
def test_every_command_line_in_the_docs_is_accepted(name: str) -> None:
    assert problems((REPO / name).read_text()) == []


def test_a_wrong_command_line_is_found() -> None:
    text = ("`kubelock acquire URI --wait`, `kubelock explain URI`, `kubelock unlock --stale`, `rlock --shared URI`, "
            "`runlock --wait URI`\n```sh\nkubectl lock status -A   # --nothing here\n```\n")
    assert problems(text) == ["kubelock explain URI: no subcommand 'explain'", "kubelock unlock --stale: --stale",
                              "runlock --wait URI: --wait"]


def sdk_section() -> str:
    text = (REPO / "docs" / "sdk.md").read_text()
    return text.split("\n## `kubelock`\n", 1)[1].split("\n## ", 1)[0]


def command_rows() -> dict[str, str]:
    """docs/sdk.md's table of `kubelock` commands: each command and the first cell of its row."""
    rows = re.findall(r"^\| `([a-z]+)([^|]*(?:\\\|[^|]*)*)` \|", sdk_section(), flags=re.M)
    return {command: cell for command, cell in rows}


def test_every_subcommand_has_its_row_naming_every_option() -> None:
    parser = build_parser()
    rows = command_rows()
    assert set(rows) == set(parser.subcommands), "docs/sdk.md's table of commands is not the parser's"
    common = parser.options()
    for name, sub in parser.subcommands.items():
        # unlock's and revoke's --holder is their own (whose locks), not the common one.
        own = {id(a): a for o, a in sub.options().items()
               if (o not in common or common[o].dest != a.dest) and not isinstance(a, argparse._HelpAction)}
        missing = sorted(a.option_strings[-1] for a in own.values() if not any(
            re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", rows[name]) for o in a.option_strings))
        assert missing == [], f"the row of `{name}` in docs/sdk.md does not name {missing}"


def test_every_common_option_is_named() -> None:
    """By any of its spellings (`-n` or `--namespace`)."""
    section = sdk_section()
    actions = {id(a): a for a in build_parser().options().values() if not isinstance(a, argparse._HelpAction)}
    missing = sorted(a.option_strings[-1] for a in actions.values() if not any(
        re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section) for o in a.option_strings))
    assert missing == [], f"docs/sdk.md's `kubelock` section does not name {missing}"


def test_the_drop_in_commands_usage_names_their_options() -> None:
    text = (REPO / "docs" / "sdk.md").read_text()
    usage = text.split("\n## `rlock`, `runlock`, `rlock-heartbeat`\n", 1)[1].split("```\n", 2)[1]
    lines = {line.split()[0]: line for line in usage.splitlines() if line.strip()}
    connection = {o for a in _connection_actions() for o in a.option_strings}
    for name, parser in drop_in_parsers().items():
        own = set(parser._option_string_actions) - connection - {"-h", "--help"}
        assert name in lines, f"docs/sdk.md shows no usage of {name}"
        assert set(OPTION.findall(lines[name])) == own, (name, lines[name])


def _connection_actions() -> list[argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    from kubelock.cli.main import connection_options

    connection_options(parser, suppress=False)
    return parser._actions


def test_the_exit_code_table_is_exit_code() -> None:
    text = (REPO / "docs" / "sdk.md").read_text()
    section = text.split("\n## Exit codes\n", 1)[1]
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", section, flags=re.M)
    assert [(int(code), name) for code, name in rows] == [(c.value, c.name) for c in ExitCode]


def test_the_skills_exit_codes_exist() -> None:
    text = (REPO / "docs" / "SKILL.md").read_text()
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    codes = [int(c) for cell in re.findall(r"^\| ([\d, ]+) \|", section, flags=re.M) for c in cell.split(",")]
    assert codes, "docs/SKILL.md has no table of exit codes"
    assert set(codes) <= {c.value for c in ExitCode}
    assert {0, 1, 2, 3, 4, 5, 6, 7, 8} <= set(codes)  # every outcome an agent acts on


def json_examples() -> list[tuple[str, str]]:
    """Each line of docs/SKILL.md and docs/sdk.md that is a result object of the commands."""
    return [(name, line.strip()) for name in ("docs/SKILL.md", "docs/sdk.md")
            for line in (REPO / name).read_text().splitlines() if line.strip().startswith('{"ok": ')]


def keys_of(value: object) -> set[str]:
    if isinstance(value, dict):
        return {k for k in value if "://" not in k} | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def test_the_result_examples_are_found() -> None:
    assert len(json_examples()) >= 8


@pytest.mark.parametrize(("name", "line"), json_examples())
def test_a_result_example_is_json_with_keys_the_commands_write(name: str, line: str) -> None:
    cli = REPO / "operator" / "kubelock" / "cli"
    source = "".join((cli / f).read_text() for f in ("output.py", "compat.py", "run.py"))
    # The keys the source writes: string literals, and keywords of `payload.update(lost=True, ...)`.
    written = set(re.findall(r"\"(\w+)\"", source)) | set(re.findall(r"[(,]\s*([a-z]\w*)=(?!=)", source))
    unknown = sorted(keys_of(json.loads(line)) - written)
    assert unknown == [], f"{name}: the commands write no key {unknown}"
