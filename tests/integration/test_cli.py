"""The `kubelock` CLI and the drop-in `rlock`/`runlock`/`rlock-heartbeat` commands, run as real
processes against the real control plane and operator: every exit code, the JSON they print, the
admin break, Ctrl-C, and the examples in docs/SKILL.md."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import watch
from kubernetes.client import (
    ApiClient,
    ApiException,
    CustomObjectsApi,
)

from kubelock.api.constants import BREAK_ACTOR_ANNOTATION, BREAK_REASON_ANNOTATION
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, lock_name, normalise
from kubelock.testbed import ControlPlane, find_binaries, wait_until
from tests.support.access import bind, wait_allowed
from tests.support.claims import Locks, phase_of, status_of
from tests.support.commands import Run, argv_of, environment, finish, run, start
from tests.support.operator import REPO, OperatorProcess

Cluster = Any  # ControlPlane, or conftest.ExistingCluster
DEADLINE = 60.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
SKILL = REPO / "docs" / "SKILL.md"
INSTANCE = "w1"  # KUBELOCK_INSTANCE of every command run as a user


def holder(user: str) -> str:
    return f"user:{user}/{INSTANCE}"


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def operator(control_plane: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as op:
        yield op


@dataclass
class Shell:
    """Commands as alice, bob (kubelock-agent), carol (no role) or lockadmin (kubelock-admin)."""

    control_plane: ControlPlane
    namespace: str
    admin: Locks

    def env(self, user: str) -> dict[str, str]:
        return environment(self.control_plane.user_kubeconfig(user), self.namespace, INSTANCE)

    def __call__(self, user: str, command: str, *args: str) -> Run:
        return run(command, *args, env=self.env(user))

    def start(self, user: str, command: str, *args: str) -> subprocess.Popen[str]:
        return start(command, *args, env=self.env(user))

    def claim(self, user: str, uri: str) -> str:
        return claim_name(holder(user), normalise(uri))

    def wait_phase(self, user: str, uri: str, phase: str) -> dict[str, Any]:
        return self.admin.wait_phase(self.claim(user, uri), phase, DEADLINE)

    def lock(self, uri: str) -> dict[str, Any] | None:
        try:
            return self.admin.lock(lock_name(normalise(uri)))
        except ApiException as error:
            if error.status == 404:
                return None
            raise


@pytest.fixture
def sh(control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess) -> Shell:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    for user in ("alice", "bob"):
        bind(admin_api, namespace, "kubelock-agent", user)
        wait_allowed(admin_api, user, namespace, "create", "lockclaims")
    bind(admin_api, namespace, "kubelock-admin", "lockadmin")
    wait_allowed(admin_api, "lockadmin", namespace, "delete", "resourcelocks")
    return Shell(control_plane, namespace, Locks(admin_api, namespace))


def closed_port_kubeconfig(source: Path, path: Path) -> Path:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- rlock / runlock / rlock-heartbeat: one JSON object and one exit code per outcome -----------

URI = "github://acme/app/issues/42"


def test_compat_ok_and_held_by_another(sh: Shell) -> None:
    got = sh("alice", "rlock", URI, "--ttl", "600")
    assert got.code == ExitCode.OK
    assert got.json["ok"] is True
    assert got.json["holder"] == holder("alice")
    assert isinstance(got.json["fencingToken"], int)

    held = sh("bob", "rlock", URI)
    assert held.code == ExitCode.HELD
    assert held.json["ok"] is False
    assert held.json["holder"] == holder("alice")
    assert held.json["heldSince"] == got.json["acquiredAt"]
    assert held.json["message"].endswith("; try again later, or queue for it with rlock --wait")

    beat = sh("alice", "rlock-heartbeat", URI)
    assert beat.code == 0
    assert beat.json["ok"] is True
    assert beat.json["expiresAt"] > got.json["expiresAt"]

    released = sh("alice", "runlock", URI)
    assert released.code == 0
    assert released.json == {
        "ok": True, "resource": URI, "released": True, "previousPhase": "Held", "claim": got.json["claim"]
    }
    assert sh("bob", "rlock", URI).code == 0


def test_compat_not_found(sh: Shell) -> None:
    for command in ("runlock", "rlock-heartbeat"):
        got = sh("alice", command, URI)
        assert got.code == ExitCode.NOT_FOUND, got
        assert got.json["ok"] is False
        assert got.json["error"] == "NotFound"
        assert "hold no lock on" in got.json["message"]


def test_compat_forbidden(sh: Shell) -> None:
    for command in ("rlock", "runlock", "rlock-heartbeat"):
        got = sh("carol", command, URI)  # authenticated, but without any kubelock role
        assert got.code == ExitCode.FORBIDDEN, got
        assert got.json["error"] == "Forbidden"
        assert "not allowed" in got.json["message"]


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("rlock", ["no-scheme"], "has no '://'"),
        ("rlock", ["github://a b"], "whitespace"),
        ("rlock", [URI, "--ttl", "0"], "between 1 and 86400"),
        ("rlock", [URI, "--ttl", "1.5"], "not a number"),
        ("rlock", [URI, "--timeout", "5"], "--timeout needs --wait"),
        ("rlock", [URI, "--bogus"], "unrecognized arguments"),
        ("runlock", ["bad uri"], "has no '://'"),
        ("rlock-heartbeat", ["\x07bell://x"], "scheme"),
    ],
)
def test_compat_invalid_input(sh: Shell, command: str, args: list[str], words: str) -> None:
    got = sh("alice", command, *args)
    assert got.code == ExitCode.INVALID_INPUT, got
    assert got.json["ok"] is False
    assert got.json["error"] == "InvalidInput"
    assert words in got.json["message"]
    assert sh.admin.claims() == []


def test_compat_deadlock(sh: Shell) -> None:
    r1, r2 = "deploy://api-prod", "github://acme/app/pr/10"
    assert sh("alice", "rlock", r1).code == 0
    assert sh("bob", "rlock", r2).code == 0
    alice_waits = sh.start("alice", "rlock", "--wait", r2)
    try:
        sh.wait_phase("alice", r2, "Pending")

        got = sh("bob", "rlock", "--wait", r1)

        assert got.code == ExitCode.DEADLOCK, got
        assert got.json["ok"] is False
        assert got.json["deadlock"] is True
        assert got.json["cycle"] == [holder("bob"), r1, holder("alice"), r2, holder("bob")]
        assert got.json["error"] == "DeadlockDetected"
        # bob backs off as the skill says; alice's wait then succeeds.
        assert sh("bob", "runlock", r2).code == 0
        granted = finish(alice_waits)
        assert granted.code == 0, granted
        assert granted.json["holder"] == holder("alice")
    finally:
        alice_waits.kill()


def test_compat_unreachable(sh: Shell, tmp_path: Path) -> None:
    dead = closed_port_kubeconfig(sh.control_plane.user_kubeconfig("alice"), tmp_path / "dead.kubeconfig")
    for command in ("rlock", "runlock", "rlock-heartbeat"):
        got = run(command, URI, env=environment(dead, sh.namespace))
        assert got.code == ExitCode.UNREACHABLE, got
        assert got.json["ok"] is False
        assert got.json["error"] == "Unreachable"
        missing = run(command, URI, env=environment(tmp_path / "missing.kubeconfig", sh.namespace))
        assert missing.code == ExitCode.UNREACHABLE, missing
        assert missing.json["error"] == "NotConfigured"


def test_compat_timed_out(sh: Shell) -> None:
    assert sh("alice", "rlock", URI).code == 0
    got = sh("bob", "rlock", "--wait", "--timeout", "2", URI)
    assert got.code == ExitCode.TIMED_OUT, got
    assert got.json["timedOut"] is True
    assert got.json["holder"] == holder("alice")
    assert got.json["error"] == "WaitTimedOut"


def test_compat_lost(sh: Shell) -> None:
    expiring, broken = "github://acme/app/issues/7", "deploy://api-prod"
    assert sh("alice", "rlock", "--ttl", "1", expiring).code == 0
    assert sh("alice", "rlock", broken).code == 0
    sh.wait_phase("alice", expiring, "Expired")
    sh.admin.delete_lock(lock_name(broken))  # an administrator breaks it
    sh.wait_phase("alice", broken, "Revoked")

    for uri, reason in ((expiring, "LeaseExpired"), (broken, "LockBroken")):
        beat = sh("alice", "rlock-heartbeat", uri)
        assert beat.code == ExitCode.LOST, beat
        assert beat.json["lost"] is True
        assert beat.json["error"] == reason
        gone = sh("alice", "runlock", uri)  # removes the record, and still says the lock was lost
        assert gone.code == ExitCode.LOST, gone
        assert sh("alice", "runlock", uri).code == ExitCode.NOT_FOUND


def test_json_is_never_pasted_together(sh: Shell) -> None:
    crafted = 'github://acme/app/issues/1","ok":true,"x":"'
    got = sh("alice", "rlock", crafted)
    assert got.code == 0
    assert got.json["resource"] == crafted
    held = sh("bob", "rlock", crafted)
    assert held.code == 1
    assert held.json["ok"] is False
    assert held.json["resource"] == crafted


# ---- kubelock -----------------------------------------------------------------------------------


def test_kubelock_acquire_heartbeat_release(sh: Shell) -> None:
    got = sh("alice", "kubelock", "acquire", URI, "--ttl", "600")
    assert got.code == 0, got
    assert got.stdout.startswith(f"acquired {URI} as {holder('alice')} (fencing token ")
    held = sh("bob", "kubelock", "acquire", URI, "--json")
    assert held.code == 1
    assert held.json["holder"] == holder("alice")
    assert sh("bob", "kubelock", "--json", "acquire", URI).json.keys() == held.json.keys()  # --json anywhere
    assert yaml.safe_load(sh("bob", "kubelock", "acquire", URI, "-o", "yaml").stdout).keys() == held.json.keys()
    for_people = sh("bob", "kubelock", "acquire", URI)
    assert for_people.stderr.strip().endswith("; try again later, or queue for it with kubelock acquire --wait")
    assert "wait: true" not in for_people.stderr
    assert sh("alice", "kubelock", "heartbeat", URI).stdout.startswith(f"renewed {URI}: expires in ")
    assert sh("alice", "kubelock", "release", URI).stdout.strip() == f"released {URI}"
    assert sh("alice", "kubelock", "release", URI).code == ExitCode.NOT_FOUND
    usage = sh("alice", "kubelock", "acquire")
    assert usage.code == ExitCode.INVALID_INPUT
    assert "the following arguments are required: uri" in usage.stderr


def test_status_list_why_and_graph(sh: Shell) -> None:
    r1, r2 = "deploy://api-prod", "github://acme/app/pr/10"
    assert sh("alice", "rlock", r1, "--ttl", "600").code == 0
    assert sh("bob", "rlock", r2, "--ttl", "600").code == 0
    bob_waits = sh.start("bob", "kubelock", "acquire", "--wait", r1)
    try:
        sh.wait_phase("bob", r1, "Pending")

        status = sh("carol", "kubelock", "status")
        assert status.code == ExitCode.FORBIDDEN  # carol may not even read
        table = sh("alice", "kubelock", "status").stdout.splitlines()
        assert table[0].split() == ["RESOURCE", "HOLDER", "TOKEN", "AGE", "EXPIRES", "IN", "WAITERS", "STALE"]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows[r1][1] == holder("alice")
        assert rows[r1][5] == "1"  # bob waits
        assert rows[r2][5] == "0"
        as_json = sh("alice", "kubelock", "status", "--json").json
        assert {(lock["resource"], lock["holder"], lock["waiters"]) for lock in as_json["locks"]} == {
            (r1, holder("alice"), 1), (r2, holder("bob"), 0)
        }
        cluster_admin = environment(sh.control_plane.kubeconfig, "default")
        everywhere = run("kubelock", "status", "-A", env=cluster_admin)
        assert everywhere.code == 0, everywhere
        assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "RESOURCE"]
        assert any(line.split()[:3] == [sh.namespace, r1, holder("alice")] for line in everywhere.stdout.splitlines())

        mine = sh("bob", "kubelock", "list", "--json").json
        assert mine["holder"] == holder("bob")
        assert {(c["resource"], c["phase"]) for c in mine["claims"]} == {(r1, "Pending"), (r2, "Held")}

        why = sh("alice", "kubelock", "why", sh.claim("bob", r1))
        assert why.code == 0, why
        assert "phase:     Pending (Queued)" in why.stdout
        assert "queue:     position 1" in why.stdout
        assert f"held by:   {holder('alice')}" in why.stdout
        assert sh("bob", "kubelock", "why", r1, "--json").json["claim"]["queuePosition"] == 1
        assert sh("bob", "kubelock", "why", "no-such-claim").code == ExitCode.NOT_FOUND

        dot = sh("alice", "kubelock", "graph").stdout
        assert dot.startswith("digraph ")
        assert f'"holder:{holder("bob")}" -> "resource:{r1}"' in dot
        assert f'"resource:{r1}" -> "holder:{holder("alice")}"' in dot
        assert f'"resource:{r2}" -> "holder:{holder("bob")}"' in dot
        assert "red" not in dot  # no cycle: the operator never lets one form
        svg = sh("alice", "kubelock", "graph", "--svg")
        if _has_graphviz():
            assert svg.code == 0
            assert "<svg" in svg.stdout
        else:
            assert svg.code == ExitCode.INVALID_INPUT
            assert "--svg needs graphviz" in svg.stderr
    finally:
        bob_waits.kill()
        bob_waits.communicate()


def _has_graphviz() -> bool:
    return shutil.which("dot") is not None


def test_unlock_is_refused_without_admin_rights(sh: Shell) -> None:
    assert sh("alice", "rlock", URI).code == 0
    got = sh("alice", "kubelock", "unlock", URI, "--reason", "stuck")
    assert got.code == ExitCode.FORBIDDEN, got
    assert "needs the kubelock-admin role" in got.stderr
    lock = sh.lock(URI)
    assert lock is not None
    assert BREAK_ACTOR_ANNOTATION not in (lock["metadata"].get("annotations") or {})
    assert sh("alice", "kubelock", "unlock", "--all", "--reason", "x", "--json").json["error"] == "Forbidden"


def test_unlock_by_an_admin_records_who_and_why_before_deleting(sh: Shell, admin_api: ApiClient) -> None:
    other = "deploy://api-prod"
    assert sh("alice", "rlock", URI).code == 0
    assert sh("bob", "rlock", other).code == 0
    before = sh.lock(URI)
    assert before is not None
    events: list[tuple[str, dict[str, Any]]] = []
    watcher = threading.Thread(target=_watch_lock, args=(admin_api, sh.namespace, before, events), daemon=True)
    watcher.start()

    got = sh("lockadmin", "kubelock", "unlock", "--holder", holder("alice"), "--reason", "agent hung on #42", "--json")

    assert got.code == 0, got
    [broken] = got.json["broken"]
    assert (broken["resource"], broken["holder"], broken["brokenBy"]) == (URI, holder("alice"), "lockadmin")
    watcher.join(DEADLINE)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "DELETED"
    annotations = events[-1][1]["metadata"]["annotations"]  # the state it was deleted in
    assert annotations[BREAK_ACTOR_ANNOTATION] == "lockadmin"
    assert annotations[BREAK_REASON_ANNOTATION] == "agent hung on #42"
    revoked = sh.wait_phase("alice", URI, "Revoked")
    assert status_of(revoked)["reason"] == "LockBroken"
    assert sh.lock(other) is not None  # bob's lock was not selected
    why = sh("alice", "kubelock", "why", URI).stdout
    assert f"  holder:    {holder('alice')}\n" in why
    assert "  outcome:   the lock was taken away: stop working on the resource" in why
    assert "broken by lockadmin: agent hung on #42" in why

    nothing = sh("lockadmin", "kubelock", "unlock", "github://nothing/here", "--reason", "x")
    assert nothing.code == ExitCode.NOT_FOUND
    missing_reason = sh("lockadmin", "kubelock", "unlock", "--all")
    assert missing_reason.code == ExitCode.INVALID_INPUT
    escaped = sh("lockadmin", "kubelock", "unlock", "--all", "--reason", "stuck\n\x1b[31mFAKE")
    assert escaped.code == ExitCode.INVALID_INPUT, escaped
    assert "the reason must be one line without control characters" in escaped.stderr
    assert sh.lock(other) is not None  # refused before anything was changed
    assert sh("lockadmin", "kubelock", "unlock", "--all", "--reason", "maintenance").code == 0
    wait_until(lambda: sh.lock(other) is None, what="bob's lock to be broken", timeout=DEADLINE)


def _watch_lock(admin_api: ApiClient, namespace: str, lock: dict[str, Any], out: list[tuple[str, Any]]) -> None:
    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
        CustomObjectsApi(admin_api).list_namespaced_custom_object,
        "kubelock.dev", "v1alpha1", namespace, "resourcelocks",
        field_selector=f"metadata.name={lock['metadata']['name']}",
        resource_version=lock["metadata"]["resourceVersion"],
        timeout_seconds=int(DEADLINE),
    )
    for event in stream:
        out.append((event["type"], event["object"]))
        if event["type"] == "DELETED":
            return


def test_ctrl_c_withdraws_a_waiting_claim(sh: Shell) -> None:
    assert sh("alice", "rlock", URI).code == 0
    waiting = sh.start("bob", "kubelock", "acquire", "--wait", URI)
    sh.wait_phase("bob", URI, "Pending")

    waiting.send_signal(signal.SIGINT)
    got = finish(waiting)

    assert got.code == ExitCode.INTERRUPTED, got
    wait_until(lambda: _gone(sh, sh.claim("bob", URI)), what="bob's claim to be withdrawn", timeout=DEADLINE)
    assert phase_of(sh.admin.get(sh.claim("alice", URI))) == "Held"  # the holder was not disturbed


def _gone(sh: Shell, name: str) -> bool:
    try:
        sh.admin.get(name)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


# ---- docs/SKILL.md says what the commands really print ------------------------------------------


@dataclass(frozen=True)
class Example:
    argv: list[str]
    output: dict[str, Any]
    code: int


def skill_examples(text: str) -> list[Example]:
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = block.strip().splitlines()
        assert len(lines) == 4, block
        assert lines[0].startswith("$ ")
        assert lines[2] == "$ echo $?"
        examples.append(Example(shlex.split(lines[0][2:]), json.loads(lines[1]), int(lines[3])))
    return examples


def test_skill_examples_match_what_the_commands_print(sh: Shell) -> None:
    examples = skill_examples(SKILL.read_text())
    assert [(e.argv[0], e.code) for e in examples] == [
        ("rlock", 0), ("rlock", 1), ("rlock-heartbeat", 0), ("runlock", 0), ("rlock", 5), ("rlock-heartbeat", 8)
    ]
    me, other = "alice", "bob"  # the agent following the skill, and another instance
    cleanup: list[subprocess.Popen[str]] = []

    def deadlock_scene(argv: Sequence[str]) -> None:
        mine, theirs = "deploy://api-prod", argv[-1]  # as the example's explanation says
        assert sh(me, "rlock", mine).code == 0
        assert sh(other, "rlock", theirs).code == 0
        cleanup.append(sh.start(other, "rlock", "--wait", mine))
        sh.wait_phase(other, mine, "Pending")

    def expired_scene(argv: Sequence[str]) -> None:
        assert sh(me, "rlock", "--ttl", "1", argv[-1]).code == 0
        sh.wait_phase(me, argv[-1], "Expired")

    scenes: dict[tuple[str, int], tuple[str, Callable[[Sequence[str]], None] | None]] = {
        ("rlock", 0): (me, None),
        ("rlock", 1): (other, None),  # the resource is still held by `me` from the first example
        ("rlock-heartbeat", 0): (me, None),
        ("runlock", 0): (me, None),
        ("rlock", 5): (me, deadlock_scene),
        ("rlock-heartbeat", 8): (me, expired_scene),
    }
    try:
        for example in examples:
            user, scene = scenes[(example.argv[0], example.code)]
            if scene is not None:
                scene(example.argv)
            got = sh(user, *example.argv)
            assert got.code == example.code, (example.argv, got)
            shown, real = example.output, got.json
            assert list(real) == list(shown), f"{example.argv}: keys differ"
            for key, value in shown.items():
                assert type(real[key]) is type(value), (example.argv, key)
                if key in ("ok", "error", "deadlock", "lost", "released", "previousPhase", "confirmed", "resource"):
                    assert real[key] == value, (example.argv, key)
            if "cycle" in shown:
                assert real["cycle"][0] == real["cycle"][-1] == holder(me)
                assert real["cycle"][1::2] == shown["cycle"][1::2]  # the same resources in the same order
    finally:
        for process in cleanup:
            process.kill()
            process.communicate()


# ---- the shell around the commands --------------------------------------------------------------


def read_terminal(master: int, until: str, timeout: float) -> str:
    """What a terminal shows until `until` appears."""
    seen = ""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 4096).decode(errors="replace")
            except OSError:  # every writer closed it
                break
    return seen


def test_wait_shows_position_and_holder_on_a_terminal_and_nothing_elsewhere(sh: Shell) -> None:
    assert sh("alice", "rlock", URI).code == 0
    quiet = sh("bob", "kubelock", "acquire", "--wait", "--timeout", "2", URI)
    assert quiet.code == ExitCode.TIMED_OUT
    assert "waiting for" not in quiet.stderr
    assert "position" not in sh("bob", "rlock", "--wait", "--timeout", "2", URI).stdout + quiet.stderr

    master, terminal = pty.openpty()
    waiting = subprocess.Popen(
        [*argv_of("kubelock"), "acquire", "--wait", URI], env=sh.env("bob"), stdout=subprocess.PIPE,
        stderr=terminal, text=True,
    )
    os.close(terminal)
    try:
        shown = read_terminal(master, f"held by {holder('alice')}", DEADLINE)
        assert f"waiting for {URI}: position 1, held by {holder('alice')} (Ctrl-C gives up)" in shown, shown
        assert sh("alice", "runlock", URI).code == 0
        out, _ = waiting.communicate(timeout=DEADLINE)
        assert waiting.returncode == 0
        assert out.startswith(f"acquired {URI} as {holder('bob')}")
        assert read_terminal(master, "\033[K", 5).endswith("\r\033[K")  # the line is erased before the result
    finally:
        waiting.kill()
        os.close(master)


def test_graph_into_a_closed_pipe_ends_quietly(sh: Shell) -> None:
    assert sh("alice", "rlock", URI).code == 0
    read, write = os.pipe()
    os.close(read)  # `| head` that has already gone
    try:
        done = subprocess.run([*argv_of("kubelock"), "graph", "-o", "json"], env=sh.env("alice"), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=DEADLINE, check=False)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == -signal.SIGPIPE


def test_kubectl_lock_is_the_cli_as_a_kubectl_plugin(sh: Shell) -> None:
    plugin = Path(sys.executable).parent / "kubectl-lock"
    if not plugin.exists():
        pytest.skip("kubectl-lock is installed with the package (make venv)")
    env = {**sh.env("alice"), "PATH": f"{plugin.parent}:{os.environ.get('PATH', '')}"}
    kubectl = [str(find_binaries() / "kubectl"), "lock"]

    def plugin_run(*args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*kubectl, *args], env={**env, "KUBECONFIG": sh.env(user)["KUBECONFIG"]},
                              capture_output=True, text=True, timeout=DEADLINE, check=False)

    assert plugin_run("--version").stdout.startswith("kubectl lock ")
    got = plugin_run("acquire", URI)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(f"acquired {URI} as {holder('alice')}")
    held = plugin_run("acquire", URI, user="bob")
    assert held.returncode == ExitCode.HELD
    assert held.stderr.strip().endswith("or queue for it with kubectl lock acquire --wait")
    listed = yaml.safe_load(plugin_run("status", "-o", "yaml").stdout)
    assert [(lock["resource"], lock["holder"]) for lock in listed["locks"]] == [(URI, holder("alice"))]
    # kubectl's own completion asks kubectl_complete-lock
    completed = subprocess.run([kubectl[0], "__complete", "lock", "st"], env=env, capture_output=True, text=True,
                               timeout=DEADLINE, check=False)
    assert completed.stdout.splitlines() == ["status", ":4"], completed.stdout + completed.stderr


def test_the_llm_tools_leave_no_session_open(sh: Shell) -> None:
    script = (
        "from kubelock.sdk import tools\n"
        f"print(tools.acquire_lock({URI!r}))\n"
        f"print(tools.release_lock({URI!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=sh.env("alice"), capture_output=True, text=True,
                          timeout=DEADLINE, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"acquired {URI} (fencing token ")
    assert done.stdout.splitlines()[1] == f"released {URI}"
    assert "Unclosed" not in done.stderr, done.stderr
