"""The `kubelock` CLI and the drop-in `rlock`/`runlock`/`rlock-heartbeat` commands, run as real
processes against the real control plane and operator: every exit code, the JSON they print, the
admin break, Ctrl-C, `kubelock run` (its command stopped when the lock is lost), and the examples in
docs/SKILL.md."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
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

from kubelock.api import fencing
from kubelock.api.constants import BREAK_ACTOR_ANNOTATION, BREAK_REASON_ANNOTATION
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.run import ENV_CLAIM, ENV_HOLDER, ENV_NAMESPACE, ENV_RESOURCE, ENV_TOKEN, ENV_TOKENS
from kubelock.domain.resource import claim_name, lock_name, normalise
from kubelock.testbed import ControlPlane, find_binaries, wait_until
from tests.support.access import bind, bind_agents, wait_allowed
from tests.support.claims import Locks, phase_of, status_of
from tests.support.commands import Run, argv_of, default_signals, environment, finish, run, start
from tests.support.operator import REPO, OperatorProcess
from tests.support.partition import Partition, dead_kubeconfig, kubeconfig_for

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
    bind_agents(admin_api, namespace)
    bind(admin_api, namespace, "kubelock-admin", "lockadmin")
    wait_allowed(admin_api, "lockadmin", namespace, "delete", "resourcelocks")
    return Shell(control_plane, namespace, Locks(admin_api, namespace))


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


def test_a_namespace_that_does_not_exist_is_named_with_where_it_came_from(sh: Shell) -> None:
    # The cluster admin, whom RBAC lets into any namespace: the request reaches the missing namespace.
    missing = f"{sh.namespace}-missing"
    env = environment(sh.control_plane.kubeconfig, missing, INSTANCE)
    got = run("rlock", URI, env=env)
    assert got.code == ExitCode.NOT_FOUND, got
    assert got.json["error"] == "NotFound"
    assert f"namespace {missing} does not exist; choose an existing one (" in got.json["message"], got
    assert "KUBELOCK_NAMESPACE" in got.json["message"]
    assert f"namespace {missing} does not exist" in run("kubelock", "-n", missing, "acquire", URI, env=env).stderr


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
    dead = dead_kubeconfig(sh.control_plane.user_kubeconfig("alice"), tmp_path / "dead.kubeconfig")
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


def test_a_refused_try_lock_names_every_holder_as_the_operator_does(sh: Shell) -> None:
    """Two Shared holders keep an exclusive try-lock out: the command says so (the operator's sentence
    with the command's own advice), not that the first of them holds the resource alone."""
    uri = "github://acme/app/pr/77"
    for who in ("alice", "lockadmin"):  # carol has no role here
        assert sh(who, "kubelock", "acquire", uri, "--shared").code == 0
    refused = sh("bob", "kubelock", "acquire", uri)
    compat = sh("bob", "rlock", uri)
    assert (refused.code, compat.code) == (1, 1)
    for said, advice in ((refused.stderr.strip(), "kubelock acquire --wait"), (compat.json["message"], "rlock --wait")):
        assert said.startswith(f"{uri} is held by {holder('alice')} and 1 other holder since "), said
        assert said.endswith(f"; try again later, or queue for it with {advice}"), said


def test_list_shows_a_claim_applied_with_kubectl(sh: Shell) -> None:
    """A claim written as YAML (README.md's examples/lockclaim.yaml, holder user:alice/laptop) is its
    holder's as much as one the commands made: `kubelock list` with that instance shows it, as it
    does without an instance (every instance of the identity)."""
    sh.admin.claim("alice-issue-42", "github://acme/app/issues/42", holder("alice"), ttl=600)
    sh.admin.wait_phase("alice-issue-42", "Held", DEADLINE)
    assert sh("alice", "rlock", "deploy://api-prod").code == 0
    with_instance = sh("alice", "kubelock", "list", "--json")
    assert with_instance.code == 0, with_instance
    assert {(c["name"], c["phase"]) for c in with_instance.json["claims"]} == {
        ("alice-issue-42", "Held"), (sh.claim("alice", "deploy://api-prod"), "Held")
    }, with_instance.json
    assert sh("bob", "kubelock", "list", "--json").json["claims"] == []  # bob's claims only


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
        # A URI names the asker's own claim on it: a missing one is told as such, not by its derived name.
        unclaimed = "github://acme/app/issues/nobody"
        none = sh("alice", "kubelock", "why", unclaimed)
        assert none.code == ExitCode.NOT_FOUND
        assert f"you ({holder('alice')}) have no claim on {unclaimed} in namespace {sh.namespace}" in none.stderr, none

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
    # An identity alone is no holder: the refusal says how to name one, and who holds locks here.
    partial = sh("lockadmin", "kubelock", "unlock", "--holder", "user:bob", "--reason", "x")
    assert partial.code == ExitCode.NOT_FOUND, partial
    assert "is held by user:bob (name a whole holder, <identity>/<instance>" in partial.stderr, partial
    assert f"holders there: {holder('bob')} (kubelock status -n {sh.namespace})" in partial.stderr, partial
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
        ("rlock", 0), ("rlock", 1), ("rlock-heartbeat", 0), ("runlock", 0), ("rlock", 0), ("rlock", 5),
        ("rlock-heartbeat", 8)
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
            if "fencingTokens" in shown:  # a token for each resource, in the same order
                assert list(real["fencingTokens"]) == list(shown["fencingTokens"]), example.argv
            if "grants" in shown:
                assert [g["resource"] for g in real["grants"]] == [g["resource"] for g in shown["grants"]]
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
        stderr=terminal, text=True, preexec_fn=default_signals,
    )
    os.close(terminal)
    try:
        shown = read_terminal(master, f"held by {holder('alice')}", DEADLINE)
        assert f"waiting for {URI}: position 1, held by {holder('alice')} (Ctrl-C gives up)" in shown, shown
        assert sh("alice", "runlock", URI).code == 0
        out, _ = waiting.communicate(timeout=DEADLINE)
        assert waiting.returncode == 0
        assert out.startswith(f"acquired {URI} as {holder('bob')}")
        assert read_terminal(master, "\033[K", DEADLINE).endswith("\r\033[K")  # the line is erased before the result
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


def test_a_client_never_closed_leaves_no_session_open(sh: Shell) -> None:
    # `client = LockClient()` without `with` or close(), as a first script does: its session is
    # closed at exit, so aiohttp has no "Unclosed client session" to print.
    script = (
        "from kubelock.sdk import LockClient\n"
        "client = LockClient()\n"
        f"with client.lock({URI!r}, ttl=60) as lease:\n"
        "    print(lease.fencing_token)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=sh.env("alice"), capture_output=True, text=True,
                          timeout=DEADLINE, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().isdigit(), done.stdout  # the fencing token
    assert "Unclosed" not in done.stderr, done.stderr


# ---- kubelock run: the command never outlives its lock ------------------------------------------

RUN_URI = "deploy://api-prod"

# The command run under the lock: it records its environment and pid, then works until told to stop
# (the file `go`), and records when it ended. `ignore-term` makes it ignore SIGTERM; `exit-on-term`
# makes it record the SIGTERM and exit 7. The moment of the SIGTERM is written whole (a temporary
# name, renamed): the command can be SIGKILLed after its grace while it writes it, and the test
# reads it at once.
CHILD = r"""
import json, os, pathlib, signal, sys, time
d = pathlib.Path(sys.argv[1])
if "ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "exit-on-term" in sys.argv:
    def on_term(*_):
        (d / "term.tmp").write_text(repr(time.time()))
        os.replace(d / "term.tmp", d / "term")
        sys.exit(7)
    signal.signal(signal.SIGTERM, on_term)
env = {k: v for k, v in os.environ.items() if k.startswith("KUBELOCK_")}
(d / "env.json").write_text(json.dumps(env))
(d / "started").write_text(repr(time.time()))
(d / "pid.tmp").write_text(str(os.getpid()))
os.rename(d / "pid.tmp", d / "pid")
while not (d / "go").exists():
    time.sleep(0.05)
(d / "ended").write_text(repr(time.time()))
sys.exit(int((d / "go").read_text() or 0))
"""


@dataclass
class Child:
    """One command run under `kubelock run`, seen through the files it writes."""

    dir: Path

    def argv(self, *flags: str) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        script = self.dir / "child.py"
        script.write_text(CHILD)
        return [sys.executable, str(script), str(self.dir), *flags]

    def wait_started(self) -> int:
        wait_until(lambda: (self.dir / "pid").exists(), what="the command to start", timeout=DEADLINE)
        return int((self.dir / "pid").read_text())

    def env(self) -> dict[str, str]:
        payload = json.loads((self.dir / "env.json").read_text())
        assert isinstance(payload, dict)
        return payload

    def finish(self, code: int = 0) -> None:
        # Renamed into place: the command polls for "go" and would read it empty between create and write.
        (self.dir / "go.tmp").write_text(str(code))
        (self.dir / "go.tmp").rename(self.dir / "go")

    def moment(self, name: str) -> float:
        return float((self.dir / name).read_text())


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def start_run(sh: Shell, user: str, child: Sequence[str], *options: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
    return subprocess.Popen([*argv_of("kubelock"), "run", RUN_URI, "-o", "json", *options, "--", *child],
                            env=env or sh.env(user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def result(done: Run) -> dict[str, Any]:
    """The JSON result: the last line of stdout, after whatever the command printed."""
    payload = json.loads(done.stdout.splitlines()[-1])
    assert isinstance(payload, dict)
    return payload


def held_lock(sh: Shell) -> dict[str, Any] | None:
    """The lock on RUN_URI as `kubelock status` shows it to an administrator."""
    status = sh("lockadmin", "kubelock", "status", "-o", "json")
    assert status.code == ExitCode.OK, status.stderr
    locks = [item for item in status.json["locks"] if item["resource"] == normalise(RUN_URI)]
    return locks[0] if locks else None


def lock_token(sh: Shell) -> int:
    lock = held_lock(sh)
    assert lock is not None
    return int(lock["fencingToken"])


def wait_released(sh: Shell) -> None:
    wait_until(lambda: sh.lock(RUN_URI) is None, what="the lock to be released", timeout=DEADLINE)


# ---- the command and its lock -------------------------------------------------------------------


def test_command_sees_the_lock_and_its_exit_code_comes_back(sh: Shell, tmp_path: Path) -> None:
    child = Child(tmp_path / "child")
    process = start_run(sh, "alice", child.argv())
    child.wait_started()
    env = child.env()
    assert env[ENV_TOKEN] == str(lock_token(sh))
    assert env[ENV_RESOURCE] == normalise(RUN_URI)
    assert env[ENV_HOLDER] == holder("alice")
    assert env[ENV_NAMESPACE] == sh.namespace
    assert env[ENV_CLAIM] == sh.claim("alice", RUN_URI)
    assert json.loads(env[ENV_TOKENS]) == {normalise(RUN_URI): int(env[ENV_TOKEN])}  # also for one resource
    child.finish(3)
    done = finish(process)
    assert done.code == 3, done.stderr
    got = result(done)
    assert got["exitCode"] == 3 and got["signal"] is None and got["endedBy"] == "CommandExited"
    assert got["fencingToken"] == int(env[ENV_TOKEN]) and got["released"] is True and got["ok"] is False
    assert got["fencingTokens"] == {normalise(RUN_URI): got["fencingToken"]}
    wait_released(sh)


def test_command_output_passes_through_before_the_result(sh: Shell) -> None:
    done = sh("alice", "kubelock", "run", RUN_URI, "-o", "json", "--", "sh", "-c",
              'echo "token=$KUBELOCK_FENCING_TOKEN"; echo oops >&2')
    assert done.code == ExitCode.OK, done.stderr
    first, _ = done.stdout.splitlines()
    assert first == f"token={result(done)['fencingToken']}"
    assert "oops" in done.stderr
    assert result(done)["ok"] is True


def test_held_lock_never_starts_the_command(sh: Shell, tmp_path: Path) -> None:
    assert sh("bob", "rlock", RUN_URI, "--ttl", "600").code == ExitCode.OK
    marker = tmp_path / "ran"
    done = sh("alice", "kubelock", "run", RUN_URI, "-o", "json", "--", "touch", str(marker))
    rlock = sh("alice", "rlock", RUN_URI)
    assert done.code == rlock.code == ExitCode.HELD
    assert done.json["error"] == "HeldByAnotherHolder" and done.json["holder"] == holder("bob")
    assert not marker.exists()


def test_usage_errors(sh: Shell) -> None:
    for args, words in (
        ((RUN_URI, "true"), "after `--`"),
        ((RUN_URI, "--"), "no command"),
        ((RUN_URI, "--ttl", "10", "--renew-deadline", "10", "--", "true"), "shorter than the TTL"),
        ((RUN_URI, "--ttl", "10", "--grace", "-1", "--", "true"), "--grace"),
        ((RUN_URI, "--ttl", "10", "--renew-deadline", "8", "--grace", "5", "--", "true"), "must not exceed the TTL"),
    ):
        done = sh("alice", "kubelock", "run", *args)
        assert done.code == ExitCode.INVALID_INPUT, (args, done.stderr)
        assert words in done.stderr, done.stderr


# ---- the command never outlives its lock --------------------------------------------------------


@pytest.mark.parametrize("how", ["unlock", "claim-deleted"])
def test_lost_lock_stops_the_command(sh: Shell, tmp_path: Path, how: str) -> None:
    child = Child(tmp_path / "child")
    process = start_run(sh, "alice", child.argv(), "--ttl", "60")
    pid = child.wait_started()
    if how == "unlock":  # an administrator breaks it: the claim becomes Revoked
        assert sh("lockadmin", "kubelock", "unlock", RUN_URI, "--reason", "test").code == ExitCode.OK
    else:  # its claim is deleted under it
        sh.admin.delete(sh.claim("alice", RUN_URI))
    done = finish(process)
    assert done.code == ExitCode.LOST, done.stderr
    got = result(done)
    assert got["endedBy"] == "LockLost" and got["lost"] is True
    assert got["signal"] == "SIGTERM" and got["killed"] is False
    assert not alive(pid)
    assert not (child.dir / "ended").exists()  # stopped, not finished


def test_command_ignoring_sigterm_gets_sigkill_after_the_grace(sh: Shell, tmp_path: Path) -> None:
    child = Child(tmp_path / "child")
    process = start_run(sh, "alice", child.argv("ignore-term"), "--ttl", "60", "--grace", "2")
    pid = child.wait_started()
    broken = time.time()
    assert sh("lockadmin", "kubelock", "unlock", RUN_URI, "--reason", "test").code == ExitCode.OK
    done = finish(process)
    assert done.code == ExitCode.LOST, done.stderr
    got = result(done)
    assert got["signal"] == "SIGKILL" and got["killed"] is True
    assert time.time() - broken >= 2
    assert not alive(pid)


def test_unreachable_api_server_stops_the_command_before_the_lease_ends(sh: Shell, tmp_path: Path) -> None:
    partition = Partition(sh.control_plane.server)
    config = kubeconfig_for(sh.control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "via-proxy")
    child = Child(tmp_path / "child")
    env = {**sh.env("alice"), "KUBECONFIG": str(config)}
    process = start_run(sh, "alice", child.argv("exit-on-term"), "--ttl", "8", "--renew-deadline", "4",
                        "--grace", "2", env=env)
    # Every end of the lease the operator confirms while the claim is Held (the claim's status drops it
    # once Expired), read in-process: a check that starts a CLI after the fact can come after the
    # lease's end on a loaded machine however early the command stopped.
    confirmed = LeaseEnds(sh, sh.claim("alice", RUN_URI))
    try:
        pid = child.wait_started()
        time.sleep(2)  # a renewal or two went through
        partition.cut()
        wait_until(lambda: not alive(pid), what="the command to be stopped", timeout=DEADLINE)
        ends = confirmed.stop()
        assert ends, "no Held status with its lease's end was seen"
        # The command was told to stop (and then stopped at once) before the last lease end it had.
        stopped = child.moment("term")
        assert stopped < max(ends), ("the lease ended before the command did", stopped, max(ends))
        done = finish(process)
        assert done.code == ExitCode.LOST, done.stderr
        got = result(done)
        assert got["endedBy"] == "LockLost" and got["error"] == "LeaseExpired", got
        assert "renew deadline" in got["message"]
    finally:
        confirmed.stop()
        partition.cut()
        if process.poll() is None:
            process.kill()
            process.wait()


class LeaseEnds:
    """Follows a claim (as the administrator, every 0.1 s) and keeps each `expiresAt` of it while Held."""

    def __init__(self, sh: Shell, name: str) -> None:
        self.ends: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(sh, name), daemon=True)
        self._thread.start()

    def _follow(self, sh: Shell, name: str) -> None:
        while not self._done.is_set():
            with contextlib.suppress(ApiException):
                status = sh.admin.get(name).get("status") or {}
                if status.get("phase") == "Held" and status.get("expiresAt"):
                    self.ends.append(datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00")).timestamp())
            self._done.wait(0.1)

    def stop(self) -> list[float]:
        self._done.set()
        self._thread.join()
        return self.ends


# ---- signals and hand-over ----------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "flags", "code"), [
    (signal.SIGTERM, ("exit-on-term",), 7),  # the command handles it: its own exit code comes back
    (signal.SIGINT, (), 128 + signal.SIGINT),  # it dies of it: 128+N, as a shell says
    (signal.SIGHUP, (), 128 + signal.SIGHUP),
], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signals_reach_the_command_and_the_lock_is_released(
    sh: Shell, tmp_path: Path, signum: int, flags: tuple[str, ...], code: int
) -> None:
    child = Child(tmp_path / "child")
    process = start_run(sh, "alice", child.argv(*flags))
    child.wait_started()
    process.send_signal(signum)
    done = finish(process)
    assert done.code == code, done.stderr
    assert (child.dir / "term").exists() == bool(flags)
    got = result(done)
    assert got["endedBy"] == "Signal" and got["forwardedSignals"] == [signal.Signals(signum).name]
    assert got["released"] is True and got["exitCode"] == code
    wait_released(sh)


def test_waiting_run_starts_only_after_the_first_one_ended(sh: Shell, tmp_path: Path) -> None:
    first, second = Child(tmp_path / "first"), Child(tmp_path / "second")
    alice = start_run(sh, "alice", first.argv())
    first.wait_started()
    bob = start_run(sh, "bob", second.argv(), "--wait", "--timeout", str(DEADLINE))
    sh.wait_phase("bob", RUN_URI, "Pending")
    assert not (second.dir / "started").exists()
    first.finish()
    assert finish(alice).code == ExitCode.OK
    second.wait_started()
    assert second.moment("started") >= first.moment("ended")
    assert int(second.env()[ENV_TOKEN]) > int(first.env()[ENV_TOKEN])
    second.finish()
    done = finish(bob)
    assert done.code == ExitCode.OK, done.stderr
    assert result(done)["holder"] == holder("bob")


# ---- several resources in one claim: all of them or none ----------------------------------------

ISSUE, BRANCH = "github://acme/app/issues/42", "git://acme/app/fix-42"


def tokens_of_locks(sh: Shell, *uris: str) -> dict[str, int]:
    """What the ResourceLocks record: each resource's fencing token, as an administrator reads it."""
    tokens = {}
    for uri in uris:
        lock = sh.lock(uri)
        assert lock is not None, f"no lock on {uri}"
        tokens[normalise(uri)] = fencing.lock_token(lock)
    return tokens


def test_rlock_of_several_is_all_or_nothing(sh: Shell) -> None:
    assert sh("bob", "rlock", BRANCH, "--ttl", "600").code == ExitCode.OK
    refused = sh("alice", "rlock", ISSUE, BRANCH)
    assert refused.code == ExitCode.HELD, refused
    assert refused.json["error"] == "HeldByAnotherHolder" and refused.json["holder"] == holder("bob")
    assert refused.json["resource"] is None and refused.json["resources"] == [BRANCH, ISSUE]
    assert sh.lock(ISSUE) is None  # the free one was not taken either
    assert sh("bob", "runlock", BRANCH).code == ExitCode.OK

    got = sh("alice", "rlock", ISSUE, BRANCH, "--ttl", "600")
    assert got.code == ExitCode.OK, got
    tokens = tokens_of_locks(sh, ISSUE, BRANCH)
    assert got.json["fencingTokens"] == tokens
    assert got.json["grants"] == [{"resource": r, "fencingToken": tokens[r], "lock": lock_name(r)}
                                  for r in sorted(tokens)]
    assert (got.json["resource"], got.json["fencingToken"], got.json["lock"]) == (None, None, None)
    assert got.json["claim"] == sh.admin.get(got.json["claim"])["metadata"]["name"]

    beat = sh("alice", "rlock-heartbeat", BRANCH, ISSUE)  # the same claim in any order
    assert beat.code == ExitCode.OK, beat
    assert beat.json["fencingTokens"] == tokens and beat.json["claim"] == got.json["claim"]
    done = sh("alice", "runlock", ISSUE, BRANCH)
    assert done.code == ExitCode.OK, done
    assert done.json["previousPhase"] == "Held" and done.json["resources"] == sorted(tokens)
    wait_until(lambda: sh.lock(ISSUE) is None and sh.lock(BRANCH) is None, what="both locks to be released",
               timeout=DEADLINE)


def start_run_all(sh: Shell, user: str, child: Sequence[str], *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*argv_of("kubelock"), "run", ISSUE, BRANCH, "-o", "json", *options, "--", *child],
                            env=sh.env(user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def test_run_of_several_gives_the_command_every_token(sh: Shell, tmp_path: Path) -> None:
    child = Child(tmp_path / "child")
    process = start_run_all(sh, "alice", child.argv(), "--ttl", "60")
    child.wait_started()
    env = child.env()
    tokens = tokens_of_locks(sh, ISSUE, BRANCH)
    assert json.loads(env[ENV_TOKENS]) == tokens
    assert ENV_TOKEN not in env and ENV_RESOURCE not in env  # no single token to mistake for all of them
    assert env[ENV_HOLDER] == holder("alice")
    child.finish()
    done = finish(process)
    assert done.code == ExitCode.OK, done.stderr
    got = result(done)
    assert got["fencingTokens"] == tokens and got["resource"] is None and got["released"] is True
    wait_until(lambda: sh.lock(ISSUE) is None and sh.lock(BRANCH) is None, what="both locks to be released",
               timeout=DEADLINE)


def test_run_of_several_stops_the_command_when_any_lock_is_broken(sh: Shell, tmp_path: Path) -> None:
    child = Child(tmp_path / "child")
    process = start_run_all(sh, "alice", child.argv(), "--ttl", "60")
    pid = child.wait_started()
    assert sh("lockadmin", "kubelock", "unlock", BRANCH, "--reason", "test").code == ExitCode.OK
    done = finish(process)
    assert done.code == ExitCode.LOST, done.stderr
    got = result(done)
    assert got["endedBy"] == "LockLost" and got["lost"] is True
    assert not alive(pid)
    assert not (child.dir / "ended").exists()  # stopped, not finished
    wait_until(lambda: sh.lock(ISSUE) is None, what="the other lock to be released", timeout=DEADLINE)


def test_run_of_several_never_starts_while_one_is_held(sh: Shell, tmp_path: Path) -> None:
    assert sh("bob", "rlock", ISSUE, "--ttl", "600").code == ExitCode.OK
    marker = tmp_path / "ran"
    done = sh("alice", "kubelock", "run", ISSUE, BRANCH, "-o", "json", "--", "touch", str(marker))
    assert done.code == ExitCode.HELD, done
    assert done.json["holder"] == holder("bob") and done.json["resources"] == [BRANCH, ISSUE]
    assert not marker.exists()
    assert sh.lock(BRANCH) is None


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("rlock", [ISSUE, "GitHub://acme/app/issues/42/"], "more than once"),
        ("runlock", [ISSUE, ISSUE], "more than once"),
        ("kubelock", ["acquire", "-o", "json", *(f"github://acme/app/issues/{i}" for i in range(17))], "at most 16"),
        ("kubelock", ["run", "-o", "json", ISSUE, BRANCH, ISSUE, "--", "true"], "more than once"),
    ],
)
def test_bad_lists_of_uris_are_refused_before_any_request(sh: Shell, command: str, args: list[str], words: str
                                                          ) -> None:
    done = sh("alice", command, *args)
    assert done.code == ExitCode.INVALID_INPUT, done
    assert done.json["error"] == "InvalidInput" and words in done.json["message"]
    assert sh.admin.api.list_namespaced_custom_object(
        "kubelock.dev", "v1alpha1", sh.namespace, "lockclaims")["items"] == []


def test_an_acquire_no_operator_answers_says_once_what_it_waits_for(
    control_plane: Cluster, admin_api: ApiClient, namespace: str
) -> None:
    """No operator watches the namespace: a few seconds after the claim was made, stderr says what the
    command waits for, once, instead of nothing until it gives up; stdout stays the JSON answer."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    bind_agents(admin_api, namespace, ("alice",))
    env = environment(control_plane.user_kubeconfig("alice"), namespace, INSTANCE)
    done = run("kubelock", "acquire", "--wait", "--timeout", "8", "-o", "json", ISSUE, env=env)
    name = claim_name(holder("alice"), normalise(ISSUE))
    line = (f"kubelock: waiting for a kubelock operator to act on claim {namespace}/{name} (is it running and "
            f"watching {namespace}?)")
    assert done.code == ExitCode.TIMED_OUT, done
    assert done.stderr.count(line) == 1, done.stderr
    answer = done.json  # one JSON object, nothing else on stdout
    assert answer["ok"] is False and "no kubelock operator acted on claim" in answer["message"], answer


def test_a_run_no_operator_answers_says_once_what_it_waits_for(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, tmp_path: Path
) -> None:
    """As `acquire`: `kubelock run` with no operator watching says once on stderr what it waits for,
    and the command never starts."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    bind_agents(admin_api, namespace, ("alice",))
    env = environment(control_plane.user_kubeconfig("alice"), namespace, INSTANCE)
    marker = tmp_path / "ran"
    done = run("kubelock", "run", "--wait", "--timeout", "8", ISSUE, "--", "touch", str(marker), env=env)
    name = claim_name(holder("alice"), normalise(ISSUE))
    line = (f"kubelock: waiting for a kubelock operator to act on claim {namespace}/{name} (is it running and "
            f"watching {namespace}?)")
    assert done.code == ExitCode.TIMED_OUT, done
    assert done.stderr.count(line) == 1, done.stderr
    assert not marker.exists(), "the command must not start without the lock"
