"""Usage mistakes that argparse reports in its own words, told instead with what to write.

argparse answers `--wait=30s` with "ignored explicit argument", `--wait 30s` with "unrecognized
arguments: 30s", `--timeout 5m` with a bare type error and `kubelock --ttl 5 acquire URI` with
"invalid choice: '5'"; none of them says what to write instead. These checks run on the command
line before argparse does, and only catch what argparse would have refused anyway.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

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


def misplaced_option(argv: Sequence[str], *, prog: str, commands: Collection[str], global_options: Collection[str],
                     valued: Collection[str]) -> str | None:
    """An option of a command (`--ttl`, `--wait`) written before the command's name. `global_options`:
    every option the program itself takes; `valued`: those of them that take a value."""
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
