"""`kubelock`: acquire, release and inspect locks from a shell; break them as an administrator.

Human output by default; `-o json` (or `--json`) prints one JSON object, `-o yaml` the same as YAML,
`-o wide` adds columns to tables. Exit codes in `kubelock.cli.exitcodes`. Installed as
`kubectl-lock` too, so that `kubectl lock ...` runs it as a kubectl plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kubelock import __version__
from kubelock.api.types import MAX_RESOURCES
from kubelock.cli import completion, output, signals, usage
from kubelock.cli import run as runner
from kubelock.cli.exitcodes import ExitCode, for_error
from kubelock.cli.parser import Parser
from kubelock.cli.progress import QueueProgress, UnansweredNotice
from kubelock.domain.reasons import Phase
from kubelock.sdk import Impersonation, admin, validation
from kubelock.sdk import graph as waitgraph
from kubelock.sdk.admin import AsyncAdmin
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import Deadlock, InvalidInput, LockError
from kubelock.sdk.identity import InstanceRequired
from kubelock.sdk.model import format_time
from kubelock.sdk.targets import Target

Handler = Callable[[AsyncLockClient, argparse.Namespace], Awaitable[int]]


def _whole_seconds(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        hint = usage.seconds_hint(text)
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds{hint}") from None


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not -1000 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is not between -1000 and 1000")
    return value


PRIORITY_HELP = ("with --wait: queue order, -1000..1000 (default 0): higher first, aged while waiting; above 0 "
                 "needs the RBAC verb prioritize on lockclaims")


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds{usage.seconds_hint(text)}") from None


def connection_options(parser: argparse.ArgumentParser, *, suppress: bool, holder: bool = True) -> None:
    """Options every command takes, before or after its name."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-n", "--namespace", default=default, help="lock space (default: KUBELOCK_NAMESPACE, "
                        "POD_NAMESPACE or the kubeconfig context's namespace)")
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, "
                        "or the pod's ServiceAccount)")
    parser.add_argument("--context", default=default, help="kubeconfig context")
    parser.add_argument("--as", dest="as_user", metavar="USER", default=default, help="act as this user "
                        "(impersonation, as kubectl --as; your credentials need the RBAC verb impersonate): "
                        "your identity, and so your holder name, is then that user's")
    parser.add_argument("--as-group", dest="as_groups", metavar="GROUP", action="append", default=default,
                        help="with --as: act as a member of this group (repeatable)")
    parser.add_argument("--as-uid", dest="as_uid", metavar="UID", default=default, help="with --as: the uid to act as")
    if holder:
        parser.add_argument("--instance", default=default, help="which instance of your identity this is "
                            "(default: KUBELOCK_INSTANCE; in a pod, the pod's; required elsewhere)")
        parser.add_argument("--holder", default=default, help="a whole holder name, for lock admins acting for "
                            "another holder (default: KUBELOCK_HOLDER, else your identity and instance)")


OUTPUTS = ("json", "yaml", "wide")
URIS_HELP = (f"resource URI, e.g. github://acme/app/issues/42; several (at most {MAX_RESOURCES}) are taken together "
             "in one claim, all of them or none")


def mode_options(parser: argparse.ArgumentParser) -> None:
    """--shared and --permits: how the lock is held (Exclusive with 1 permit unless given)."""
    parser.add_argument("--shared", action="store_true", help="hold it together with every other --shared "
                        "holder, never with an exclusive one (readers beside readers; a writer alone)")
    parser.add_argument("--permits", type=_count, metavar="N", help="take N of the resource's permits, 1-1000 "
                        "(a counted semaphore; a resource has 1 permit unless a policy gives it more)")


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def need_of(args: argparse.Namespace) -> dict[str, Any]:
    """The mode and permits the command asks for, as keyword arguments of the SDK."""
    shared = bool(getattr(args, "shared", False))
    permits = getattr(args, "permits", None)
    return {"mode": "Shared" if shared else "Exclusive", "permits": 1 if permits is None else permits}


def _common(*, holder: bool) -> Parser:
    common = Parser(add_help=False)
    connection_options(common, suppress=True, holder=holder)
    common.add_argument("-o", "--output", choices=OUTPUTS, default=argparse.SUPPRESS,
                        type=usage.choice("-o", OUTPUTS, "-o json"),
                        help="json: one JSON object; yaml: the same as YAML; wide: tables with more columns")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="the same as -o json")
    return common


def program_name(argv0: str | None = None) -> str:
    """`kubectl lock` when run by kubectl as the plugin `kubectl-lock`."""
    name = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return "kubectl lock" if name == "kubectl-lock" else "kubelock"


def _examples(prog: str, *lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line.replace('PROG', prog)}" for line in lines)


DESCRIPTION = """Acquire, release and inspect kubelock locks from a shell; break them as an administrator.

Output is for people unless -o json (one JSON object; --json is the same) or -o yaml is given;
-o wide adds columns to the tables. Options may come before or after the command."""
EXIT_CODES = "exit codes: " + ", ".join(f"{c.value} {c.name.lower()}" for c in ExitCode)


def build_parser(prog: str = "kubelock") -> Parser:
    common = _common(holder=True)
    parser = Parser(
        prog=prog, description=DESCRIPTION, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            prog,
            "PROG acquire github://acme/app/issues/42          # take it, or exit 1 if someone holds it",
            "PROG acquire deploy://api-prod --wait --timeout 300",
            "PROG acquire github://acme/app/issues/42 git://acme/app/fix-42   # both, or neither",
            "PROG heartbeat github://acme/app/issues/42        # renew: another full TTL from now",
            "PROG release github://acme/app/issues/42",
            "PROG status -A -o wide                            # every held lock, every namespace",
            "PROG why github://acme/app/issues/42              # why your claim is where it is",
            "PROG unlock deploy://api-prod --reason 'deploy stuck since Friday'",
            "PROG graph --svg > waits.svg",
            "PROG run deploy://api-prod --wait -- ./deploy.sh   # the command never outlives the lock",
            "source <(PROG completion bash)",
        ) + "\n\n" + EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def add(name: str, summary: str, *examples: str, parent: Parser = common) -> Parser:
        return parser.command(name, commands.add_parser(
            name, parents=[parent], help=summary, description=summary,
            epilog=_examples(prog, *examples) if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ))

    p = add("acquire", "acquire a lock (try once, or --wait in the queue)",
            "PROG acquire github://acme/app/issues/42",
            "PROG acquire github://acme/app/issues/42 --ttl 600 -o json",
            "PROG acquire deploy://api-prod --wait --timeout 300   # position and holder shown while queued",
            "PROG acquire github://acme/app/issues/42 git://acme/app/fix-42   # both in one claim, or neither")
    p.add_argument("uri", nargs="+", help=URIS_HELP)
    p.add_argument("--wait", action="store_true", help="queue until granted instead of failing when held")
    p.add_argument("--timeout", type=_seconds, help="with --wait: give up after this many seconds")
    p.add_argument("--ttl", type=_whole_seconds, help="lease in seconds, 1-86400 (default: the operator's, 1800)")
    mode_options(p)
    p.add_argument("--priority", type=_priority, default=0, help=PRIORITY_HELP)
    add("release", "release a lock you hold (or leave its queue)",
        "PROG release github://acme/app/issues/42",
        "PROG release github://acme/app/issues/42 git://acme/app/fix-42   # a claim of both").add_argument(
        "uri", nargs="+", help="the URI(s) the lock was taken on")
    add("heartbeat", "renew a lock you hold: it lasts another TTL",
        "PROG heartbeat github://acme/app/issues/42").add_argument(
        "uri", nargs="+", help="the URI(s) the lock was taken on")
    p = add("status", "table of held locks: holder, age, expiry, waiters, stale",
            "PROG status", "PROG status -A -o wide", "PROG status -o yaml")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    add("list", "your own claims", "PROG list", "PROG list -o wide")
    add("why", "explain a claim: phase, holder, queue position, cycle, expiry",
        "PROG why github://acme/app/issues/42      # your claim on it",
        "PROG why agent-b-deploy-api-prod-1c2d3e4f5a  # any claim, by name").add_argument(
        "target", metavar="CLAIM-NAME|URI"
    )
    # Here --holder selects whose locks to break (the actor is always your authenticated user name).
    p = add("unlock", "break locks as an administrator (who and why are recorded on each lock first); give "
            "--holder H..., --all, or URIs",
            "PROG unlock deploy://api-prod --reason 'deploy stuck since Friday'",
            "PROG unlock --holder pod:agents/worker-a/3f2a1b4c --reason 'agent crashed'   # a whole holder",
            "PROG unlock --all -n agents --reason 'maintenance'",
            parent=_common(holder=False))
    p.add_argument("--holder", dest="break_holders", action="append", default=[], metavar="H",
                   help="every lock held by H, a whole holder <identity>/<instance> as `status` shows it (repeatable)")
    p.add_argument("--all", action="store_true", help="every lock of the namespace")
    p.add_argument("uris", nargs="*", default=[], metavar="URI", help="the locks of these resources")
    p.add_argument("--reason", required=True, help="why; recorded as kubelock.dev/break-reason")
    p = add("revoke", "ask the holder of a lock to give it back (an administrator's request): it is told at once, "
            "and its lock is broken if it still holds it when --grace runs out",
            "PROG revoke --request deploy://api-prod --grace 60 --reason 'hotfix deploy waiting'",
            "PROG revoke --request db://reports --holder user:alice/worker-1 --grace 0",
            parent=_common(holder=False))
    p.add_argument("--request", action="store_true", required=True,
                   help="record a revocation request on the holder's claim (the operator breaks the lock after "
                   "the grace); to break it now, use unlock")
    p.add_argument("uri", help="resource URI of the held lock")
    p.add_argument("--holder", dest="revoke_holders", action="append", default=[], metavar="H",
                   help="only this holder's claim (repeatable; default: every holder of URI)")
    p.add_argument("--grace", type=_whole_seconds, default=30,
                   help="seconds the holder has to release, 0-86400 (default 30)")
    p.add_argument("--reason", default="", help="why; shown to the holder and recorded on the claim and in Events")
    p = add("run", "run a command while holding a lock: renewed while it runs, released when it ends; the "
            "command is stopped (SIGTERM, then SIGKILL after --grace) if the lock is lost",
            "PROG run deploy://api-prod -- ./deploy.sh --env prod",
            "PROG run deploy://api-prod --wait --timeout 300 --ttl 60 -- make release",
            "PROG run github://acme/app/issues/42 -o json -- sh -c 'echo token $KUBELOCK_FENCING_TOKEN'",
            "PROG run github://acme/app/issues/42 git://acme/app/fix-42 -- ./fix.sh   # both, or it never starts")
    p.usage = (f"{prog} run [options] [--wait [--timeout S] [--priority N]] [--ttl S] [--renew-deadline S] "
               "[--grace S] [--shared | --permits N] URI [URI...] -- CMD [ARGS...]")
    p.epilog = (f"{p.epilog}\n\nthe command's environment: {', '.join(runner.ENVIRONMENT)}\n"
                f"exit code: the command's (128+N for signal N); {ExitCode.LOST.value} when the lock was lost and the "
                f"command stopped; as `{prog} acquire` when the lock could not be taken (the command never started)")
    p.add_argument("uri", nargs="+", help=URIS_HELP)
    p.add_argument("--wait", action="store_true", help="queue until granted instead of failing when held")
    p.add_argument("--timeout", type=_seconds, help="with --wait: give up after this many seconds")
    p.add_argument("--ttl", type=_whole_seconds, help="lease in seconds, 1-86400 (default: the operator's, 1800)")
    p.add_argument("--priority", type=_priority, default=0, help=PRIORITY_HELP)
    p.add_argument("--renew-deadline", type=_seconds, help="stop the command when no renewal succeeded for this "
                   "many seconds; less than the TTL (default: 2/3 of it)")
    p.add_argument("--grace", type=_seconds, help="seconds between SIGTERM and SIGKILL when the lock is lost "
                   "(default: half of TTL minus renew deadline, at most 10); renew deadline plus grace must not "
                   "exceed the TTL")
    mode_options(p)
    p = add("graph", "the wait-for graph as Graphviz DOT (or SVG)",
            "PROG graph | dot -Tpng > waits.png", "PROG graph --svg > waits.svg", "PROG graph -o json")
    fmt = p.add_mutually_exclusive_group()
    p.remember([fmt.add_argument("--dot", action="store_true", help="DOT text (default)"),
                fmt.add_argument("--svg", action="store_true", help="SVG, rendered by graphviz's `dot`")])
    p = parser.command("completion", commands.add_parser(
        "completion", help="print a shell completion script", description="print a shell completion script",
        epilog=_examples(prog, "source <(PROG completion bash)     # in ~/.bashrc",
                         "source <(PROG completion zsh)      # in ~/.zshrc",
                         "PROG completion fish | source      # in ~/.config/fish/config.fish"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    p.add_argument("shell", choices=completion.SHELLS,
                   type=usage.choice("the shell", completion.SHELLS, f"source <({prog} completion bash)"))
    return parser


# ---- commands ---------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, payload: output.Json, human: str, code: int = ExitCode.OK) -> int:
    if args.output in ("json", "yaml"):
        print(output.render(payload, args.output), end="")
    elif human:
        print(human, file=sys.stdout if code == ExitCode.OK else sys.stderr)
    return code


async def cmd_acquire(client: AsyncLockClient, args: argparse.Namespace) -> int:
    unanswered = UnansweredNotice(sys.stderr)  # no operator's word after a few seconds: say what it waits for
    if args.wait:
        progress = QueueProgress(sys.stderr)
        try:
            result = await client.acquire(args.uri, wait=True, timeout=args.timeout, ttl=args.ttl, on_update=progress,
                                          priority=args.priority, on_unanswered=unanswered, **need_of(args))
        finally:
            progress.clear()
    else:
        result = await client.try_acquire(args.uri, ttl=args.ttl, on_unanswered=unanswered, **need_of(args))
    if not result.ok:
        message = output.held_message(result.resource, result.holder, format_time(result.held_since),
                                      f"{args.prog} acquire --wait", several=len(result.resources) > 1,
                                      operator_message=result.message)
        return _emit(args, output.acquired(result, message), message, ExitCode.HELD)
    text = (f"acquired {result.resource} as {result.holder} ({output.tokens_text(result.fencing_tokens)}, "
            f"expires in {output.until(result.expires_at)})")
    return _emit(args, output.acquired(result), text)


async def cmd_release(client: AsyncLockClient, args: argparse.Namespace) -> int:
    result = await client.release(args.uri)
    verb = "left the queue for" if result.previous_phase is Phase.PENDING else "released"
    return _emit(args, output.released(result), f"{verb} {result.resource}")


async def cmd_heartbeat(client: AsyncLockClient, args: argparse.Namespace) -> int:
    result = await client.heartbeat(args.uri)
    text = f"renewed {result.resource}: expires in {output.until(result.expires_at)}"
    return _emit(args, output.renewed(result), text)


async def cmd_status(client: AsyncLockClient, args: argparse.Namespace) -> int:
    items = await AsyncAdmin(client).status(None if args.all_namespaces else client.namespace)
    payload = {"ok": True, "locks": [output.lock_status(s) for s in items]}
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {client.namespace}"
        return _emit(args, payload, f"no locks held in {where}")
    wide = args.output == "wide"
    return _emit(args, payload, output.status_table(items, all_namespaces=args.all_namespaces, wide=wide))


async def cmd_list(client: AsyncLockClient, args: argparse.Namespace) -> int:
    try:
        ident = await client.identity()
        items, holder, who = await client.list(), ident.holder, ident.identity or ident.holder
    except InstanceRequired:  # no instance given: the claims of every instance of yours
        items, holder, who = await client.list(all_instances=True), None, (await client.who()).identity
    payload = {"ok": True, "holder": holder, "identity": who, "claims": [output.claim(c) for c in items]}
    if not items:
        return _emit(args, payload, f"{holder or who} has no claims in namespace {client.namespace}")
    return _emit(args, payload, output.claims_table(items, wide=args.output == "wide"))


async def cmd_why(client: AsyncLockClient, args: argparse.Namespace) -> int:
    why = await AsyncAdmin(client).explain(args.target)
    return _emit(args, output.explanation(why), output.explanation_text(why))


async def cmd_unlock(client: AsyncLockClient, args: argparse.Namespace) -> int:
    broken = await AsyncAdmin(client).break_locks(
        reason=args.reason, holders=args.break_holders, uris=args.uris, everything=args.all
    )
    lines = [
        f"broke the lock on {b.lock.resource} held by {b.lock.holder} (fencing token {b.lock.fencing_token}); "
        f"recorded broken-by={b.actor}"
        for b in broken
    ] or ["nothing broken: the matching locks were released meanwhile"]
    return _emit(args, output.broken(broken), "\n".join(lines))


async def cmd_revoke(client: AsyncLockClient, args: argparse.Namespace) -> int:
    asked = await AsyncAdmin(client).request_revocation(
        args.uri, holders=args.revoke_holders, grace_seconds=args.grace, reason=args.reason
    )
    lines = [
        f"asked {r.claim.holder} to give back {r.claim.resource} within {r.grace_seconds}s (claim {r.claim.name}); "
        "the lock is broken if it still holds it then"
        for r in asked
    ] or ["nothing asked: the lock was released meanwhile"]
    return _emit(args, output.revocation_requests(asked), "\n".join(lines))


async def cmd_graph(client: AsyncLockClient, args: argparse.Namespace) -> int:
    dot_binary = _svg_renderer(args)  # None: DOT text (check_input already refused --svg without graphviz)
    graph = await AsyncAdmin(client).graph(client.namespace)
    dot = waitgraph.to_dot(graph, name=f"kubelock wait-for graph of {client.namespace}")
    if args.output in ("json", "yaml"):
        cycles = waitgraph.cycles(graph)
        payload = {
            "ok": True,
            "heldBy": {resource: holders[0] for resource, holders in graph.held_by.items()},  # the first grant's
            "heldByAll": {resource: list(holders) for resource, holders in graph.held_by.items()},
            "waits": [{"holder": w, "resource": r} for w, r in graph.waits],
            "cycles": [list(c) for c in cycles],
            "dot": dot,
        }
        print(output.render(payload, args.output), end="")
        return ExitCode.OK
    if dot_binary is None:
        sys.stdout.write(dot)
        sys.stdout.flush()
        return ExitCode.OK
    process = await asyncio.create_subprocess_exec(
        dot_binary, "-Tsvg", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    svg, problems = await process.communicate(dot.encode())
    if process.returncode != 0:
        raise InvalidInput(f"graphviz failed: {problems.decode(errors='replace').strip()}")
    sys.stdout.buffer.write(svg)
    sys.stdout.flush()
    return ExitCode.OK


async def cmd_run(client: AsyncLockClient, args: argparse.Namespace) -> int:
    plan = runner.timing(args.ttl, args.renew_deadline, args.grace)
    # No operator's word after a few seconds: one stderr line, as for `acquire` (not the SDK's log).
    lease = client.lock(args.uri, ttl=args.ttl, wait=args.wait, timeout=args.timeout,
                        renew_deadline=plan.renew_deadline, priority=args.priority,
                        on_unanswered=UnansweredNotice(sys.stderr), **need_of(args))
    await lease.__aenter__()
    try:
        env = runner.child_environment(lease.claim, os.environ)
        outcome = await runner.supervise(lease, args.child, env, plan.grace)
    except BaseException as error:
        await lease.__aexit__(type(error), error, error.__traceback__)
        raise
    # The command has ended: a stop that comes now waits for the release (one request) instead of
    # cutting it short, and the command's result stands.
    with signals.held(asyncio.get_running_loop()):
        try:
            await lease.__aexit__(None, None, None)
        except LockError as error:  # the command's result stands; the lease runs out by itself
            lease.release_error = error
            print(f"{args.prog} run: could not release {lease.resource}: {error.message}", file=sys.stderr)
    # After a loss the release is still tried (the claim may be there) but its refusal is not raised:
    # the lease keeps it and has said it on stderr already (the SDK's warning), with its reason.
    released = lease.release_error is None
    if outcome.lost is not None and args.output not in ("json", "yaml"):
        said = outcome.lost is lease.error
        print(f"{args.prog} run: {stopped_after_loss(lease.resource, outcome.lost, outcome, said=said)}",
              file=sys.stderr)
    if outcome.revocation is not None and outcome.lost is None and args.output not in ("json", "yaml"):
        r = outcome.revocation
        print(f"{args.prog} run: {r.requested_by} asked to give back {lease.resource}"
              f"{': ' + r.reason if r.reason else ''}; the command was sent SIGTERM"
              f"{' and killed before the deadline' if outcome.killed else ''} and the lock released", file=sys.stderr)
    if outcome.left_behind and args.output not in ("json", "yaml"):
        print(f"{args.prog} run: the command left {outcome.left_behind} process(es) running; stopped (SIGTERM, "
              f"then SIGKILL after the grace) before the lock was released", file=sys.stderr)
    if args.output in ("json", "yaml"):
        print(output.render(output.ran(lease.claim, outcome, released=released), args.output), end="")
    return outcome.exit_code


def stopped_after_loss(resource: str, lost: LockError, outcome: runner.Outcome, *, said: bool) -> str:
    """What `kubelock run` says when a loss stopped the command. The loss itself, with its reason, is
    the lease's to say (the SDK's warning "lost the lock on X: <reason>", on stderr in every output
    mode, as for any program using the SDK): `said` is true when the lease reported it, and then
    only what `kubelock run` did about it is added, not the loss a second time. A loss the lease did
    not report (its watchdog killed the command while kubelock run could not act) is said here."""
    stopped = "SIGTERM, then SIGKILL" if outcome.killed else "SIGTERM"
    if said:
        return f"the command was stopped ({stopped}) because the lock on {resource} was lost"
    return f"lost the lock on {resource}: {lost.message}; the command was stopped ({stopped})"


HANDLERS: dict[str, Handler] = {
    "acquire": cmd_acquire,
    "release": cmd_release,
    "heartbeat": cmd_heartbeat,
    "status": cmd_status,
    "list": cmd_list,
    "why": cmd_why,
    "unlock": cmd_unlock,
    "revoke": cmd_revoke,
    "graph": cmd_graph,
    "run": cmd_run,
}


# ---- running ----------------------------------------------------------------------------------


def check_input(args: argparse.Namespace) -> None:
    """Refuse bad input before anything else (even before looking for a kubeconfig)."""
    if getattr(args, "command", None) == "run":  # `run URI CMD`: CMD was taken for a URI; say where it goes
        runner.command_of(args.child)
    if getattr(args, "uri", None) is not None:
        target = Target.of(args.uri)  # one URI, or several: at most 16, none twice
        if getattr(args, "command", None) in ("acquire", "run"):
            target.to_claim()  # a new claim's URIs in Unicode NFC (release, status take any spelling)
    validation.ttl(getattr(args, "ttl", None))
    validation.timeout(getattr(args, "timeout", None))
    if getattr(args, "timeout", None) is not None and not getattr(args, "wait", False):
        raise InvalidInput("--timeout needs --wait")
    need = need_of(args)
    validation.need(need["mode"], need["permits"])
    if getattr(args, "priority", 0) and not getattr(args, "wait", False):
        raise InvalidInput("--priority needs --wait (it orders the queue)")
    if getattr(args, "namespace", None) is not None:
        validation.namespace(args.namespace)
    if getattr(args, "holder", None) is not None:
        validation.holder(args.holder)
    if getattr(args, "instance", None) is not None:
        validation.instance(args.instance)
    impersonation(args)
    if getattr(args, "command", None) == "run":
        runner.command_of(args.child)
        runner.timing(args.ttl, args.renew_deadline, args.grace)
    if getattr(args, "command", None) in ("unlock", "revoke"):  # an admin's typo is told before any request
        admin.check_reason(args.reason, required=args.command == "unlock")
        for who in args.break_holders if args.command == "unlock" else args.revoke_holders:
            validation.holder(who)
    if getattr(args, "command", None) == "revoke":
        admin.check_grace(args.grace)
    if getattr(args, "command", None) == "graph":
        _svg_renderer(args)  # before looking for a cluster: without graphviz, --svg cannot succeed anyway


NO_GRAPHVIZ = (
    "--svg needs graphviz's `dot` command, and there is none on PATH: install graphviz (the package `graphviz` "
    "of apt, dnf, apk or Homebrew), or leave out --svg for the DOT text and render it elsewhere "
    "(`kubelock graph > waits.dot`, then `dot -Tsvg waits.dot > waits.svg`)"
)


def _svg_renderer(args: argparse.Namespace) -> str | None:
    """graphviz's `dot` when `graph` renders SVG (--svg, not -o json|yaml), else None; InvalidInput
    (exit 4, as any option that cannot be honoured) when it renders SVG and `dot` is not on PATH."""
    if not args.svg or args.output in ("json", "yaml"):
        return None
    found = shutil.which("dot")
    if found is None:
        raise InvalidInput(NO_GRAPHVIZ)
    return found


def impersonation(args: argparse.Namespace) -> Impersonation | None:
    """--as, --as-group and --as-uid; kubectl's rule holds: groups or a uid need a user."""
    user, groups, uid = getattr(args, "as_user", None), getattr(args, "as_groups", None), getattr(args, "as_uid", None)
    if user is None:
        if groups or uid:
            raise InvalidInput("--as-group and --as-uid need --as (the user to act as)")
        return None
    if not user.strip():
        raise InvalidInput("--as needs a user name")
    if any(not group.strip() for group in groups or ()):
        raise InvalidInput("--as-group needs a group name")
    try:
        return Impersonation(user=user, uid=uid or None, groups=tuple(groups or ()))
    except ValueError as error:  # a line break or another control character
        raise InvalidInput(f"--as, --as-group, --as-uid: {error}") from None


def make_client(args: argparse.Namespace) -> AsyncLockClient:
    return AsyncLockClient(
        impersonate=impersonation(args),
        namespace=getattr(args, "namespace", None),
        holder=getattr(args, "holder", None),
        instance=getattr(args, "instance", None),
        generate_instance=False,  # rlock, rlock-heartbeat and runlock are separate processes: see sdk.identity
        kubeconfig=getattr(args, "kubeconfig", None),
        context=getattr(args, "context", None),
    )


async def _run(handler: Handler, args: argparse.Namespace, made: list[AsyncLockClient]) -> int:
    async with make_client(args) as client:
        made.append(client)
        return await handler(client, args)


def run(
    handler: Handler,
    args: argparse.Namespace,
    on_error: Callable[[LockError], None],
) -> int:
    """Run one command on a fresh event loop; Ctrl-C, SIGTERM and SIGHUP cancel it (withdrawing a
    pending claim); see `kubelock.cli.signals`."""
    try:
        check_input(args)
        made: list[AsyncLockClient] = []
        return signals.run(_run(handler, args, made),
                           unwithdrawn=lambda: [note for client in made for note in client.unwithdrawn.values()])
    except LockError as error:
        on_error(error)
        return for_error(error)
    except KeyboardInterrupt:
        # Ctrl-C ends a command as SIGTERM and SIGHUP do, and is said the same way, once, by the
        # caller's report: `-o json` still prints its one object (it printed nothing before).
        on_error(signals.Stopped(signal.SIGINT))
        return ExitCode.INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            code = _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be handled
    except BrokenPipeError:
        return reader_went_away()
    return code


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """`kubelock run URI -- CMD ARGS`: the command is everything after the first `--`, never parsed
    as options of kubelock's (None: there is no `--`)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, None
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def usage_mistake(parser: Parser, argv: Sequence[str]) -> str | None:
    """What argparse would refuse unclearly, said clearly (`kubelock.cli.usage`)."""
    options = parser.options()  # the program's own options, those it takes before the command
    valued = {name for name, action in options.items() if action.nargs != 0}
    command = next((token for token in argv if token in parser.subcommands), None)
    takes_a_lock = {"acquire": f"{parser.prog} acquire URI{{}}", "run": f"{parser.prog} run URI{{}} -- CMD"}
    return (
        usage.wait_with_value(argv)
        or (usage.mode_flag(argv, example=takes_a_lock[command]) if command in takes_a_lock else None)
        or usage.misplaced_option(
            argv, prog=parser.prog, commands={name: sub.options().keys() for name, sub in parser.subcommands.items()},
            global_options=options.keys(), valued=valued,
        )
    )


def _main(argv: Sequence[str] | None) -> int:
    prog = program_name()
    parser = build_parser(prog)
    everything = sys.argv[1:] if argv is None else list(argv)
    own, child = split_command(everything)
    if "run" not in own:  # elsewhere `--` means what argparse makes of it
        own, child = everything, None
    if (mistake := usage_mistake(parser, own)) is not None:
        parser.error(mistake)
    args, extra = parser.parse_known_args(own)
    if extra and args.command == "run" and child is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}; the command goes after `--`: "
                     f"{prog} run URI [URI...] -- CMD [ARGS...]")
    if extra:
        parser.error(usage.unknown_options(extra, prog=prog, command=args.command,
                                           options=parser.subcommands[args.command].options().keys()))
    if (conflict := usage.output_conflict(getattr(args, "json", False), getattr(args, "output", None))) is not None:
        parser.error(conflict)
    args.child = child
    args.prog = prog
    args.output = "json" if getattr(args, "json", False) else getattr(args, "output", None)
    if args.command == "completion":
        return print_safely(completion.script(parser, args.shell, prog.replace(" ", "-")))

    # The commands that take a lock, and so may be told to come back when a resting resource is free.
    wait_command = f"{prog} {args.command} --wait" if args.command in ("acquire", "run") else None

    def report(error: LockError) -> None:
        if args.output in ("json", "yaml"):
            failure = output.failure(error, getattr(args, "uri", None), wait_command=wait_command)
            print(output.render(failure, args.output), end="")
        else:
            advice = "; release every lock you hold, back off and retry" if isinstance(error, Deadlock) else ""
            print(f"{prog} {args.command}: {output.in_command_words(error.message, wait_command)}{advice}",
                  file=sys.stderr)

    try:
        return run(HANDLERS[args.command], args, report)
    except BrokenPipeError:
        return reader_went_away()
    except Exception:  # a bug: say so, and never look like any lock outcome
        traceback.print_exc()
        if args.output in ("json", "yaml"):
            failure = {"ok": False, "error": "InternalError", "message": "kubelock failed; see stderr"}
            print(output.render(failure, args.output), end="")
        return ExitCode.INTERNAL


def print_safely(text: str) -> int:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        return reader_went_away()
    return ExitCode.OK


def reader_went_away() -> int:
    """stdout was closed by its reader (`kubelock graph | head`): end quietly, as `cat` does, by
    the SIGPIPE that the shell reports as 141, instead of a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush into the closed pipe at exit
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    return 128 + signal.SIGPIPE  # only reached where SIGPIPE cannot end the process


if __name__ == "__main__":
    sys.exit(main())
