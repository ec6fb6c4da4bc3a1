"""`rlock`, `runlock` and `rlock-heartbeat`: the drop-in commands of the resource-lock CLI.

Each prints exactly one JSON object on stdout, whatever happens (even a usage error), and exits
with a code from `kubelock.cli.exitcodes.ExitCode`:

    rlock "github://acme/app/issues/42"
    {"ok": true, "resource": "github://acme/app/issues/42", "holder": "agent-7", "fencingToken": 7, ...}
    {"ok": false, "error": "HeldByAnotherHolder", "holder": "agent-3", "heldSince": "...", ...}   (exit 1)
    {"ok": false, "error": "DeadlockDetected", "deadlock": true, "cycle": [...], ...}             (exit 5)

Several URIs are one claim, taken all together or not at all (`rlock A B`), and released or renewed
together (`runlock A B`, `rlock-heartbeat A B`).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from kubelock.cli import output, usage
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import URIS_HELP, connection_options, mode_options, need_of, reader_went_away, run
from kubelock.cli.progress import QueueProgress
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import LockError
from kubelock.sdk.model import format_time

Command = Callable[[AsyncLockClient, argparse.Namespace], Awaitable[output.Json]]


class _JsonParser(argparse.ArgumentParser):
    """Usage errors, too, are one JSON object (exit INVALID_INPUT)."""

    def error(self, message: str) -> NoReturn:
        payload = {"ok": False, "error": "InvalidInput", "message": f"{self.prog}: {message}"}
        print(output.dumps(payload))
        sys.exit(ExitCode.INVALID_INPUT)


def _parser(prog: str, summary: str) -> _JsonParser:
    parser = _JsonParser(prog=prog, description=summary, allow_abbrev=False, epilog="Exit codes: " + ", ".join(
        f"{c.value} {c.name.lower()}" for c in ExitCode))
    parser.add_argument("uri", nargs="+", help=URIS_HELP)
    connection_options(parser, suppress=False)
    return parser


def _number(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds{usage.seconds_hint(text)}") from None

    return parse


def _main(parser: argparse.ArgumentParser, command: Command, argv: Sequence[str] | None) -> int:
    try:
        try:
            code = _run(parser, command, argv)
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be handled
    except BrokenPipeError:
        return reader_went_away()
    return code


def _run(parser: argparse.ArgumentParser, command: Command, argv: Sequence[str] | None) -> int:
    given = sys.argv[1:] if argv is None else argv
    mistake = usage.wait_with_value(given)
    if parser.prog == "rlock":  # the one of them that takes --shared
        mistake = mistake or usage.mode_flag(given, example='rlock{} "URI"')
    if mistake is not None:
        parser.error(mistake)
    args = parser.parse_args(argv)

    async def handler(client: AsyncLockClient, args: argparse.Namespace) -> int:
        payload = await command(client, args)
        print(output.dumps(payload))
        return ExitCode.OK if payload["ok"] else ExitCode.HELD

    wait_command = "rlock --wait" if parser.prog == "rlock" else None

    def report(error: LockError) -> None:
        print(output.dumps(output.failure(error, args.uri, wait_command=wait_command)))

    try:
        code = run(handler, args, report)
    except BrokenPipeError:
        return reader_went_away()
    except Exception:  # a bug: say so on stderr, and never look like a lock outcome
        traceback.print_exc()
        print(output.dumps({"ok": False, "error": "InternalError", "message": "kubelock failed; see stderr"}))
        return ExitCode.INTERNAL
    return code


async def _rlock(client: AsyncLockClient, args: argparse.Namespace) -> output.Json:
    if args.wait:
        progress = QueueProgress(sys.stderr)
        try:
            result = await client.acquire(args.uri, wait=True, timeout=args.timeout, ttl=args.ttl, on_update=progress,
                                          **need_of(args))
        finally:
            progress.clear()
        return output.acquired(result)
    result = await client.try_acquire(args.uri, ttl=args.ttl, **need_of(args))
    message = output.held_message(result.resource, result.holder, format_time(result.held_since), "rlock --wait",
                                  several=len(result.resources) > 1, operator_message=result.message)
    return output.acquired(result, message)


async def _runlock(client: AsyncLockClient, args: argparse.Namespace) -> output.Json:
    return output.released(await client.release(args.uri))


async def _heartbeat(client: AsyncLockClient, args: argparse.Namespace) -> output.Json:
    return output.renewed(await client.heartbeat(args.uri))


def rlock_parser() -> argparse.ArgumentParser:
    parser = _parser("rlock", "Acquire a lock (exclusive, --shared or --permits N); fails (exit 1) if it is held "
                     "in a way that keeps this request out. Several URIs: all of them in one claim, or none.")
    mode_options(parser)
    parser.add_argument("--ttl", type=_number(int), help="lease in seconds, 1-86400 (default: the operator's, 1800)")
    parser.add_argument("--wait", action="store_true", help="queue until granted (deadlocks are detected: exit 5)")
    parser.add_argument("--timeout", type=_number(float), help="with --wait: give up after this many seconds (exit 7)")
    return parser


def runlock_parser() -> argparse.ArgumentParser:
    return _parser("runlock", "Release a lock you hold.")


def rlock_heartbeat_parser() -> argparse.ArgumentParser:
    return _parser("rlock-heartbeat", "Renew a lock you hold: it lasts another full TTL from now.")


def rlock(argv: Sequence[str] | None = None) -> int:
    return _main(rlock_parser(), _rlock, argv)


def runlock(argv: Sequence[str] | None = None) -> int:
    return _main(runlock_parser(), _runlock, argv)


def rlock_heartbeat(argv: Sequence[str] | None = None) -> int:
    return _main(rlock_heartbeat_parser(), _heartbeat, argv)
