"""Usage mistakes that argparse reports in its own words, told instead with what to write.

argparse answers `--wait=30s` with "ignored explicit argument", `--wait 30s` with "unrecognized
arguments: 30s", `--timeout 5m` with a bare type error and `kubelock --ttl 5 acquire URI` with
"invalid choice: '5'"; none of them says what to write instead. These checks run on the command
line before argparse does, and only catch what argparse would have refused anyway, as do the
answers to `--mode shared` (the option is `--shared`) and `-o JSON` (the formats are lower case).
`--json -o yaml`, which argparse takes (and --json won), is refused after parsing.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Collection, Mapping, Sequence

_UNITS = {"s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


def seconds_hint(text: str) -> str:
    """`'5m' is not a number of seconds` is followed by this: `; write 300`, when `text` is a number
    with a unit of s, m or h (what Go, kubectl and `timeout(1)` accept); empty otherwise."""
    match = _DURATION.match(text.strip())
    if match is None or not match.group(2):
        return ""
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return f"; write {seconds:g} (a plain number of seconds, no unit)"


def _before_command(argv: Sequence[str]) -> list[str]:
    """The arguments before `--`, after which everything is the command of `kubelock run`."""
    argv = list(argv)
    return argv[:argv.index("--")] if "--" in argv else argv


def wait_with_value(argv: Sequence[str]) -> str | None:
    """`--wait=30s` or `--wait 30s`: a flag given a value, meant as the longest wait."""
    own = _before_command(argv)
    for at, token in enumerate(own):
        if token.startswith("--wait="):
            value = token.removeprefix("--wait=")
        elif token == "--wait" and at + 1 < len(own) and _DURATION.match(own[at + 1]):
            value = own[at + 1]
        else:
            continue
        seconds = seconds_hint(value).removeprefix("; write ").split(" ")[0] or value
        return (
            f"--wait takes no value (it only says to queue): give the longest wait with --timeout SECONDS, "
            f"for example --wait --timeout {seconds}"
        )
    return None


def misplaced_option(argv: Sequence[str], *, prog: str, commands: Mapping[str, Collection[str]],
                     global_options: Collection[str], valued: Collection[str]) -> str | None:
    """An option of a command (`--ttl`, `--wait`) written before the command's name. `commands`: each
    command's options; `global_options`: every option the program itself takes; `valued`: those of
    them that take a value. An option that neither the program nor the command takes is said to be
    unknown (moving it after the command would only get "unrecognized arguments")."""
    own = _before_command(argv)
    at = 0
    while at < len(own):
        token = own[at]
        if token in commands:
            return None
        if token.startswith("-") and token not in ("-", "--"):
            attached = "=" in token or (not token.startswith("--") and len(token) > 2)  # -ojson, -nagents
            name = token.split("=", 1)[0] if token.startswith("--") else token[:2]
            if name not in global_options:
                command = next((t for t in own[at + 1:] if t in commands), "COMMAND")
                if command in commands and name not in commands[command]:
                    return (f"{name} is not an option of {prog} or of {prog} {command}: `{prog} {command} --help` "
                            f"lists the options of {command}")
                if command not in commands and not any(name in taken for taken in commands.values()):
                    return f"{name} is not an option of {prog} or of any of its commands: `{prog} --help` lists them"
                following = own[at + 1] if at + 1 < len(own) else ""
                if not attached and following and not following.startswith("-") and following not in commands:
                    token = f"{token} {following}"  # most likely its value
                return (
                    f"{name} is an option of the command, so it goes after the command's name: "
                    f"{prog} {command} ... {token} (only the connection options, -o and --json may come before it)"
                )
            if name in valued and not attached:
                at += 1  # its value, which may look like anything
        at += 1
    return None


def choice(name: str, choices: Sequence[str], example: str) -> Callable[[str], str]:
    """The `type` of an option (or argument) that takes one of `choices`: argparse's own refusal,
    "invalid choice: 'JSON' (choose from 'json', 'yaml', 'wide')", neither says that the values are
    lower case nor shows one in use. `example`: a whole command line using one of them. (`choices=`
    stays on the argument too, for --help.)"""

    def parse(text: str) -> str:
        if text in choices:
            return text
        case = " (in lower case)" if text.lower() in choices else ""
        raise argparse.ArgumentTypeError(
            f"{name} takes {_one_of(choices)}{case}, not {text!r}; for example {example}"
        )

    return parse


def _one_of(choices: Sequence[str]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


_MODE_WORDS = ("--mode", "--exclusive", "--exclusive-mode", "--shared-mode", "--read", "--write")


def mode_flag(argv: Sequence[str], *, example: str) -> str | None:
    """`--mode shared`, `--mode=Exclusive`, `--exclusive`: how the lock is held is said by --shared
    (and --permits N), and exclusive is the default. `example`: the command with `{}` where its
    options go, e.g. `kubelock run URI{} -- CMD`. argparse would say "unrecognized arguments: --mode"
    and, for `acquire --mode shared URI`, take `shared` for a URI."""
    for token in _before_command(argv):
        name = token.split("=", 1)[0]
        if name in _MODE_WORDS:
            return (
                f"there is no {name} option: a lock is exclusive unless --shared is given (held together with "
                f"other --shared holders, never with an exclusive one); for example {example.format(' --shared')}, "
                f"or {example.format('')} for an exclusive lock (--permits N takes N permits of a counted resource)"
            )
    return None


def output_conflict(json_flag: bool, output: str | None) -> str | None:
    """`--json -o yaml`: two output formats asked for at once (--json is the same as -o json)."""
    if json_flag and output not in (None, "json"):
        return (f"--json is the same as -o json, and -o {output} asks for another output: give one of them, "
                f"for example -o {output}")
    return None


def unknown_options(extra: Sequence[str], *, prog: str, command: str, options: Collection[str] = ()) -> str:
    """Arguments of a command that argparse did not recognise, with where its options are listed
    (and, for `run`, where the command's own options go). `options`: the command's option strings,
    to name the whole option of an abbreviation (`--wai`: prefixes are not taken)."""
    listed = f"`{prog} {command} --help` lists the options of {command}"
    whole = abbreviated(extra, options)
    if whole:
        listed = f"options are written in full ({whole}); {listed}"
    if command == "run":
        return (f"unrecognized arguments: {' '.join(extra)}; {listed}, and the command and its own options go "
                f"after `--`: {prog} run URI [URI...] -- CMD [ARGS...]")
    return f"unrecognized arguments: {' '.join(extra)}; {listed}"


def abbreviated(extra: Sequence[str], options: Collection[str]) -> str:
    """`--wai is --wait` for each unrecognised `--x` (or `--x=v`) that begins exactly one option's
    name; "" when none does."""
    found = []
    for token in extra:
        name = token.split("=", 1)[0]
        if not name.startswith("--") or name == "--":
            continue
        matches = sorted(option for option in options if option.startswith(name) and option != name)
        if len(matches) == 1:
            found.append(f"{name} is {matches[0]}")
    return ", ".join(found)
