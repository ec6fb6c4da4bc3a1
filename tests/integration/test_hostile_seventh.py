"""A hostile agent, a seventh pass (docs/security.md, "A hostile agent, a seventh pass (2026-11-28)").
The static user alice bound to `kubelock-agent`, against the real API server and an operator of this
tree: a second live process of her instance renewing the lock the first holds (`kubelock heartbeat`,
`rlock-heartbeat`, the SDK's `heartbeat`), while `kubelock run`'s own renewals go on; the message of a
wait on her own generated claim (`SelfDeadlock`) naming that claim; SIGTERM to `kubelock run` at its
first renewal; a ServiceAccount token rotated (and the old one revoked) while a lock is held and renewed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import (
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
)

from kubelock.api.constants import GROUP, PROCESS_ANNOTATION, RENEW_ANNOTATION, VERSION
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.sdk import Expired, LockClient, LockError
from kubelock.testbed import ControlPlane
from tests.support.access import (
    REVOKED_SECONDS,
    bind,
    replace_file,
    revoked,
    service_account_agent,
    token_bound_to_secret,
    token_file_kubeconfig,
    user_environment,
    wait_allowed,
)
from tests.support.claims import Locks, status_of, wait_until
from tests.support.commands import argv_of, finish, python_json, run, start
from tests.support.namespaces import temporary_namespace
from tests.support.operator import REPO, OperatorProcess

PREFIX = "klh7-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
INSTANCE = "shared"
HOLDER = f"user:alice/{INSTANCE}"
Body = dict[str, Any]


@pytest.fixture
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with temporary_namespace(admin_api, PREFIX) as name:
        bind(admin_api, name, "kubelock-agent", "alice")
        wait_allowed(admin_api, "alice", name, "create", "lockclaims")
        yield name


@pytest.fixture
def alice_env(control_plane: ControlPlane, ns: str) -> dict[str, str]:
    return user_environment(control_plane, "alice", ns, INSTANCE)


# Takes the lock, says so on stdout, and ends when stdin closes, without releasing (os._exit): as a
# process that crashed or was killed would.
HOLDING = """
import json, os, sys
from kubelock.sdk import LockClient
client = LockClient(decision_timeout={deadline})
result = client.acquire({uri!r}, ttl=600)
print(json.dumps({{"ok": result.ok, "token": result.fencing_token, "pid": os.getpid()}}), flush=True)
sys.stdin.read()
os._exit(0)
"""

# Renews the lock as the same instance, once: what a second process would do.
RENEWING = """
import json
from kubelock.sdk import Expired, LockClient, LockError
with LockClient(decision_timeout={deadline}) as client:
    try:
        result = client.heartbeat({uri!r})
        print(json.dumps({{"renewed": result.claim_name, "token": result.fencing_token}}))
    except LockError as error:
        print(json.dumps({{"error": type(error).__name__, "reason": error.reason, "message": error.message}}))
"""


def test_a_second_live_process_of_one_instance_cannot_renew_the_firsts_lock(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str
) -> None:
    """A renewal answers with the lock's fencing token and a confirmed expiry, as if the renewing
    process held the lock; and it keeps alive a lease that stands for the process that made the
    claim. A second live process of the instance, refused the acquire, used to get both through
    `heartbeat`. Now it is refused (`HeldByAnotherProcess`, exit 1) and the claim is not written; once
    the maker is gone, the instance renews it as before."""
    uri = "deploy://seventh-renew"
    admin = Locks(admin_api, ns)
    claim = claim_name(HOLDER, normalise(uri))
    first = subprocess.Popen([sys.executable, "-c", HOLDING.format(deadline=DEADLINE, uri=uri)], env=alice_env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO)
    try:
        assert first.stdout is not None
        held = json.loads(first.stdout.readline() or "{}")
        assert held.get("ok") is True, first.stderr.read() if first.stderr else held
        before = admin.get(claim)
        assert before["metadata"]["annotations"][PROCESS_ANNOTATION].split("/")[2] == str(held["pid"])

        sdk = python_json(RENEWING.format(deadline=DEADLINE, uri=uri), alice_env, timeout=DEADLINE)
        print(f"SDK heartbeat from a second process: {sdk}")
        assert (sdk.get("error"), sdk.get("reason")) == ("HeldByAnotherProcess", "HeldByAnotherProcess"), sdk
        assert f"not renewed: another live process (pid {held['pid']})" in sdk["message"], sdk
        assert "token" not in sdk

        cli = run("kubelock", "heartbeat", uri, env=alice_env)
        print(f"kubelock heartbeat: exit {cli.code}: {cli.stderr.strip()}")
        assert cli.code == ExitCode.HELD, cli
        assert f"another live process (pid {held['pid']})" in cli.stderr, cli
        compat = run("rlock-heartbeat", uri, env=alice_env)
        print(f"rlock-heartbeat: exit {compat.code}: {compat.stdout.strip()}")
        assert compat.code == ExitCode.HELD, compat
        assert compat.json["error"] == "HeldByAnotherProcess", compat
        assert "fencingToken" not in compat.json or compat.json["fencingToken"] is None, compat

        after = admin.get(claim)  # refusing wrote nothing: no renewal marker, the same version
        assert (after["metadata"]["uid"], after["metadata"]["resourceVersion"]) == (
            before["metadata"]["uid"], before["metadata"]["resourceVersion"])
        assert RENEW_ANNOTATION not in (after["metadata"].get("annotations") or {})
    finally:
        first.communicate(timeout=DEADLINE)  # stdin closes: the first ends without releasing
    assert first.returncode == 0

    # The maker is gone (a crash, a restart, a one-shot `kubelock acquire`): the instance renews it.
    again = python_json(RENEWING.format(deadline=DEADLINE, uri=uri), alice_env, timeout=DEADLINE)
    assert again == {"renewed": claim, "token": held["token"]}, again
    renewed = run("kubelock", "heartbeat", uri, env=alice_env)
    assert renewed.code == 0, renewed
    assert run("kubelock", "release", uri, env=alice_env).code == 0
    wait_until(lambda: not admin.claims(), what="every claim is released", timeout=DEADLINE)


def test_kubelock_run_renews_its_own_lock_while_its_command_may_not(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """Under `kubelock run` the command is another process of the instance: its `kubelock heartbeat` of
    the lock `kubelock run` holds is refused, and `kubelock run`'s own renewals keep the lock past its
    TTL (6 s here, the command runs 9 s)."""
    uri = "deploy://seventh-run"
    told = tmp_path / "heartbeat.txt"
    script = f"{' '.join(argv_of('kubelock'))} heartbeat {uri} >> {told} 2>&1; echo \"exit $?\" >> {told}; sleep 9"
    began = time.monotonic()
    done = run("kubelock", "run", uri, "--ttl", "6", "-o", "json", "--", "sh", "-c", script, env=alice_env,
               timeout=DEADLINE)
    took = time.monotonic() - began
    print(f"kubelock run: exit {done.code} after {took:.1f}s; the command's heartbeat: {told.read_text().strip()}")
    assert done.code == 0, done
    assert told.read_text().strip().endswith("exit 1"), told.read_text()
    assert "not renewed: another live process" in told.read_text(), told.read_text()
    result = json.loads(done.stdout.splitlines()[-1])
    assert result.get("endedBy") == "CommandExited", result
    assert took >= 9, took  # the lock outlived its 6 s TTL: kubelock run renewed it
    wait_until(lambda: not Locks(admin_api, ns).claims(), what="kubelock run released", timeout=DEADLINE)


def test_a_self_deadlock_names_the_generated_claim_that_holds(
    control_plane: ControlPlane, alice_env: dict[str, str], admin_api: ApiClient, ns: str
) -> None:
    """An agent writing claims with `generateName` holds a resource with one of them; the SDK's acquire
    of the resource (a claim of its own, named from holder + resource) is a wait on itself. Its
    `SelfDeadlock` used to name the holder only; now it names the claim that holds."""
    uri = "deploy://seventh-generated"
    alice = CustomObjectsApi(control_plane_client(control_plane))
    try:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"generateName": "g-"},
                "spec": {"resource": uri, "holder": HOLDER, "wait": False}}
        made: Body = dict(alice.create_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", body))
    finally:
        alice.api_client.close()
    generated = made["metadata"]["name"]
    locks = Locks(admin_api, ns)
    locks.wait_phase(generated, "Held", timeout=DEADLINE)

    config = str(control_plane.user_kubeconfig("alice"))
    with (LockClient(kubeconfig=config, namespace=ns, instance=INSTANCE, decision_timeout=DEADLINE) as client,
          pytest.raises(LockError) as refused):
        client.acquire(uri, ttl=60)
    print(f"SDK acquire: {type(refused.value).__name__} {refused.value.reason}: {refused.value.message}")
    assert refused.value.reason == "SelfDeadlock", refused.value
    assert f"{HOLDER} → {uri} → {HOLDER}" in refused.value.message
    assert f"held by this holder's own claim {generated}" in refused.value.message, refused.value.message
    status = status_of(locks.get(claim_name(HOLDER, normalise(uri))))
    assert generated in status["message"], status

    cli = run("kubelock", "acquire", uri, "--wait", "--timeout", "30", env=alice_env)
    print(f"kubelock acquire --wait: exit {cli.code}: {cli.stderr.strip()}")
    assert cli.code == ExitCode.DEADLOCK, cli
    assert generated in cli.stderr, cli


def control_plane_client(control_plane: ControlPlane) -> ApiClient:
    client: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.user_kubeconfig("alice")))
    return client


def test_sigterm_to_kubelock_run_at_its_first_renewal_releases_and_stops_the_command(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """The orchestrator's SIGTERM may come while `kubelock run` writes its first renewal (every third
    of its renew deadline: 1.3 s with a 6 s TTL). Sent at offsets around it: `kubelock run` passes it
    on, the command ends, the lock is released, and the exit is the command's (143), never a
    traceback nor a claim left behind."""
    uri = "deploy://seventh-term"
    locks = Locks(admin_api, ns)
    name = claim_name(HOLDER, normalise(uri))
    outcomes = []
    for offset in (0.9, 1.2, 1.4, 1.7, None):
        started = tmp_path / f"started-{offset}"
        script = f"trap 'echo term >> {started}; exit 143' TERM; touch {started}; while :; do sleep 0.05; done"
        process = start("kubelock", "run", uri, "--ttl", "6", "-o", "json", "--", "sh", "-c", script, env=alice_env)
        wait_until(started.exists, what="the command started", timeout=DEADLINE)
        if offset is not None:
            time.sleep(offset)
            renewed: object = RENEW_ANNOTATION in (locks.get(name)["metadata"].get("annotations") or {})
        else:  # the moment the first renewal is written, before the operator has answered it
            renewed = first_renewal_unanswered(locks, name)
        os.kill(process.pid, signal.SIGTERM)
        done = finish(process, timeout=DEADLINE)
        outcomes.append((offset, renewed, done.code, started.read_text().strip()))
        assert "Traceback" not in done.stderr, done.stderr
        assert done.code == 128 + signal.SIGTERM, done
        assert json.loads(done.stdout.splitlines()[-1]).get("endedBy") == "Signal", done
        assert started.read_text().strip() == "term", started.read_text()
        wait_until(lambda: not any(c["metadata"]["name"] == name for c in locks.claims()),
                   what="the claim is released", timeout=DEADLINE)
    print(f"SIGTERM at (offset, renewed before it, exit, command saw): {outcomes}")
    assert not locks.locks()


def first_renewal_unanswered(locks: Locks, name: str) -> str:
    """Reads the claim until its first renewal marker is there; says whether the operator had answered
    it when seen (`observedRenew` equal to the marker) or not yet."""
    seen: list[Body] = []

    def written() -> bool:
        body = locks.get(name)
        seen[:] = [body]
        return RENEW_ANNOTATION in (body["metadata"].get("annotations") or {})

    wait_until(written, what="the first renewal is written", timeout=DEADLINE)
    marker = seen[0]["metadata"]["annotations"][RENEW_ANNOTATION]
    return "answered" if status_of(seen[0]).get("observedRenew") == marker else "unanswered"


def test_a_rotated_service_account_token_keeps_a_held_lock_renewed_from_a_token_file(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """An agent's credential rotated while it holds a lock: the new token written (renamed into place)
    and the old one revoked. With the kubeconfig's `tokenFile` the SDK reads the file again after the
    401 and its renewals go on past the revocation (the lease, 12 s, would otherwise end); with a
    `token` written inline, the kubeconfig rewritten likewise is not read again by a running process
    (as client-go): its renewals are refused and the lease is declared lost, naming the credentials."""
    core = CoreV1Api(admin_api)
    service_account_agent(admin_api, ns)

    # A kubeconfig whose user reads its token from a file.
    token_path = tmp_path / "token"
    replace_file(token_path, token_bound_to_secret(core, ns, "credential-1"))
    config = token_file_kubeconfig(control_plane, token_path, tmp_path / "file.kubeconfig", ns)
    old = token_path.read_text()
    agent = LockClient(kubeconfig=str(config), namespace=ns, instance="rot", retries=1, request_timeout=5)
    try:
        with agent.lock("deploy://seventh-rotated", ttl=12, renew_deadline=8) as lease:
            replace_file(token_path, token_bound_to_secret(core, ns, "credential-2"))
            core.delete_namespaced_secret("credential-1", ns)  # the old token is revoked
            wait_until(lambda: revoked(config, old), what="the old token is refused", timeout=REVOKED_SECONDS)
            lost = lease.lost.wait(30)  # more than two leases after the revocation
            print(f"token file rotated, old token refused; lease lost within 30 s after: {lost} ({lease.error})")
            assert not lost, lease.error
    finally:
        agent.close()

    # The same with the token inline in the kubeconfig, the file rewritten with the new one.
    inline = control_plane.token_kubeconfig(token_bound_to_secret(core, ns, "credential-3"),
                                            tmp_path / "inline.kubeconfig", ns)
    agent = LockClient(kubeconfig=str(inline), namespace=ns, instance="rot2", retries=1, request_timeout=5)
    try:
        with agent.lock("deploy://seventh-inline", ttl=12, renew_deadline=8) as lease:
            control_plane.token_kubeconfig(token_bound_to_secret(core, ns, "credential-4"),
                                           tmp_path / "inline.kubeconfig.new", ns)
            os.replace(tmp_path / "inline.kubeconfig.new", inline)
            core.delete_namespaced_secret("credential-3", ns)
            assert lease.lost.wait(REVOKED_SECONDS)
            error = lease.error
            print(f"inline token rotated in the kubeconfig: {type(error).__name__}: {error}")
            assert isinstance(error, Expired), error
            assert "did not accept the credentials (401 Unauthorized" in error.message, error.message
    finally:
        agent.close()
