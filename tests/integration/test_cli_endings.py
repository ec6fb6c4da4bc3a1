"""Every ending of `kubelock acquire`, `run`, `heartbeat`, `release`, `unlock`, `status` and `why`,
run as real processes against the real API server and an operator of this tree, in text and in
`-o json`: each thing that happened is said exactly once, on the right stream (data on stdout,
diagnostics on stderr), with its reason and the documented exit code; `-o json` prints one JSON
document on stdout whatever the ending.

Who says what (one owner per message):
- a failure of the command itself: the CLI's `report` (`kubelock CMD: ...` on stderr, or the one
  JSON object on stdout with `-o json`, and then nothing on stderr);
- the loss of a lease under `kubelock run`: the SDK's lease ("lost the lock on X: <reason>", on
  stderr in both modes); `kubelock run` adds only what it did about it (stopped the command);
- a stop by SIGTERM or SIGINT while waiting: the CLI's `report`, as any other ending.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from kubernetes.client import ApiClient

from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.testbed import ControlPlane
from tests.support.access import static_agents_namespace, user_environment
from tests.support.claims import Locks, phase_of, wait_until
from tests.support.commands import Run, finish, run, start
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, dead_kubeconfig, kubeconfig_for

PREFIX = "kl-endings-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
INSTANCE = "e1"
MODES = ("text", "json")


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    with static_agents_namespace(admin_api, control_plane, PREFIX, lock_admin=True) as name:
        yield name


class Cli:
    """`kubelock` as the test bed's static users in one namespace."""

    def __init__(self, control_plane: ControlPlane, namespace: str, admin_api: ApiClient) -> None:
        self.control_plane = control_plane
        self.namespace = namespace
        self.locks = Locks(admin_api, namespace)

    def env(self, user: str) -> dict[str, str]:
        return user_environment(self.control_plane, user, self.namespace, INSTANCE)

    def __call__(self, user: str, mode: str, command: str, *args: str) -> Run:
        return run("kubelock", command, *self.mode_args(mode), *args, env=self.env(user), timeout=DEADLINE)

    def start(self, user: str, mode: str, command: str, *args: str) -> Any:
        return start("kubelock", command, *self.mode_args(mode), *args, env=self.env(user))

    @staticmethod
    def mode_args(mode: str) -> tuple[str, ...]:
        """Before the arguments: after `run URI --` they would be the command's."""
        return ("-o", "json") if mode == "json" else ()

    def wait_phase(self, user: str, uri: str, phase: str) -> None:
        name = claim_name(f"user:{user}/{INSTANCE}", normalise(uri))
        wait_until(lambda: any(c["metadata"]["name"] == name and phase_of(c) == phase for c in self.locks.claims()),
                   what=f"{user}'s claim on {uri} {phase}", timeout=DEADLINE)


@pytest.fixture
def cli(control_plane: ControlPlane, ns: str, admin_api: ApiClient) -> Cli:
    return Cli(control_plane, ns, admin_api)


# ---- what every ending must look like -------------------------------------------------------------


def succeeded(got: Run, mode: str, words: str) -> dict[str, Any] | None:
    """Exit 0; the result said once on stdout, nothing on stderr."""
    assert got.code == ExitCode.OK, got
    assert got.stderr == "", got
    if mode == "json":
        assert got.json["ok"] is True, got
        return got.json
    assert got.stdout.count(words) == 1, got
    return None


def failed(got: Run, mode: str, code: int, command: str, words: str, error: str) -> None:
    """The documented exit code; the reason said once: in text, one `kubelock COMMAND:` line on
    stderr (`words` in it once) and nothing on stdout; in JSON, one object on stdout naming `error`,
    nothing on stderr."""
    print(f"{command} ({mode}): exit {got.code}; stdout {got.stdout!r}; stderr {got.stderr!r}")
    assert got.code == code, got
    if mode == "json":
        assert got.stderr == "", got
        assert got.json["ok"] is False and got.json["error"] == error, got
        assert words in got.json["message"], got
        return
    assert got.stdout == "", got
    assert got.stderr.count(f"kubelock {command}: ") == 1 and len(got.stderr.splitlines()) == 1, got
    assert got.stderr.count(words) == 1 if words else True, got


def last_json(stdout: str) -> dict[str, Any]:
    """`kubelock run -o json`: the result is the last line, after what the command printed."""
    payload = json.loads(stdout.splitlines()[-1])
    assert isinstance(payload, dict)
    return payload


# ---- acquire, heartbeat, release, status, why -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_acquire_heartbeat_release_and_their_refusals(cli: Cli, mode: str) -> None:
    uri = f"deploy://endings-{mode}"
    got = cli("alice", mode, "acquire", uri, "--ttl", "600")
    succeeded(got, mode, f"acquired {uri}")

    busy = cli("bob", mode, "acquire", uri)
    # A refused try-lock is a result, not an error: JSON says HeldByAnotherHolder, text names the holder.
    assert busy.code == ExitCode.HELD, busy
    if mode == "json":
        assert busy.stderr == "" and busy.json["ok"] is False and busy.json["error"] == "HeldByAnotherHolder", busy
    else:
        assert busy.stdout == "" and len(busy.stderr.splitlines()) == 1, busy
        assert busy.stderr.count(f"user:alice/{INSTANCE}") == 1, busy

    timed_out = cli("bob", mode, "acquire", uri, "--wait", "--timeout", "2")
    failed(timed_out, mode, ExitCode.TIMED_OUT, "acquire", f"waiting 2s for {uri}", "WaitTimedOut")

    succeeded(cli("alice", mode, "heartbeat", uri), mode, f"renewed {uri}")
    status = cli("bob", mode, "status")
    payload = succeeded(status, mode, uri)
    if payload is not None:
        assert [lock["holder"] for lock in payload["locks"] if lock["resource"] == uri] == [f"user:alice/{INSTANCE}"]
    why = cli("alice", mode, "why", uri)
    succeeded(why, mode, f"holds {uri}")

    succeeded(cli("alice", mode, "release", uri), mode, f"released {uri}")
    failed(cli("alice", mode, "release", uri), mode, ExitCode.NOT_FOUND, "release", uri, "NotFound")
    failed(cli("alice", mode, "heartbeat", uri), mode, ExitCode.NOT_FOUND, "heartbeat", uri, "NotFound")
    failed(cli("alice", mode, "why", uri), mode, ExitCode.NOT_FOUND, "why", uri, "NotFound")


@pytest.mark.parametrize("mode", MODES)
def test_refusals_before_and_at_the_api_server(cli: Cli, mode: str, tmp_path: Path) -> None:
    uri = f"deploy://endings-refused-{mode}"
    failed(cli("alice", mode, "acquire", "no-scheme"), mode, ExitCode.INVALID_INPUT, "acquire", "no-scheme",
           "InvalidInput")
    failed(cli("alice", mode, "acquire", uri, "--timeout", "3"), mode, ExitCode.INVALID_INPUT, "acquire",
           "--timeout needs --wait", "InvalidInput")
    # carol has no role in the namespace: the API server refuses her (403).
    failed(cli("carol", mode, "acquire", uri), mode, ExitCode.FORBIDDEN, "acquire", "", "Forbidden")
    failed(cli("carol", mode, "release", uri), mode, ExitCode.FORBIDDEN, "release", "", "Forbidden")
    # alice is an agent, not an admin: unlock is refused before anything is changed.
    failed(cli("alice", mode, "unlock", uri, "--reason", "x"), mode, ExitCode.FORBIDDEN, "unlock", "", "Forbidden")

    bogus = cli.control_plane.token_kubeconfig("not-a-token-the-server-knows", tmp_path / "bogus.kubeconfig")
    env = user_environment(cli.control_plane, "alice", cli.namespace, INSTANCE) | {"KUBECONFIG": str(bogus)}
    refused = run("kubelock", "acquire", uri, *Cli.mode_args(mode), env=env, timeout=DEADLINE)
    failed(refused, mode, ExitCode.FORBIDDEN, "acquire", "did not accept the credentials", "Forbidden")

    dead = dead_kubeconfig(cli.control_plane.user_kubeconfig("alice"), tmp_path / "dead.kubeconfig")
    unreachable = run("kubelock", "acquire", uri, *Cli.mode_args(mode), env=env | {"KUBECONFIG": str(dead)},
                      timeout=DEADLINE)
    failed(unreachable, mode, ExitCode.UNREACHABLE, "acquire", "", "Unreachable")
    assert [c for c in cli.locks.claims() if c["spec"]["resource"] == uri] == []  # nothing was claimed


# ---- deadlock, and signals while waiting ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_deadlock_and_a_stop_while_waiting(cli: Cli, mode: str) -> None:
    """alice holds A and waits for B; bob holds B and asks for A: a deadlock (exit 5). alice's wait
    is then stopped by SIGTERM (143) and a third waiter's by SIGINT (130), each said once, and in
    JSON as one object."""
    a, b = f"deploy://endings-a-{mode}", f"deploy://endings-b-{mode}"
    succeeded(cli("alice", mode, "acquire", a), mode, f"acquired {a}")
    succeeded(cli("bob", mode, "acquire", b), mode, f"acquired {b}")
    alice_waits = cli.start("alice", mode, "acquire", b, "--wait")
    try:
        cli.wait_phase("alice", b, "Pending")
        deadlock = cli("bob", mode, "acquire", a, "--wait")
        failed(deadlock, mode, ExitCode.DEADLOCK, "acquire", "", "DeadlockDetected")
        if mode == "text":
            assert deadlock.stderr.count("release every lock you hold") == 1, deadlock

        alice_waits.send_signal(signal.SIGTERM)
        stopped = finish(alice_waits, timeout=DEADLINE)
        failed(stopped, mode, ExitCode.TERMINATED, "acquire", "stopped by SIGTERM", "Terminated")

        lockadmin_waits = cli.start("lockadmin", mode, "acquire", b, "--wait")
        cli.wait_phase("lockadmin", b, "Pending")
        lockadmin_waits.send_signal(signal.SIGINT)
        interrupted = finish(lockadmin_waits, timeout=DEADLINE)
        failed(interrupted, mode, ExitCode.INTERRUPTED, "acquire", "stopped by SIGINT", "Interrupted")
    finally:
        alice_waits.kill()
    succeeded(cli("alice", mode, "release", a), mode, f"released {a}")
    succeeded(cli("bob", mode, "release", b), mode, f"released {b}")


# ---- kubelock run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_run_granted_refused_and_stopped(cli: Cli, mode: str) -> None:
    uri = f"deploy://endings-run-{mode}"
    done = cli("alice", mode, "run", uri, "--", "sh", "-c", "echo working")
    assert done.code == 0 and done.stderr == "", done
    assert done.stdout.count("working") == 1, done
    if mode == "json":
        assert last_json(done.stdout)["endedBy"] == "CommandExited", done

    succeeded(cli("bob", mode, "acquire", uri), mode, f"acquired {uri}")
    busy = cli("alice", mode, "run", uri, "--", "sh", "-c", "echo never")
    assert busy.code == ExitCode.HELD and "never" not in busy.stdout, busy
    if mode == "json":
        assert busy.stderr == "" and busy.json["error"] == "HeldByAnotherHolder", busy
    else:
        assert busy.stdout == "" and busy.stderr.count("kubelock run: ") == 1, busy
    succeeded(cli("bob", mode, "release", uri), mode, f"released {uri}")

    # SIGTERM to kubelock run while its command runs: passed on, the command dies of it (128+15).
    running = cli.start("alice", mode, "run", uri, "--", "sh", "-c", "echo started; exec sleep 300")
    assert running.stdout is not None
    assert running.stdout.readline().strip() == "started"
    running.send_signal(signal.SIGTERM)
    ended = finish(running, timeout=DEADLINE)
    assert ended.code == 128 + signal.SIGTERM and ended.stderr == "", ended
    if mode == "json":
        got = json.loads(ended.stdout)  # the one line after "started", read above
        assert got["endedBy"] == "Signal" and got["forwardedSignals"] == ["SIGTERM"] and got["released"], got
    else:
        assert ended.stdout == "", ended


@pytest.mark.parametrize("mode", MODES)
def test_run_whose_lock_is_broken_says_the_loss_once(cli: Cli, mode: str) -> None:
    """An administrator breaks the lock of a running `kubelock run`: exit 8, the loss said once
    with its reason (by the lease), the stopping of the command once (by `kubelock run`), and with
    `-o json` the result as the last line of stdout."""
    uri = f"deploy://endings-broken-{mode}"
    running = cli.start("alice", mode, "run", uri, "--ttl", "60", "--", "sh", "-c", "echo started; exec sleep 300")
    assert running.stdout is not None
    assert running.stdout.readline().strip() == "started"
    broke = cli("lockadmin", "text", "unlock", uri, "--reason", "endings test")
    assert broke.code == 0 and broke.stdout.count("broke the lock on") == 1 and broke.stderr == "", broke
    ended = finish(running, timeout=DEADLINE)
    print(f"kubelock run ({mode}): exit {ended.code}; stdout {ended.stdout!r}; stderr {ended.stderr!r}")
    assert ended.code == ExitCode.LOST, ended
    assert ended.stderr.count("lost the lock on") == 1, ended.stderr
    assert ended.stderr.count("endings test") == 1, ended.stderr  # the admin's reason, once
    if mode == "json":
        got = json.loads(ended.stdout)
        assert got["lost"] is True and got["endedBy"] == "LockLost" and got["error"] == "LockBroken", got
        assert len(ended.stderr.splitlines()) == 1, ended.stderr
    else:
        assert ended.stdout == "", ended
        assert ended.stderr.count("kubelock run: ") == 1 and "the command was stopped" in ended.stderr, ended
        assert len(ended.stderr.splitlines()) == 2, ended.stderr


@contextlib.contextmanager
def run_through_a_link(cli: Cli, mode: str, tmp_path: Path, *args: str) -> Iterator[tuple[Partition, Popen[str]]]:
    """`kubelock run ARGS` as alice through a link the test can slow or cut; at the end the link is
    cut and the process, if it still runs, killed."""
    partition = Partition(cli.control_plane.server)
    config = kubeconfig_for(cli.control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "via-proxy")
    process = start("kubelock", "run", *Cli.mode_args(mode), *args, env=cli.env("alice") | {"KUBECONFIG": str(config)})
    try:
        yield partition, process
    finally:
        partition.cut()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("mode", MODES)
def test_run_cut_off_from_the_api_server_says_the_loss_once(cli: Cli, mode: str, tmp_path: Path) -> None:
    """`kubelock run --ttl 8 --renew-deadline 4` whose API server is cut off: no renewal within the
    renew deadline is the loss (exit 8), said once with its reason; what else failed meanwhile (a
    renewal, the release) is said by its own line."""
    uri = f"deploy://endings-cut-{mode}"
    with run_through_a_link(cli, mode, tmp_path, uri, "--ttl", "8", "--renew-deadline", "4", "--grace", "2",
                            "--", "sh", "-c", "echo started; exec sleep 300") as (partition, process):
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        partition.cut()
        ended = finish(process, timeout=DEADLINE)
    print(f"kubelock run ({mode}): exit {ended.code}; stdout {ended.stdout!r}; stderr {ended.stderr!r}")
    assert ended.code == ExitCode.LOST, ended
    assert ended.stderr.count("lost the lock on") == 1, ended.stderr
    assert ended.stderr.count("within the renew deadline") == 1, ended.stderr  # the reason, once
    if mode == "json":
        got = json.loads(ended.stdout)
        assert got["endedBy"] == "LockLost" and got["error"] == "LeaseExpired" and got["lost"] is True, got
        assert ended.stderr.count("kubelock run: ") == 0, ended.stderr
    else:
        assert ended.stdout == "", ended
        assert ended.stderr.count("kubelock run: the command was stopped") == 1, ended.stderr


@pytest.mark.parametrize("mode", MODES)
def test_run_stopped_while_it_releases_finishes_the_release(cli: Cli, mode: str, tmp_path: Path) -> None:
    """SIGTERM to `kubelock run` after its command ended, while its release is on the way (held 4 s by
    a slow link): the release is finished and the command's result printed (exit 0). Before, the
    signal's default action killed the process in the middle: no result, and the lock could stay
    held by nobody until its lease ended."""
    uri = f"deploy://endings-releasing-{mode}"
    go = tmp_path / "go"
    command = f"echo started; while [ ! -e {go} ]; do sleep 0.05; done; echo ending"
    with run_through_a_link(cli, mode, tmp_path, uri, "--ttl", "60", "--", "sh", "-c", command) as (partition, process):
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        cli.wait_phase("alice", uri, "Held")
        partition.delay(4.0)  # what kubelock run sends from now on: its release
        go.touch()
        assert process.stdout.readline().strip() == "ending"
        time.sleep(1.0)  # the command has exited (it printed its last line); the release is held in the link
        assert process.poll() is None, "kubelock run ended before its release could be held"
        process.send_signal(signal.SIGTERM)
        ended = finish(process, timeout=DEADLINE)
    print(f"kubelock run ({mode}): exit {ended.code}; stdout {ended.stdout!r}; stderr {ended.stderr!r}")
    assert ended.code == 0, ended
    name = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    assert all(c["metadata"]["name"] != name for c in cli.locks.claims()), "the claim was not released"
    if mode == "json":
        got = json.loads(ended.stdout)
        assert got["endedBy"] == "CommandExited" and got["released"] is True, got
    else:
        assert ended.stdout == "" and ended.stderr == "", ended
