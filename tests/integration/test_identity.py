"""Exactly one holder per identity instance, and never "held" when it is not, against the real
control plane with real identities:

- pods of one name in two namespaces are two holders (and a user named like a pod: test_security);
- two instances of one identity conflict like two holders; one instance asking again is idempotent;
- a claim still marked Held whose lease has run out (operator down), or whose lock is gone, is not
  held: exit 8;
- SIGTERM and SIGHUP during a wait leave no claim, and the command says so (exit 143 / 129);
- an exec plugin whose credential expires every few seconds, a rotated token file, and the operator
  on such credentials keep working for minutes while old tokens are revoked;
- a 2-second wait never ends before 2 seconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    ApiException,
    AuthenticationV1TokenRequest,
    CoreV1Api,
    RbacAuthorizationV1Api,
    RbacV1Subject,
    V1BoundObjectReference,
    V1ClusterRoleBinding,
    V1Container,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1RoleRef,
    V1Secret,
    V1TokenRequestSpec,
)

from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, lock_name, normalise
from kubelock.sdk import Forbidden, LockClient, TimedOut
from kubelock.sdk.targets import Target
from kubelock.testbed import ControlPlane, wait_until
from tests.support.access import bind, can_claim, service_account_user
from tests.support.claims import Locks, phase_of, status_of
from tests.support.commands import environment, finish, run, start
from tests.support.namespaces import temporary_namespace
from tests.support.operator import REPO, OperatorProcess

Cluster = Any
SaToken = Callable[..., str]
DEADLINE = 60.0
POD_IMAGE = "registry.k8s.io/pause:3.10"
URI = "deploy://prod"
REFRESH_SECONDS = float(os.environ.get("KUBELOCK_TEST_REFRESH_SECONDS", "130"))


def holder(user: str, instance: str) -> str:
    return f"user:{user}/{instance}"




@pytest.fixture
def operator(control_plane: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as op:
        yield op


@pytest.fixture
def bed(control_plane: Cluster, admin_api: ApiClient, namespace: str) -> ControlPlane:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    for name in ("alice", "bob"):
        bind(admin_api, namespace, "kubelock-agent", name)
        config = control_plane.user_kubeconfig(name)
        wait_until(lambda config=config: can_claim(config, namespace), what=f"{name} may claim", timeout=DEADLINE)
    return control_plane


class Agents:
    """The commands as alice or bob, each with an instance (KUBELOCK_INSTANCE)."""

    def __init__(self, plane: ControlPlane, namespace: str, admin: Locks) -> None:
        self.plane, self.namespace, self.admin = plane, namespace, admin

    def env(self, name: str, instance: str | None) -> dict[str, str]:
        return environment(self.plane.user_kubeconfig(name), self.namespace, instance)

    def claim(self, name: str, instance: str, uri: str = URI) -> str:
        return claim_name(holder(name, instance), normalise(uri))

    def exists(self, claim: str) -> bool:
        return any(c["metadata"]["name"] == claim for c in self.admin.claims())


@pytest.fixture
def agents(bed: ControlPlane, namespace: str, admin_api: ApiClient, operator: OperatorProcess) -> Agents:
    return Agents(bed, namespace, Locks(admin_api, namespace))


# ---- instances ----------------------------------------------------------------------------------


def test_two_instances_of_one_identity_conflict_and_an_instance_is_idempotent(agents: Agents) -> None:
    first = run("rlock", URI, "--ttl", "600", env=agents.env("alice", "w1"))
    assert first.code == 0, first
    assert first.json["holder"] == holder("alice", "w1")

    second = run("rlock", URI, env=agents.env("alice", "w2"))
    assert second.code == ExitCode.HELD, second
    assert (second.json["ok"], second.json["holder"]) == (False, holder("alice", "w1"))
    rejected = agents.admin.get(agents.claim("alice", "w2"))
    assert (phase_of(rejected), status_of(rejected)["holder"]) == ("Rejected", holder("alice", "w1"))

    again = run("rlock", URI, env=agents.env("alice", "w1"))
    assert again.code == 0, again
    assert (again.json["claim"], again.json["fencingToken"]) == (first.json["claim"], first.json["fencingToken"])

    # Outside a pod an instance must be named: processes that do not say which one they are never share.
    unnamed = run("rlock", URI, env=agents.env("alice", None))
    assert unnamed.code == ExitCode.INVALID_INPUT, unnamed
    assert unnamed.json["error"] == "InstanceRequired"
    assert "export KUBELOCK_INSTANCE=<name>" in unnamed.json["message"]

    listed = run("kubelock", "list", "--json", env=agents.env("alice", None))
    assert listed.code == 0, listed
    assert listed.json["identity"] == "user:alice"
    assert sorted(c["holder"] for c in listed.json["claims"]) == [holder("alice", "w1"), holder("alice", "w2")]
    assert run("runlock", URI, env=agents.env("alice", "w1")).code == 0


def test_a_claim_made_under_another_holders_name_is_never_taken_for_its_own(agents: Agents) -> None:
    """Claim names are predictable (holder and URI): alice creates a claim of her own under the name
    bob's instance would use. bob's commands must not report her lock as his, nor touch it."""
    alice_api: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(agents.plane.user_kubeconfig("alice"))
    )
    try:
        squatted = agents.claim("bob", "w1")
        Locks(alice_api, agents.namespace).claim(squatted, URI, holder("alice", "w1"), ttl=600)
        agents.admin.wait_phase(squatted, "Held", DEADLINE)
    finally:
        alice_api.close()  # type: ignore[no-untyped-call]

    for command in ("rlock", "rlock-heartbeat", "runlock"):
        got = run(command, URI, env=agents.env("bob", "w1"))
        assert got.code == ExitCode.FORBIDDEN, (command, got)
        assert (got.json["ok"], got.json["error"]) == (False, "ClaimNameTaken"), got
        assert f"it is {holder('alice', 'w1')}'s claim on {URI}" in got.json["message"], got
    with LockClient(kubeconfig=str(agents.plane.user_kubeconfig("bob")), namespace=agents.namespace, instance="w1",
                    decision_timeout=DEADLINE) as bob:
        with pytest.raises(Forbidden) as refused:
            bob.acquire(URI, wait=True, timeout=5)
        assert refused.value.reason == "ClaimNameTaken"
    # alice's claim and lock are untouched.
    assert phase_of(agents.admin.get(squatted)) == "Held"
    assert agents.admin.lock(lock_name(URI))["spec"]["holder"] == holder("alice", "w1")


def pod(name: str, node: str, sa: str = "agent") -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name=name, labels={POD_LABEL: POD_LABEL_VALUE}),
        spec=V1PodSpec(containers=[V1Container(name="main", image=POD_IMAGE)], node_name=node, service_account_name=sa),
    )


def test_pods_of_one_name_in_two_namespaces_are_two_holders(
    bed: ControlPlane, operator: OperatorProcess, admin_api: ApiClient, namespace: str, fake_node: str,
    sa_token: SaToken, tmp_path: Path,
) -> None:
    core = CoreV1Api(admin_api)
    clients: list[LockClient] = []
    with temporary_namespace(admin_api, "kl-") as elsewhere:
        holders = []
        for ns in (namespace, elsewhere):
            sa_token(ns, "agent")  # creates the ServiceAccount
            bind(admin_api, namespace, "kubelock-agent", service_account_user(ns, "agent"))
            created = core.create_namespaced_pod(ns, pod("agent-a", fake_node))
            assert created.metadata is not None
            token = sa_token(ns, "agent", created)
            config = bed.token_kubeconfig(token, tmp_path / f"{ns}.kubeconfig", ns)
            wait_until(lambda config=config: can_claim(config, namespace), what="the pod may claim", timeout=DEADLINE)
            client = LockClient(kubeconfig=str(config), namespace=namespace, env={}, decision_timeout=DEADLINE)
            clients.append(client)
            holders.append(f"pod:{ns}/agent-a/{str(created.metadata.uid)[:8]}")
        try:
            here, there = clients
            assert [c.identity().holder for c in clients] == holders
            mine = here.try_acquire(URI, ttl=600)
            assert mine.ok
            theirs = there.try_acquire(URI, ttl=600)  # the same pod name, in another namespace
            assert not theirs.ok
            assert theirs.holder == holders[0]
            assert Locks(admin_api, namespace).lock(lock_name(URI))["spec"]["holder"] == holders[0]
        finally:
            for client in clients:
                client.close()


# ---- fail closed ----------------------------------------------------------------------------------


def test_an_adopted_claim_whose_lease_ran_out_or_whose_lock_is_gone_is_not_held(
    agents: Agents, operator: OperatorProcess
) -> None:
    expiring, broken = "deploy://expiring", "deploy://broken"
    env = agents.env("alice", "w1")
    taken = run("rlock", "--ttl", "600", broken, env=env)
    assert taken.code == 0, taken
    # The lease must outlast the command and the operator's stop on a loaded machine.
    assert run("rlock", "--ttl", "30", expiring, env=env).code == 0

    operator.stop()  # nobody will write Expired or Revoked now
    claim = agents.admin.get(agents.claim("alice", "w1", expiring))
    assert phase_of(claim) == "Held", claim  # (a machine so slow that 30 s passed would end the test here)
    agents.admin.delete_lock(taken.json["lock"])  # an admin breaks a lock meanwhile
    expires = datetime.fromisoformat(status_of(claim)["expiresAt"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, expires - time.time() + 1.0))
    assert phase_of(agents.admin.get(agents.claim("alice", "w1", expiring))) == "Held"  # what it still says

    beat = run("rlock-heartbeat", expiring, env=env)
    assert beat.code == ExitCode.LOST, beat
    assert (beat.json["ok"], beat.json["error"]) == (False, "LeaseExpired")
    got = run("rlock", expiring, env=env)
    assert got.code == ExitCode.LOST, got
    assert (got.json["ok"], got.json["error"], got.json["lost"]) == (False, "LeaseExpired", True)
    assert "not held" in got.json["message"]
    assert not agents.exists(agents.claim("alice", "w1", expiring))  # the record of a run-out lease is removed

    for command in (["rlock", broken], ["kubelock", "acquire", broken, "--json"]):
        adopted = run(*command, env=env)
        assert adopted.code == ExitCode.LOST, (command, adopted)
        assert (adopted.json["ok"], adopted.json["error"]) == (False, "LockBroken")
        assert f"its lock {taken.json['lock']} is gone" in adopted.json["message"]


# ---- signals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "code", "error"),
    [(signal.SIGTERM, ExitCode.TERMINATED, "Terminated"), (signal.SIGHUP, ExitCode.HANGUP, "HungUp")],
)
def test_a_signal_during_a_wait_leaves_no_claim(agents: Agents, sig: int, code: int, error: str) -> None:
    assert run("rlock", "--ttl", "600", URI, env=agents.env("bob", "w1")).code == 0
    for command in (["rlock", "--wait", URI], ["kubelock", "acquire", "--wait", URI, "--json"]):
        waiter = start(*command, env=agents.env("alice", "w1"))
        claim = agents.claim("alice", "w1")
        agents.admin.wait_phase(claim, "Pending", DEADLINE)
        waiter.send_signal(sig)
        got = finish(waiter)
        assert got.code == code, (command, got)
        assert (got.json["ok"], got.json["error"]) == (False, error)
        assert not agents.exists(claim), command


def test_sigterm_during_an_sdk_acquire_withdraws_the_claim(agents: Agents) -> None:
    assert run("rlock", "--ttl", "600", URI, env=agents.env("bob", "w1")).code == 0
    script = (
        "from kubelock.sdk import LockClient\n"
        f"client = LockClient(instance='sdk', decision_timeout={DEADLINE})\n"
        f"client.acquire({URI!r}, wait=True)\n"
        "print('acquired')\n"
    )
    env = agents.env("alice", None)
    process = start_python(script, env)
    claim = agents.claim("alice", "sdk")
    agents.admin.wait_phase(claim, "Pending", DEADLINE)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "acquired" not in stdout
    assert not agents.exists(claim)


def start_python(script: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


# ---- wait timeouts ------------------------------------------------------------------------------------


def test_a_2_second_wait_never_ends_before_2_seconds(agents: Agents) -> None:
    assert run("rlock", "--ttl", "600", URI, env=agents.env("bob", "w1")).code == 0
    config = str(agents.plane.user_kubeconfig("alice"))
    elapsed = []
    with LockClient(kubeconfig=config, namespace=agents.namespace, instance="w1", decision_timeout=DEADLINE) as alice:
        for _ in range(5):
            began = time.monotonic()
            with pytest.raises(TimedOut):
                alice.acquire(URI, wait=True, timeout=2)
            elapsed.append(time.monotonic() - began)
    began = time.monotonic()
    got = run("rlock", "--wait", "--timeout", "2", URI, env=agents.env("alice", "w2"))
    elapsed.append(time.monotonic() - began)
    assert got.code == ExitCode.TIMED_OUT, got
    assert got.json["holder"] == holder("bob", "w1")
    assert min(elapsed) >= 2.0, elapsed


# ---- credentials that expire and rotate -----------------------------------------------------------------

PLUGIN = """
import datetime, json, os, time
with open(os.environ["TOKEN_FILE"]) as f:
    token = f.read().strip()
with open(os.environ["RUNS_FILE"], "a") as f:
    f.write(f"{time.time()}\\n")
lifetime = float(os.environ["LIFETIME"])
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}))
"""
LIFETIME = 4.0  # of each exec credential
ROTATE = 4.0  # a new token every ROTATE seconds; the one before the previous is revoked


class Rotator:
    """Mints ServiceAccount tokens bound to Secrets and revokes them by deleting the Secret, so a
    client that keeps an old token gets 401s: only a refreshing client keeps working."""

    def __init__(self, admin_api: ApiClient, namespace: str, accounts: dict[str, Path]) -> None:
        self.core = CoreV1Api(admin_api)
        self.namespace = namespace
        self.accounts = accounts  # ServiceAccount -> the file its current token is written to
        self.live: list[tuple[str, str]] = []  # (secret, token), oldest first
        self.revoked: list[str] = []
        self.rotated_at: list[float] = []  # monotonic, at the start of each rotation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[BaseException] = []

    def rotate(self) -> None:
        self.rotated_at.append(time.monotonic())
        for account, path in self.accounts.items():
            secret = self.core.create_namespaced_secret(
                self.namespace, V1Secret(metadata=V1ObjectMeta(generate_name=f"{account}-")))
            assert secret.metadata is not None
            ref = V1BoundObjectReference(kind="Secret", api_version="v1", name=secret.metadata.name,
                                         uid=secret.metadata.uid)
            request = AuthenticationV1TokenRequest(spec=V1TokenRequestSpec(audiences=[], expiration_seconds=3600,
                                                                            bound_object_ref=ref))
            response = self.core.create_namespaced_service_account_token(account, self.namespace, request)
            assert response.status is not None
            token = response.status.token
            staged = path.with_suffix(".new")
            staged.write_text(token)
            staged.replace(path)  # the kubelet, too, replaces the file whole
            self.live.append((str(secret.metadata.name), token))
        while len(self.live) > 2 * len(self.accounts):
            secret, token = self.live.pop(0)
            self.core.delete_namespaced_secret(secret, self.namespace)
            self.revoked.append(token)

    def _loop(self) -> None:
        while not self._stop.wait(ROTATE):
            try:
                self.rotate()
            except BaseException as error:  # reported by the test
                self.errors.append(error)

    def __enter__(self) -> Rotator:
        self.rotate()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def exec_kubeconfig(plane: ControlPlane, path: Path, plugin: Path, token_file: Path, runs: Path,
                    namespace: str) -> Path:
    config = yaml.safe_load(plane.token_kubeconfig("unused", path, namespace).read_text())
    config["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": [str(plugin)],
        "interactiveMode": "Never",
        "env": [{"name": "TOKEN_FILE", "value": str(token_file)}, {"name": "RUNS_FILE", "value": str(runs)},
                {"name": "LIFETIME", "value": str(LIFETIME)}],
    }}
    path.write_text(yaml.safe_dump(config))
    return path


def test_expiring_and_rotated_credentials_keep_clients_and_the_operator_working(
    bed: ControlPlane, admin_api: ApiClient, namespace: str, sa_token: SaToken, tmp_path: Path
) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    for account in ("agent", "operator"):
        sa_token(namespace, account)  # creates the ServiceAccount
    bind(admin_api, namespace, "kubelock-agent", service_account_user(namespace, "agent"))
    rbac = RbacAuthorizationV1Api(admin_api)
    binding = f"kubelock-operator-{namespace}"
    rbac.create_cluster_role_binding(V1ClusterRoleBinding(
        metadata=V1ObjectMeta(name=binding),
        role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="kubelock-operator"),
        subjects=[RbacV1Subject(kind="ServiceAccount", name="operator", namespace=namespace)]))
    files = {account: tmp_path / f"{account}.token" for account in ("agent", "operator")}
    runs = {name: tmp_path / f"{name}.runs" for name in ("agent", "operator")}
    agent_exec = exec_kubeconfig(bed, tmp_path / "agent.kubeconfig", plugin, files["agent"], runs["agent"], namespace)
    operator_exec = exec_kubeconfig(bed, tmp_path / "operator.kubeconfig", plugin, files["operator"],
                                    runs["operator"], namespace)
    token_file_config = yaml.safe_load(bed.token_kubeconfig("unused", tmp_path / "file.kubeconfig", namespace)
                                       .read_text())
    token_file_config["users"][0]["user"] = {"tokenFile": str(files["agent"])}
    file_kubeconfig = tmp_path / "file.kubeconfig"
    file_kubeconfig.write_text(yaml.safe_dump(token_file_config))
    try:
        with Rotator(admin_api, namespace, {"agent": files["agent"], "operator": files["operator"]}) as rotator, \
                OperatorProcess(operator_exec, tmp_path / "operator.log", namespaces=(namespace,)) as operator:
            wait_until(lambda: can_claim(file_kubeconfig, namespace), what="the agent may claim", timeout=DEADLINE)
            by_exec = LockClient(kubeconfig=str(agent_exec), namespace=namespace, instance="exec", env={},
                                 decision_timeout=DEADLINE)
            by_file = LockClient(kubeconfig=str(file_kubeconfig), namespace=namespace, instance="file", env={},
                                 decision_timeout=DEADLINE)
            began, began_wall = time.monotonic(), time.time()
            with by_exec.lock("deploy://exec", ttl=6) as exec_lease, by_file.lock("deploy://file", ttl=6) as file_lease:
                while time.monotonic() - began < REFRESH_SECONDS:
                    time.sleep(5)
                    assert exec_lease.error is None and file_lease.error is None, (exec_lease.error, file_lease.error)
                    by_exec.heartbeat("deploy://exec")
                    by_file.heartbeat("deploy://file")
                # The operator, on its own expiring credential, still grants: a handoff between the two.
                waiter = threading.Thread(target=lambda: by_file.acquire("deploy://exec", wait=True, timeout=DEADLINE))
                waiter.start()
                time.sleep(1)
            waiter.join(DEADLINE)
            assert Locks(admin_api, namespace).lock(lock_name("deploy://exec"))["spec"]["holder"] == \
                f"sa:{namespace}/agent/file"
            by_exec.close()
            by_file.close()
            assert not rotator.errors, rotator.errors
            log = operator.log_text()
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(binding)

    # Old tokens really were refused, so only refreshing kept the clients working: tokens were replaced
    # (and the one before the previous revoked) all through the run, never more than a few ROTATE
    # apart. (A count of revocations in the run's fixed time would depend on how fast the API server
    # answers the rotations' six requests: slow on a loaded machine.)
    gaps = [later - earlier for earlier, later in itertools.pairwise(rotator.rotated_at)]
    assert rotator.rotated_at[-1] - rotator.rotated_at[0] >= REFRESH_SECONDS - 4 * ROTATE, rotator.rotated_at
    assert max(gaps) < 4 * ROTATE, gaps
    assert len(rotator.revoked) >= 2 * (len(rotator.rotated_at) - 2), (len(rotator.revoked), len(gaps))
    stale = bed.token_kubeconfig(rotator.revoked[0], tmp_path / "revoked.kubeconfig", namespace)
    api: ApiClient = kubernetes.config.new_client_from_config(config_file=str(stale))  # type: ignore[no-untyped-call]
    with pytest.raises(ApiException) as refused:
        Locks(api, namespace).claims()
    api.close()  # type: ignore[no-untyped-call]
    assert refused.value.status == 401
    # The agent and the operator kept fetching new exec credentials for the whole run (kopf logs in
    # again when the credential it was given is due). A client runs the plugin lazily, when it makes
    # a request after its credential is due, so how many runs there are follows the request rate
    # (lower on a busy machine); what must hold is that no stretch of the run went without one.
    window = 5 * LIFETIME
    for name in ("agent", "operator"):
        times = [float(line) for line in runs[name].read_text().split()]
        starts = [began_wall + i * window for i in range(int(REFRESH_SECONDS // window))]
        bare = [start - began_wall for start in starts if not any(start <= t < start + window for t in times)]
        assert not bare, (name, f"no credential fetched in the {window:.0f} s from these offsets", bare, len(times))
    # A status code, not the digits of a timestamp or a fencing token.
    assert not re.search(r"(?<![\w,.:])401(?!\w)", log), log[-3000:]
    for sign in ("Unauthorized", "LoginError", "Traceback"):
        assert sign not in log, log[-3000:]


def test_a_create_whose_answer_never_came_is_withdrawn_only_if_it_made_the_claim(agents: Agents) -> None:
    """An acquire interrupted (signal, timeout) between sending its create and reading the answer may
    have made the claim: it deletes the claim by name only when the claim carries its own mark."""
    config = str(agents.plane.user_kubeconfig("alice"))
    with LockClient(kubeconfig=config, namespace=agents.namespace, instance="w9", decision_timeout=DEADLINE) as alice:
        aio = alice.aio
        ident = alice.identity()
        name = alice.run(aio.claim_name_for(URI))
        sent = aio._claim_body(ident, name, Target.of(URI), wait=True, ttl=600, wait_timeout=None)
        # another create's mark:
        other = aio._claim_body(ident, name, Target.of(URI), wait=True, ttl=600, wait_timeout=None)
        alice.run(aio.kube.create(f"/apis/kubelock.dev/v1alpha1/namespaces/{agents.namespace}/lockclaims", sent))

        alice.run(aio._withdraw_unanswered(agents.namespace, name, other))
        assert agents.exists(name)  # not the claim that create made
        alice.run(aio._withdraw_unanswered(agents.namespace, name, sent))
        assert not agents.exists(name)
