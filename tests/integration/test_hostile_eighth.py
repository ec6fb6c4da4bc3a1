"""A hostile agent, an eighth pass (docs/security.md, "A hostile agent, an eighth pass (2026-11-28)").
The static users alice and bob bound to `kubelock-agent`, against the real API server and an operator
of this tree: a claim adopted from an ended maker takes its adopter's process mark, so a sibling of the
instance can neither renew nor release it, and of processes adopting at once exactly one wins; the
mark is the holder's to write and nobody else's; a claim made with `dryRun=All`; a holder at the
CRD's length limit and one byte over it; spellings of one resource; a holder's ServiceAccount deleted
while it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from kubelock.api.constants import CLAIM_PLURAL, GROUP, PROCESS_ANNOTATION, VERSION
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.sdk import Expired, HeldByAnotherProcess, LockClient
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.model import ClaimInfo
from kubelock.sdk.targets import Target
from kubelock.testbed import ControlPlane
from tests.integration.conftest import SaToken, UserApi
from tests.support.access import agents_namespace, bind_agents, service_account_user
from tests.support.claims import Locks, phase_of, wait_until
from tests.support.commands import environment, finish, python_json, run, start
from tests.support.operator import REPO, OperatorProcess

PREFIX = "klh8-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
INSTANCE = "shared"
HOLDER = f"user:alice/{INSTANCE}"
Body = dict[str, Any]


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with agents_namespace(admin_api, PREFIX) as name:
        yield name


@pytest.fixture(scope="module")
def alice_env(control_plane: ControlPlane, ns: str) -> dict[str, str]:
    return environment(control_plane.user_kubeconfig("alice"), ns, INSTANCE)


# Takes the lock (a fresh claim, or one of the instance it adopts), says so on stdout (or why not),
# and ends when stdin closes, without releasing (os._exit): as a process that crashed would.
HOLDING = """
import json, os, sys
from kubelock.sdk import LockClient, LockError
client = LockClient(decision_timeout={deadline})
try:
    result = client.acquire({uri!r}, ttl=600)
    print(json.dumps({{"ok": result.ok, "token": result.fencing_token, "pid": os.getpid()}}), flush=True)
except LockError as error:
    print(json.dumps({{"error": type(error).__name__, "reason": error.reason, "message": error.message}}),
          flush=True)
sys.stdin.read()
os._exit(0)
"""

# Renews, or releases, the lock as the same instance, once: what a sibling process would do.
SIBLING = """
import json
from kubelock.sdk import LockClient, LockError
with LockClient(decision_timeout={deadline}) as client:
    try:
        if {release!r}:
            print(json.dumps({{"released": client.release({uri!r}).claim_name}}))
        else:
            result = client.heartbeat({uri!r})
            print(json.dumps({{"renewed": result.claim_name, "token": result.fencing_token}}))
    except LockError as error:
        print(json.dumps({{"error": type(error).__name__, "reason": error.reason, "message": error.message}}))
"""


def start_holding(uri: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDING.format(deadline=DEADLINE, uri=uri)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)


def answer(holding: subprocess.Popen[str]) -> dict[str, Any]:
    assert holding.stdout is not None
    line = holding.stdout.readline()
    assert line, holding.stderr.read() if holding.stderr else "no answer"
    said: dict[str, Any] = json.loads(line)
    return said


def end(holding: subprocess.Popen[str]) -> None:
    """Close its stdin: it ends without releasing."""
    holding.communicate(timeout=DEADLINE)
    assert holding.returncode == 0


@contextlib.contextmanager
def holding(uri: str, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    process = start_holding(uri, env)
    try:
        said = answer(process)
        assert said.get("ok") is True, said
        yield said
    finally:
        end(process)


def made_and_left(uri: str, env: dict[str, str]) -> dict[str, Any]:
    """A process of the instance takes the lock and ends without releasing it (a crash)."""
    with holding(uri, env) as said:
        return said


def mark_pid(body: Body) -> str:
    return str(body["metadata"]["annotations"][PROCESS_ANNOTATION]).split("/")[2]


def sibling(uri: str, env: dict[str, str], *, release: bool) -> dict[str, Any]:
    return python_json(SIBLING.format(deadline=DEADLINE, uri=uri, release=release), env, timeout=DEADLINE)


def test_an_adopted_claim_takes_its_adopters_mark_and_a_sibling_may_not_renew_or_release_it(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str
) -> None:
    """The maker of a claim ends without releasing it; a second process of the instance adopts it.
    The claim used to keep the ended maker's mark, so a third process of the instance renewed or
    released the lock the adopter held and used. Now the adoption rewrites the mark (one write, the
    fencing token and the lease untouched), and the sibling is refused as beside any live maker."""
    uri = "deploy://eighth-adopted"
    admin = Locks(admin_api, ns)
    claim = claim_name(HOLDER, normalise(uri))
    made = made_and_left(uri, alice_env)
    before = admin.get(claim)
    assert mark_pid(before) == str(made["pid"])

    with holding(uri, alice_env) as adopter:
        assert adopter["token"] == made["token"]
        adopting = admin.get(claim)  # the adoption's write is done before the acquire returns
        renewed = sibling(uri, alice_env, release=False)
        print(f"a sibling's heartbeat: {renewed}")
        assert renewed.get("error") == renewed.get("reason") == "HeldByAnotherProcess", renewed
        assert f"not renewed: another live process (pid {adopter['pid']})" in renewed["message"], renewed
        released = sibling(uri, alice_env, release=True)
        assert released.get("error") == released.get("reason") == "HeldByAnotherProcess", released
        assert f"not released: another live process (pid {adopter['pid']})" in released["message"], released
        command = run("kubelock", "release", uri, env=alice_env)
        assert command.code == ExitCode.HELD, command
        heartbeat = run("rlock-heartbeat", uri, env=alice_env)
        assert heartbeat.code == ExitCode.HELD, heartbeat

        after = admin.get(claim)  # refusing touched nothing
        print(f"adopted: mark {after['metadata']['annotations'][PROCESS_ANNOTATION]}, "
              f"resourceVersion {before['metadata']['resourceVersion']} -> {after['metadata']['resourceVersion']}")
        assert mark_pid(after) == str(adopter["pid"])
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        for field in ("fencingToken", "expiresAt", "renewedAt", "phase"):
            assert after["status"].get(field) == before["status"].get(field), field
        assert phase_of(after) == "Held"
        assert after["metadata"]["resourceVersion"] == adopting["metadata"]["resourceVersion"]

    # The adopter is gone too: the instance releases its claim as before.
    assert run("kubelock", "release", uri, env=alice_env).code == 0
    wait_until(lambda: not any(c["metadata"]["name"] == claim for c in admin.claims()),
               what="the claim is released", timeout=DEADLINE)


def test_of_processes_adopting_at_once_exactly_one_wins(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str
) -> None:
    """Three processes of the instance adopt an ended maker's claim at the same moment. Each used to
    adopt it and be told it held the lock with its token. Now exactly one does; the others are
    refused `HeldByAnotherProcess`, naming the winner's pid."""
    uri = "deploy://eighth-race"
    admin = Locks(admin_api, ns)
    claim = claim_name(HOLDER, normalise(uri))
    made = made_and_left(uri, alice_env)
    racers = [start_holding(uri, alice_env) for _ in range(3)]
    try:
        said = [answer(racer) for racer in racers]
        print(f"three adopters at once: {said}")
        winners = [s for s in said if s.get("ok")]
        assert len(winners) == 1, said
        assert winners[0]["token"] == made["token"]
        losers = [s for s in said if not s.get("ok")]
        assert all(s.get("error") == "HeldByAnotherProcess" for s in losers), said
        assert all(f"pid {winners[0]['pid']}" in s["message"] for s in losers), said
        assert mark_pid(admin.get(claim)) == str(winners[0]["pid"])
    finally:
        for racer in racers:
            end(racer)
    assert run("kubelock", "release", uri, env=alice_env).code == 0


def test_an_adopter_that_loses_the_write_is_told_it_was_not_adopted(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str
) -> None:
    """The race's losing side made certain: this test's process reads the ended maker's claim, another
    process adopts it, and then this process's adoption write (preconditioned on the version it read)
    conflicts; it reads the claim again, finds the winner's mark, and is refused "not adopted"."""
    uri = "deploy://eighth-lost-write"
    admin = Locks(admin_api, ns)
    claim = claim_name(HOLDER, normalise(uri))
    made_and_left(uri, alice_env)
    stale = ClaimInfo.from_body(admin.get(claim))

    async def adopt_late() -> None:
        async with AsyncLockClient(kubeconfig=alice_env["KUBECONFIG"], namespace=ns, instance=INSTANCE) as client:
            await client._adopt(await client.identity(), Target.of(uri), stale)

    with holding(uri, alice_env) as winner:
        with pytest.raises(HeldByAnotherProcess) as refused:
            asyncio.run(adopt_late())
        print(f"the late adopter: {refused.value.message}")
        assert refused.value.message.startswith(f"not adopted: another live process (pid {winner['pid']})")
        assert mark_pid(admin.get(claim)) == str(winner["pid"])
    assert run("kubelock", "release", uri, env=alice_env).code == 0


def test_only_the_claims_holder_writes_its_process_mark(
    alice_env: dict[str, str], admin_api: ApiClient, ns: str, user_api: UserApi
) -> None:
    """`kubelock-lockclaim-holder` lets the holder's identity annotate its claim (adoption's write) and
    refuses everybody else's write of the mark, as it does their renewals."""
    uri = "deploy://eighth-mark"
    taken = run("rlock", uri, env=alice_env)
    assert taken.code == 0, taken
    claim = claim_name(HOLDER, normalise(uri))
    patch = {"metadata": {"annotations": {PROCESS_ANNOTATION: "b/1/1/1"}}}
    with pytest.raises(ApiException) as refused:
        CustomObjectsApi(user_api("bob")).patch_namespaced_custom_object(GROUP, VERSION, ns, CLAIM_PLURAL, claim, patch)
    assert refused.value.status == 403, refused.value.body
    assert "kubelock-lockclaim-holder" in str(refused.value.body), refused.value.body
    CustomObjectsApi(user_api("alice")).patch_namespaced_custom_object(GROUP, VERSION, ns, CLAIM_PLURAL, claim, patch)
    assert Locks(admin_api, ns).get(claim)["metadata"]["annotations"][PROCESS_ANNOTATION] == "b/1/1/1"
    assert run("runlock", uri, env=alice_env).code == 0


def test_a_dry_run_claim_takes_nothing(alice_env: dict[str, str], admin_api: ApiClient, ns: str,
                                       user_api: UserApi) -> None:
    """A claim created with `dryRun=All` passes admission and is stored nowhere: no claim, no lock,
    nobody held out (the operator never sees it)."""
    uri = "deploy://eighth-dry"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": "dry"},
            "spec": {"resource": uri, "holder": HOLDER}}
    answered: Body = CustomObjectsApi(user_api("alice")).create_namespaced_custom_object(
        GROUP, VERSION, ns, CLAIM_PLURAL, body, dry_run="All")
    assert answered["metadata"]["name"] == "dry"
    env = environment(alice_env["KUBECONFIG"], ns, "after-dry")
    taken = run("rlock", uri, env=env)
    assert taken.code == 0, taken  # nothing held it
    assert "dry" not in {c["metadata"]["name"] for c in Locks(admin_api, ns).claims()}
    assert run("runlock", uri, env=env).code == 0


def test_an_identity_too_long_for_a_holder_is_told_what_to_shorten(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, sa_token: SaToken, tmp_path: Path
) -> None:
    """A holder is at most 253 bytes (the CRD's limit) and is `<identity>/<instance>`; a ServiceAccount's
    name may itself be 253 characters. A holder of exactly 253 bytes claims, holds and releases; one
    byte more used to be refused with "holder must be 1 to 253 bytes long in UTF-8, not 254", which
    names neither the identity nor what to shorten. Now the message says both."""
    instance = "w"
    room = 253 - len(f"sa:{ns}/") - len(f"/{instance}")
    for length, fits in ((room, True), (room + 1, False)):
        name = "a" * (length - 1) + str(length % 10)
        user = service_account_user(ns, name)
        bind_agents(admin_api, ns, (user,))
        config = control_plane.token_kubeconfig(sa_token(ns, name), tmp_path / f"{length}.kubeconfig", ns)
        env = environment(config, ns, instance)
        taken = run("rlock", "deploy://eighth-long", env=env)
        print(f"a ServiceAccount name of {length} characters (holder of {length + 253 - room} bytes): "
              f"exit {taken.code} {taken.stdout.strip()}")
        if fits:
            assert taken.code == 0, taken
            assert run("runlock", "deploy://eighth-long", env=env).code == 0
        else:
            assert taken.code == ExitCode.INVALID_INPUT, taken
            message = taken.json["message"]
            assert f"sa:{ns}/{name}" in message, message
            assert "254 bytes" in message and "at most 253" in message, message
            assert "shorter ServiceAccount name" in message, message


# One resource as RFC 3986 would compare it, spelled seven ways: kubelock compares the scheme's case
# and one trailing slash away, refuses a spelling RFC 3986 would rewrite (host case, dot segments;
# and one not in NFC) with the spelling to use; every other spelling is its own resource
# (docs/api.md, "Which spellings are one resource").
SPELLINGS = {
    "GITHUB://acme.example/app/x/": "one",  # scheme case and one trailing slash: normalised
    "github://ACME.example/app/x": "refused",  # host case
    "github://acme.example:443/app/x": "other",  # a port kubelock knows no default of (github is no http)
    "github://acme.example/app/./x": "refused",  # a dot segment
    "github://acme.example/app/y/../x": "refused",  # a dot-dot segment
    "github://acme.example//app/x": "other",  # an empty segment: another URI by RFC 3986
    "github://acme.example/app%2Fx": "other",  # '/' percent-encoded: another URI by RFC 3986
}


def test_spellings_of_one_resource_are_one_lock_or_refused_as_documented(
    control_plane: ControlPlane, alice_env: dict[str, str], ns: str
) -> None:
    """alice holds `github://acme.example/app/x`; bob try-locks each other spelling of it. Those
    kubelock normalises are refused naming alice; those RFC 3986 would rewrite are refused before
    sending, naming the spelling to use; every other spelling is held by bob beside her, as
    docs/api.md says (agents agree on one spelling)."""
    bob_env = environment(control_plane.user_kubeconfig("bob"), ns, "b")
    assert run("rlock", "github://acme.example/app/x", env=alice_env).code == 0
    seen: dict[str, str] = {}
    for spelling in SPELLINGS:
        taken = run("rlock", spelling, env=bob_env)
        seen[spelling] = ("one" if taken.code == ExitCode.HELD else "other" if taken.code == 0
                          else "refused" if taken.code == ExitCode.INVALID_INPUT else str(taken))
        if taken.code == 0:
            assert run("runlock", spelling, env=bob_env).code == 0
        if taken.code == ExitCode.INVALID_INPUT:
            assert "so write 'github://acme.example/app/x'" in taken.stdout + taken.stderr, taken
    print(f"spellings beside github://acme.example/app/x held by alice: {seen}")
    assert seen == SPELLINGS
    assert run("runlock", "github://acme.example/app/x", env=alice_env).code == 0


def test_a_holder_whose_service_account_is_deleted_loses_the_lock_at_its_lease(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, sa_token: SaToken, tmp_path: Path
) -> None:
    """An agent's ServiceAccount deleted while `with client.lock(...)` holds: its token is refused from
    then on (401), so its renewals fail and the lease is declared lost at the renew deadline, naming
    the credentials; the lock then goes to the next holder, waiting meanwhile, within its lease."""
    uri = "deploy://eighth-sa-gone"
    name = "eighth-gone"
    user = service_account_user(ns, name)
    bind_agents(admin_api, ns, (user,))
    config = control_plane.token_kubeconfig(sa_token(ns, name), tmp_path / "gone.kubeconfig", ns)
    agent = LockClient(kubeconfig=str(config), namespace=ns, instance="g", retries=1, request_timeout=5)
    bob = start("kubelock", "acquire", uri, "--wait", "--timeout", "90", "--ttl", "30",
                env=environment(control_plane.user_kubeconfig("bob"), ns, "b"))
    try:
        with agent.lock(uri, ttl=10, renew_deadline=7) as lease:
            CoreV1Api(admin_api).delete_namespaced_service_account(name, ns)
            lost = lease.lost.wait(DEADLINE)
            print(f"ServiceAccount deleted while holding: lease lost {lost}: {lease.error}")
            assert lost and isinstance(lease.error, Expired), lease.error
            assert "credentials" in str(lease.error), lease.error
    finally:
        agent.close()
    waited = finish(bob, timeout=DEADLINE)
    print(f"bob, waiting meanwhile: exit {waited.code} {waited.stdout.strip()[:200]}")
    assert waited.code == 0, waited
    assert run("kubelock", "release", uri, env=environment(control_plane.user_kubeconfig("bob"), ns, "b")).code == 0
