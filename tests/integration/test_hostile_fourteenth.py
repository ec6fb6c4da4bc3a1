"""A hostile agent, a fourteenth pass (docs/security.md, "A hostile agent, a fourteenth pass (2026-11-29)").
The static users alice and bob bound to `kubelock-agent` (and `lockadmin` to `kubelock-admin`), against
the real API server and an operator of this tree: two `kubelock run` processes of one instance on one
resource; SIGTERM and SIGKILL to a waiting `kubelock acquire --wait` at every moment of its start and
its wait; an exec credential plugin whose user changes under a running `kubelock run`, and one that
stops giving credentials while its holder waits in the queue; priorities and TTLs at and just past
their bounds through the commands, the SDK and `kubectl apply`.
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

import pytest
import yaml
from kubernetes.client import ApiClient

from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.testbed import ControlPlane
from tests.support.access import agents_namespace
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.commands import environment, finish, kubectl, run, start
from tests.support.operator import OperatorProcess

PREFIX = "klh14-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
INSTANCE = "w14"
Body = dict[str, Any]


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with agents_namespace(admin_api, PREFIX, lock_admin=True) as name:
        yield name


def env_of(control_plane: ControlPlane, user: str, ns: str, instance: str = INSTANCE) -> dict[str, str]:
    return environment(control_plane.user_kubeconfig(user), ns, instance)


def last_json(stdout: str) -> Body:
    payload: Body = json.loads(stdout.splitlines()[-1])
    return payload


def absent(locks: Locks, name: str) -> bool:
    return all(c["metadata"]["name"] != name for c in locks.claims())


def claim_seen(locks: Locks, name: str, *, pending: bool) -> bool:
    claims = [c for c in locks.claims() if c["metadata"]["name"] == name]
    return bool(claims) and (not pending or phase_of(claims[0]) == "Pending")


def test_two_runs_of_one_instance_on_one_resource(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """Two `kubelock run` processes of alice's one instance (`KUBELOCK_INSTANCE` shared) on one
    resource: the second, try-lock and `--wait` alike, must neither run its command nor touch the
    first's claim (no renewal, no release on its way out); the first keeps its grant and releases it
    itself. Once the first has ended, a run of the instance takes the resource as usual."""
    uri = "deploy://fourteenth-two-runs"
    alice = env_of(control_plane, "alice", ns)
    locks = Locks(admin_api, ns)
    name = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    started, stop = tmp_path / "first.started", tmp_path / "first.stop"
    script = f"touch {started}; while [ ! -e {stop} ]; do sleep 0.1; done"
    first = start("kubelock", "run", uri, "--ttl", "30", "-o", "json", "--", "sh", "-c", script, env=alice)
    try:
        wait_until(started.exists, what="the first run's command started", timeout=DEADLINE)
        held = locks.get(name)
        token, uid = status_of(held)["fencingToken"], held["metadata"]["uid"]
        second_ran = tmp_path / "second.ran"
        tried = run("kubelock", "run", uri, "--ttl", "30", "-o", "json", "--", "touch", str(second_ran),
                    env=alice, timeout=DEADLINE)
        waited = run("kubelock", "run", uri, "--wait", "--timeout", "20", "--ttl", "30", "-o", "json", "--",
                     "touch", str(second_ran), env=alice, timeout=DEADLINE)
        after = locks.get(name)
        print(f"second run (try): exit {tried.code}, {tried.stdout.strip()} {tried.stderr.strip()!r}")
        print(f"second run (--wait): exit {waited.code}, {waited.stdout.strip()} {waited.stderr.strip()!r}")
        for other in (tried, waited):
            assert other.code == ExitCode.HELD, other
            assert "another live process" in other.stdout + other.stderr, other
        assert not second_ran.exists()
        # The first's claim untouched: the same object, grant and renewal marker as before or later.
        assert after["metadata"]["uid"] == uid and phase_of(after) == "Held"
        assert status_of(after)["fencingToken"] == token
        stop.touch()
        done = finish(first, timeout=DEADLINE)
        got = last_json(done.stdout)
        print(f"first run: exit {done.code}, {got}")
        assert done.code == 0 and got["released"] is True and got["fencingToken"] == token, done
        again = run("kubelock", "run", uri, "--ttl", "30", "-o", "json", "--", "touch", str(second_ran),
                    env=alice, timeout=DEADLINE)
        assert again.code == 0 and second_ran.exists(), again
        assert last_json(again.stdout)["fencingToken"] > token
    finally:
        stop.touch()
        if first.poll() is None:
            first.kill()
            first.wait()


def test_sigterm_to_a_waiting_acquire_at_every_moment_leaves_no_claim(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str
) -> None:
    """bob holds; alice's `kubelock acquire --wait` is sent SIGTERM at moments from its start to its
    wait: before its handlers exist, while its create is on the wire, the instant its claim is seen on
    the API server, once queued. Whatever the moment: it exits 143 (or dies of the signal before it
    could act, then having sent nothing), and no claim of alice's is left to be granted to nobody."""
    uri = "deploy://fourteenth-sigterm"
    bob = env_of(control_plane, "bob", ns)
    alice = env_of(control_plane, "alice", ns)
    locks = Locks(admin_api, ns)
    name = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    assert run("kubelock", "acquire", uri, "--ttl", "300", env=bob).code == 0
    seen: list[tuple[str, int | None, bool]] = []
    try:
        moments: list[float | str] = [0.2, 0.5, 0.8, 1.1, 1.4, 1.7, 2.0, 2.5, 3.0, "created", "created", "queued"]
        for moment in moments:
            process = start("kubelock", "acquire", uri, "--wait", "--timeout", "100", "--ttl", "300", "-o", "json",
                            env=alice)
            if isinstance(moment, float):
                time.sleep(moment)
            else:
                pending = moment == "queued"
                wait_until(lambda p=process, q=pending: claim_seen(locks, name, pending=q) or p.poll() is not None,
                           what=f"alice's claim {moment}", timeout=DEADLINE)
            process.send_signal(signal.SIGTERM)
            done = finish(process, timeout=DEADLINE)
            left = not absent(locks, name)
            seen.append((str(moment), done.code, left))
            print(f"SIGTERM at {moment}: exit {done.code}, claim left: {left}; {done.stdout.strip()} "
                  f"{done.stderr.strip()[-200:]!r}")
            if left:  # the defect: clean up so that the next moment starts clean
                locks.delete(name)
                wait_until(lambda: absent(locks, name), what="the claim left gone")
        assert all(code in (ExitCode.TERMINATED, -signal.SIGTERM) for _, code, _ in seen), seen
        assert not any(left for _, _, left in seen), seen
        # At least some signals landed inside the acquire, not before the command started.
        assert sum(code == ExitCode.TERMINATED for _, code, _ in seen) >= 3, seen
    finally:
        run("kubelock", "release", uri, env=bob)


def test_sigterm_to_a_release_at_every_moment_never_reports_what_did_not_happen(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str
) -> None:
    """alice holds; her `kubelock release` is sent SIGTERM at moments up to its end. Either
    the claim is gone, or the command did not say it released (exit 143 saying the release may not
    have happened, or killed before it could act); then a release run again ends it."""
    uri = "deploy://fourteenth-release-sigterm"
    alice = env_of(control_plane, "alice", ns)
    locks = Locks(admin_api, ns)
    name = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    seen: list[tuple[float, int | None, bool]] = []
    # The moments are fractions of how long a whole release takes here now (its start, mostly Python's
    # imports, is most of it on a loaded machine): the signal should land around its request.
    assert run("kubelock", "acquire", uri, "--ttl", "300", env=alice).code == 0
    began = time.monotonic()
    assert run("kubelock", "release", uri, env=alice).code == 0
    whole = time.monotonic() - began
    for moment in (round(whole * f, 2) for f in (0.6, 0.75, 0.85, 0.9, 0.93, 0.96, 0.98, 1.0, 1.1)):
        assert run("kubelock", "acquire", uri, "--ttl", "300", env=alice).code == 0
        process = start("kubelock", "release", uri, "-o", "json", env=alice)
        time.sleep(moment)
        process.send_signal(signal.SIGTERM)
        done = finish(process, timeout=DEADLINE)
        left = not absent(locks, name)
        seen.append((moment, done.code, left))
        print(f"release, SIGTERM at {moment}: exit {done.code}, claim left: {left}; {done.stdout.strip()} "
              f"{done.stderr.strip()[-200:]!r}")
        if left:
            assert done.code != 0, done
            if done.code == ExitCode.TERMINATED:
                assert "may not have happened" in done.json["message"], done
            assert run("kubelock", "release", uri, env=alice).code == 0
        assert absent(locks, name)
    assert all(code in (0, ExitCode.TERMINATED, -signal.SIGTERM) for _, code, _ in seen), seen


def test_a_killed_waiter_is_granted_to_nobody_only_until_its_lease_ends(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str
) -> None:
    """SIGKILL cannot be handled: alice's `kubelock acquire --wait --ttl 8` is killed while queued
    behind bob's holder h; bob's waiter w queues behind alice. When h leaves, alice's orphan claim is
    granted to nobody, and must end with its lease (8 s, never renewed): w granted after it, with a
    larger token, within the TTL and the operator's reaction."""
    uri = "deploy://fourteenth-sigkill"
    holder = env_of(control_plane, "bob", ns, "h")
    locks = Locks(admin_api, ns)
    orphan = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    waiter = claim_name("user:bob/w", normalise(uri))
    assert run("kubelock", "acquire", uri, "--ttl", "300", env=holder).code == 0
    process = start("kubelock", "acquire", uri, "--wait", "--ttl", "8", env=env_of(control_plane, "alice", ns))
    try:
        wait_until(lambda: not absent(locks, orphan) and phase_of(locks.get(orphan)) == "Pending",
                   what="alice queued", timeout=DEADLINE)
        process.kill()
        process.wait()
        behind = start("kubelock", "acquire", uri, "--wait", "--timeout", "100", "--ttl", "30", "-o", "json",
                       env=env_of(control_plane, "bob", ns, "w"))
        wait_until(lambda: not absent(locks, waiter) and phase_of(locks.get(waiter)) == "Pending",
                   what="bob's waiter queued", timeout=DEADLINE)
        assert run("kubelock", "release", uri, env=holder).code == 0
        granted = status_of(locks.wait_phase(orphan, "Held", timeout=DEADLINE))
        ended = status_of(locks.wait_for(orphan, lambda b: phase_of(b) != "Held", timeout=DEADLINE, what="ended"))
        got = finish(behind, timeout=DEADLINE)
        w = status_of(locks.get(waiter))
        print(f"the orphan: granted {granted.get('acquiredAt')} token {granted.get('fencingToken')}, then "
              f"{ended.get('phase')} {ended.get('reason')} ({ended.get('message')}); bob's waiter: exit {got.code}, "
              f"acquired {w.get('acquiredAt')} token {w.get('fencingToken')}")
        assert ended["phase"] == "Expired", ended
        assert got.code == 0 and got.json["holder"] == "user:bob/w", got
        assert w["fencingToken"] > granted["fencingToken"]
        assert w["acquiredAt"] >= granted["expiresAt"], (granted, w)
    finally:
        if process.poll() is None:
            process.kill()
        run("kubelock", "release", uri, env=env_of(control_plane, "bob", ns, "w"))


# An exec credential plugin (client.authentication.k8s.io/v1) that hands out whatever token its file
# holds now, valid for LIFETIME seconds (so it is asked again after 80% of that); an empty or missing
# file makes it fail, as a plugin whose login has lapsed does.
PLUGIN = """\
import datetime, json, pathlib, sys
path = pathlib.Path(sys.argv[1])
token = path.read_text().strip() if path.exists() else ""
if not token:
    sys.stderr.write("login expired\\n")
    sys.exit(1)
with open(str(path) + ".calls", "a") as calls:
    calls.write(token[:6] + "\\n")
end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=float(sys.argv[2]))
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token, "expirationTimestamp": end.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def token_of(control_plane: ControlPlane, user: str) -> str:
    config = yaml.safe_load(control_plane.user_kubeconfig(user).read_text())
    return str(config["users"][0]["user"]["token"])


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def exec_kubeconfig(control_plane: ControlPlane, tmp_path: Path, lifetime: int) -> tuple[Path, Path]:
    """A kubeconfig of alice's cluster whose user is the plugin above; returns it and the token file."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    token_file = tmp_path / "exec-token"
    config = yaml.safe_load(control_plane.user_kubeconfig("alice").read_text())
    config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                                           "args": [str(plugin), str(token_file), str(lifetime)],
                                           "interactiveMode": "Never"}}
    path = tmp_path / "exec.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path, token_file


def test_an_exec_plugin_whose_user_changes_under_a_run(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """alice's `kubelock run --ttl 12` holds through an exec plugin whose credential lives 4 s; bob
    waits. The plugin then hands out bob's token: every later request of the run is bob's. The run was
    told it is alice; bob's renewals of alice's claim are refused (`kubelock-lockclaim-holder`), so
    the run must lose the lease, stop its command before bob is granted, and not call itself released
    (its release as bob is refused too). Nothing is done in alice's name by bob's credential."""
    uri = "deploy://fourteenth-exec-switch"
    config, token_file = exec_kubeconfig(control_plane, tmp_path, lifetime=4)
    replace_file(token_file, token_of(control_plane, "alice"))
    work = tmp_path / "work"
    script = f"while :; do date +%s.%N >> {work}; sleep 0.1; done"
    alice = environment(config, ns, INSTANCE)
    locks = Locks(admin_api, ns)
    alices = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    bobs = claim_name("user:bob/b", normalise(uri))
    process = start("kubelock", "run", uri, "--ttl", "12", "-o", "json", "--", "sh", "-c", script, env=alice)
    bob = None
    try:
        wait_until(work.exists, what="alice's command works", timeout=DEADLINE)
        token = status_of(locks.get(alices))["fencingToken"]
        bob = start("kubelock", "acquire", uri, "--wait", "--timeout", "100", "--ttl", "30", "-o", "json",
                    env=env_of(control_plane, "bob", ns, "b"))
        wait_until(lambda: not absent(locks, bobs) and phase_of(locks.get(bobs)) == "Pending",
                   what="bob queued", timeout=DEADLINE)
        replace_file(token_file, token_of(control_plane, "bob"))
        switched = time.time()
        done = finish(process, timeout=DEADLINE)
        granted = finish(bob, timeout=DEADLINE)
        got = last_json(done.stdout)
        last_work = float(work.read_text().split()[-1])
        acquired = status_of(locks.get(bobs))
        calls = (tmp_path / "exec-token.calls").read_text().split()
        print(f"kubelock run: exit {done.code}, {got}; stderr {done.stderr.strip()[-400:]!r}; plugin calls "
              f"{len(calls)}; bob: exit {granted.code}, token {acquired.get('fencingToken')}; the command's last "
              f"work {last_work - switched:.1f} s after the switch")
        assert len(set(calls)) == 2, calls  # the plugin was asked again and gave bob's token
        assert done.code == ExitCode.LOST and got["lost"] is True, done
        assert got["released"] is False and "could not release" in done.stderr, done
        assert granted.code == 0 and granted.json["holder"] == "user:bob/b", granted
        assert acquired["fencingToken"] > token
        from datetime import datetime
        assert last_work < datetime.fromisoformat(acquired["acquiredAt"].replace("Z", "+00:00")).timestamp()
    finally:
        if process.poll() is None:
            process.kill()
        if bob is not None and bob.poll() is None:
            bob.kill()
        run("kubelock", "release", uri, env=env_of(control_plane, "bob", ns, "b"))


def test_a_waiter_whose_credentials_lapsed_is_told_its_claim_was_not_withdrawn(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """alice waits in the queue (`kubelock acquire --wait`) through an exec plugin whose credential
    lives 4 s; the plugin then fails (its login lapsed) and alice's process gets SIGTERM. Its claim
    cannot be withdrawn (no credential to do it with): it stays queued and is later granted to nobody
    until its lease ends. Before: the command said "a lock this command was acquiring was withdrawn
    (nothing new is held)". Now it says the claim was not withdrawn, names it and what ends it."""
    uri = "deploy://fourteenth-exec-lapsed"
    config, token_file = exec_kubeconfig(control_plane, tmp_path, lifetime=4)
    replace_file(token_file, token_of(control_plane, "alice"))
    holder = env_of(control_plane, "bob", ns, "h")
    locks = Locks(admin_api, ns)
    alices = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
    assert run("kubelock", "acquire", uri, "--ttl", "300", env=holder).code == 0
    process = start("kubelock", "acquire", uri, "--wait", "--ttl", "10", "-o", "json",
                    env=environment(config, ns, INSTANCE))
    try:
        wait_until(lambda: not absent(locks, alices) and phase_of(locks.get(alices)) == "Pending",
                   what="alice queued", timeout=DEADLINE)
        token_file.unlink()
        time.sleep(5)  # past the credential's lifetime: the next request needs the plugin, which fails
        process.send_signal(signal.SIGTERM)
        done = finish(process, timeout=DEADLINE)
        left = None if absent(locks, alices) else phase_of(locks.get(alices))
        print(f"acquire --wait, SIGTERM after the login lapsed: exit {done.code}; stdout {done.stdout.strip()!r}; "
              f"stderr {done.stderr.strip()[-600:]!r}; the claim: {left}")
        assert done.code == ExitCode.TERMINATED, done
        assert left == "Pending"  # nothing could withdraw it
        message = done.json["message"]
        assert "nothing new is held" not in message, message
        assert "not withdrawn" in message and alices in message, message
        # What is left is bounded: granted to nobody when bob leaves, it ends with its 10 s lease.
        assert run("kubelock", "release", uri, env=holder).code == 0
        locks.wait_phase(alices, "Held", timeout=DEADLINE)
        ended = locks.wait_for(alices, lambda b: phase_of(b) != "Held", timeout=DEADLINE, what="ended")
        assert phase_of(ended) == "Expired", ended
    finally:
        if process.poll() is None:
            process.kill()
        run("kubelock", "release", uri, env=holder)


@pytest.mark.parametrize(
    ("who", "flags", "code", "words"),
    [
        ("lockadmin", ["--wait", "--priority", "1000"], ExitCode.OK, ""),
        ("lockadmin", ["--wait", "--priority", "1001"], ExitCode.INVALID_INPUT, "1000"),
        ("alice", ["--wait", "--priority", "-1000"], ExitCode.OK, ""),
        ("alice", ["--wait", "--priority", "-1001"], ExitCode.INVALID_INPUT, "1000"),
        ("alice", ["--wait", "--priority", "1"], ExitCode.FORBIDDEN, "prioritize"),
        ("alice", ["--wait", "--priority", "1e3"], ExitCode.INVALID_INPUT, "priority"),
        ("alice", ["--ttl", "86400"], ExitCode.OK, ""),
        ("alice", ["--ttl", "86401"], ExitCode.INVALID_INPUT, "86400"),
        ("alice", ["--ttl", "0"], ExitCode.INVALID_INPUT, "ttl"),
        ("alice", ["--wait", "--timeout", "86400"], ExitCode.OK, ""),
        ("alice", ["--wait", "--timeout", "86401"], ExitCode.INVALID_INPUT, "86400"),
    ],
)
def test_priorities_and_ttls_at_and_past_their_bounds_through_the_command(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, who: str, flags: list[str], code: int, words: str
) -> None:
    """Each value at a bound is served; each one past it is refused with a message naming the bound,
    before anything is sent (exit 4) or by admission (exit 3) for what only the API server can tell
    (the right to `prioritize`); no claim is left by a refusal."""
    uri = f"deploy://fourteenth-bounds-{who}-{'-'.join(flags).replace('--', '')}"
    env = environment(control_plane.user_kubeconfig(who), ns, INSTANCE)
    locks = Locks(admin_api, ns)
    done = run("kubelock", "acquire", uri, *flags, "-o", "json", env=env, timeout=DEADLINE)
    print(f"{who} acquire {' '.join(flags)}: exit {done.code}; {done.stdout.strip()} {done.stderr.strip()!r}")
    assert done.code == code, done
    if code == ExitCode.OK:
        assert done.json["ok"] is True
        assert run("kubelock", "release", uri, env=env).code == 0
    else:
        assert words in done.stdout + done.stderr, done
        assert "Traceback" not in done.stderr
        assert not [c for c in locks.claims() if c["spec"].get("resource") == normalise(uri)]


def test_priorities_and_ttls_past_their_bounds_through_the_sdk_and_kubectl(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """The SDK refuses what the command refuses, as `InvalidInput` before sending, and what only
    looks like a number or a flag: before, `priority=True` was sent as priority 1 (alice's claim was
    refused by admission for `prioritize`, a confusing answer to a slip; a lock admin's would be
    admitted ahead of the queue), `priority="5"` and `1.0` as numbers, `wait="no"` as a try-lock the
    SDK then followed as a wait. `kubectl apply` of a claim past a bound is refused by the API server
    naming the field, and leaves nothing."""
    script = """
import json
from kubelock.sdk import LockClient, InvalidInput
out = {}
with LockClient() as client:
    for name, kwargs in (("priority1001", {"priority": 1001}), ("priority-1001", {"priority": -1001}),
                         ("priorityTrue", {"priority": True}), ("priority1.5", {"priority": 1.5}),
                         ("priority1.0", {"priority": 1.0}), ("priorityText", {"priority": "5"}),
                         ("waitNo", {"wait": "no"}), ("ttl86401", {"ttl": 86401}), ("ttl0", {"ttl": 0}),
                         ("timeout86401", {"timeout": 86401})):
        try:
            client.acquire("deploy://fourteenth-sdk-" + name.lower().replace(".", ""), **{"wait": True, **kwargs})
            out[name] = "acquired"
        except InvalidInput as error:
            out[name] = "InvalidInput: " + str(error)
        except Exception as error:
            out[name] = type(error).__name__ + ": " + str(error)
print(json.dumps(out))
"""
    env = env_of(control_plane, "alice", ns)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=DEADLINE,
                          check=False)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for name, answer in answers.items():
        print(f"SDK {name}: {answer}")
    assert all(a.startswith("InvalidInput: ") for a in answers.values()), answers
    locks = Locks(admin_api, ns)
    assert not [c for c in locks.claims() if "fourteenth-sdk" in (c["spec"].get("resource") or "")]
    for field, value, words in (("priority", 1001, "priority must be between -1000 and 1000"),
                                ("priority", -1001, "priority must be between -1000 and 1000"),
                                ("ttlSeconds", 86401, "86400"), ("waitTimeoutSeconds", 86401, "86400")):
        manifest = tmp_path / f"{field}.yaml"
        manifest.write_text(yaml.safe_dump({
            "apiVersion": "kubelock.dev/v1alpha1", "kind": "LockClaim",
            "metadata": {"name": f"edge-{field.lower()}-{abs(value)}", "namespace": ns},
            "spec": {"resource": f"deploy://fourteenth-kubectl-{field.lower()}", "holder": "user:lockadmin/k",
                     "wait": True, field: value},
        }))
        applied = kubectl(control_plane, "apply", "-f", str(manifest), check=False)
        print(f"kubectl apply {field}={value}: exit {applied.returncode}; {applied.stderr.strip()[-300:]!r}")
        assert applied.returncode != 0 and words in applied.stderr, applied
    assert not [c for c in locks.claims() if "fourteenth-kubectl" in (c["spec"].get("resource") or "")]
