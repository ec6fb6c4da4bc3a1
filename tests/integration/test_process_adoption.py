"""Two live processes of one holder instance never both hold a lock, against the real control plane.

A claim's name comes from holder + resource, so two processes given one instance meet on one claim.
The second used to adopt the first's claim and fencing token (both "held" the lock at once); now the
claim records which process made it (annotation kubelock.dev/process) and the SDK refuses to adopt a
claim of another process that is alive here. Once that process is gone, a new one takes the claim
back as before (a restarted process, or `rlock` then `runlock`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, CustomObjectsApi

from kubelock.api.constants import CLAIM_PLURAL, GROUP, PROCESS_ANNOTATION, VERSION
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.testbed import ControlPlane, wait_until
from tests.support.access import bind, can_claim
from tests.support.claims import Locks, phase_of
from tests.support.commands import argv_of, environment, python_json, run
from tests.support.operator import REPO, OperatorProcess

Cluster = Any
DEADLINE = 60.0
URI = "deploy://shared-instance"
INSTANCE = "shared"
HOLDER = f"user:alice/{INSTANCE}"

# Takes the lock, says so on stdout, and ends when stdin closes: without releasing (os._exit), as a
# process that crashed or was killed would.
HOLDING = f"""
import json, os, sys
from kubelock.sdk import LockClient
client = LockClient(decision_timeout={DEADLINE})
result = client.acquire({URI!r}, ttl=600)
print(json.dumps({{"ok": result.ok, "token": result.fencing_token, "pid": os.getpid()}}), flush=True)
sys.stdin.read()
os._exit(0)
"""

# Asks for the same lock as the same instance, once.
ASKING = f"""
import json
from kubelock.sdk import LockClient, LockError
with LockClient(decision_timeout={DEADLINE}) as client:
    try:
        result = client.acquire({URI!r}, ttl=600)
        print(json.dumps({{"ok": result.ok, "token": result.fencing_token}}))
    except LockError as error:
        print(json.dumps({{"error": type(error).__name__, "reason": error.reason, "message": error.message}}))
"""


@pytest.fixture
def alice_env(control_plane: Cluster, admin_api: ApiClient, namespace: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    bind(admin_api, namespace, "kubelock-agent", "alice")
    config = control_plane.user_kubeconfig("alice")
    wait_until(lambda: can_claim(config, namespace), what="alice may claim", timeout=DEADLINE)
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)):
        yield environment(config, namespace, INSTANCE)


def python(script: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


@contextlib.contextmanager
def start_holder(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A process of the instance that holds URI (HOLDING), and what it printed once it held. When the
    block ends, the process's stdin closes and it ends without releasing; it must exit 0."""
    first = python(HOLDING, env)
    try:
        assert first.stdout is not None
        held: dict[str, Any] = json.loads(first.stdout.readline() or "{}")
        assert held.get("ok") is True, first.stderr.read() if first.stderr else held
        yield held
    finally:
        first.communicate(timeout=DEADLINE)  # stdin closes: the first ends without releasing
    assert first.returncode == 0


def asked(env: dict[str, str]) -> dict[str, Any]:
    return python_json(ASKING, env)


def test_a_second_live_process_of_one_instance_is_refused_and_adopts_once_the_first_is_gone(
    alice_env: dict[str, str], admin_api: ApiClient, namespace: str
) -> None:
    admin = Locks(admin_api, namespace)
    claim = claim_name(HOLDER, normalise(URI))
    with start_holder(alice_env) as held:
        body = admin.get(claim)
        assert body["metadata"]["annotations"][PROCESS_ANNOTATION].split("/")[2] == str(held["pid"])

        # The SDK in a second process of the same instance: refused, naming the first and the remedy.
        second = asked(alice_env)
        assert (second.get("error"), second.get("reason")) == ("HeldByAnotherProcess", "HeldByAnotherProcess"), second
        assert f"pid {held['pid']}" in second["message"]
        assert "KUBELOCK_INSTANCE" in second["message"]

        # The commands: a busy try-lock (exit 1), and a wait that does not join the first's claim.
        tried = run("rlock", URI, env=alice_env)
        assert tried.code == ExitCode.HELD, tried
        assert tried.json["error"] == "HeldByAnotherProcess", tried
        waited = run("kubelock", "acquire", URI, "--wait", "--timeout", "5", env=alice_env)
        assert waited.code == ExitCode.HELD, waited

        # Refusing touched nothing: the first still holds its claim with its token.
        body = admin.get(claim)
        assert phase_of(body) == "Held"
        assert body["status"]["fencingToken"] == held["token"]

    # The first is gone (as after a crash or a restart): a new process takes the claim back.
    again = asked(alice_env)
    assert again == {"ok": True, "token": held["token"]}, again
    adopted = run("rlock", URI, env=alice_env)
    assert adopted.code == 0, adopted
    assert adopted.json["fencingToken"] == held["token"]
    assert run("runlock", URI, env=alice_env).code == 0
    wait_until(lambda: not any(c["metadata"]["name"] == claim for c in admin.claims()),
               what="the claim is released", timeout=DEADLINE)


@pytest.mark.parametrize("mark", ["b/n/\u00b2/1", "b/n/1/\u00b3", "b/n/-1/1", "not a mark", "b/n/1/1/1"])
def test_a_claim_with_a_malformed_process_mark_is_adopted_not_a_crash(
    alice_env: dict[str, str], admin_api: ApiClient, namespace: str, mark: str
) -> None:
    """The process annotation is written by whoever may change the claim (its identity, a lock admin):
    a value that is not a mark is no live process, so the SDK adopts the claim (a superscript digit
    used to pass `str.isdigit` and fail `int`, an InternalError with a traceback)."""
    admin = Locks(admin_api, namespace)
    claim = claim_name(HOLDER, normalise(URI))
    taken = run("rlock", URI, env=alice_env)
    assert taken.code == 0, taken
    alice: ApiClient = kubernetes.config.new_client_from_config(config_file=alice_env["KUBECONFIG"])  # type: ignore[no-untyped-call]
    try:  # alice annotates her own claim: admission lets her
        CustomObjectsApi(alice).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, CLAIM_PLURAL, claim, {"metadata": {"annotations": {PROCESS_ANNOTATION: mark}}}
        )
    finally:
        alice.close()  # type: ignore[no-untyped-call]
    again = asked(alice_env)
    assert again == {"ok": True, "token": taken.json["fencingToken"]}, again
    assert run("runlock", URI, env=alice_env).code == 0
    wait_until(lambda: not any(c["metadata"]["name"] == claim for c in admin.claims()),
               what="the claim is released", timeout=DEADLINE)


# Releases the lock as the same instance, once: what a second process (a sibling given the same
# instance, a command run under the lock) would do by mistake.
RELEASING = f"""
import json
from kubelock.sdk import LockClient, LockError
with LockClient(decision_timeout={DEADLINE}) as client:
    try:
        result = client.release({URI!r})
        print(json.dumps({{"released": result.claim_name}}))
    except LockError as error:
        print(json.dumps({{"error": type(error).__name__, "reason": error.reason, "message": error.message}}))
"""


def test_a_second_live_process_of_one_instance_cannot_release_the_firsts_lock(
    alice_env: dict[str, str], admin_api: ApiClient, namespace: str
) -> None:
    """`kubelock release URI` names no claim: it releases the claim of holder + URI. A second process of
    the holder's instance (a sibling, a command `kubelock run` started) used to delete the claim the
    first still held and used; the first was then told it had lost the lock. Now the release is
    refused while the maker lives, saying who holds it, and goes through once that process is gone."""
    admin = Locks(admin_api, namespace)
    claim = claim_name(HOLDER, normalise(URI))
    with start_holder(alice_env) as held:
        before = admin.get(claim)

        done = subprocess.run([sys.executable, "-c", RELEASING], env=alice_env, capture_output=True, text=True,
                              cwd=REPO, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        sdk = json.loads(done.stdout)
        assert (sdk.get("error"), sdk.get("reason")) == ("HeldByAnotherProcess", "HeldByAnotherProcess"), sdk
        assert f"pid {held['pid']}" in sdk["message"] and "not released" in sdk["message"], sdk

        released = run("kubelock", "release", URI, env=alice_env)
        assert released.code == ExitCode.HELD, released
        assert f"another live process (pid {held['pid']})" in released.stderr, released
        assert run("runlock", URI, env=alice_env).code == ExitCode.HELD

        # A command run under the lock by `kubelock run` of the same instance: its release is refused
        # (the lock is `kubelock run`'s), and `kubelock run` releases the lock when the command ends.
        other = "deploy://shared-instance-run"
        under = run("kubelock", "run", other, "--ttl", "60", "--", *argv_of("kubelock"), "release", other,
                    env=alice_env)
        assert under.code == ExitCode.HELD, under
        assert "another live process" in under.stderr, under

        after = admin.get(claim)  # refusing touched nothing: the same claim, not written since
        assert phase_of(after) == "Held"
        assert (after["metadata"]["uid"], after["metadata"]["resourceVersion"]) == (
            before["metadata"]["uid"], before["metadata"]["resourceVersion"])

    # The first is gone: its claim is released from here as before.
    assert run("kubelock", "release", URI, env=alice_env).code == 0
    wait_until(lambda: not admin.claims(), what="every claim is released", timeout=DEADLINE)
