"""The Python SDK against the real control plane and operator: conflicts, waiting, deadlocks,
timeouts, leases that renew themselves and report their loss, release on every exit path, pod
identity, failing closed when the API server cannot be reached, and claims of several resources
(`lock_all`).

Agents are real identities: the static users alice and bob with the kubelock-agent role (so the
admission policies check every claim against the user name), and a ServiceAccount token bound to a
pod on a kwok node.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    ApiException,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
    V1Container,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
)

from kubelock.api import fencing
from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name, normalise
from kubelock.kube.client import KubeClient
from kubelock.sdk import (
    AcquireResult,
    AsyncLockClient,
    Deadlock,
    Expired,
    Forbidden,
    InvalidInput,
    LockClient,
    LockError,
    NotFound,
    Rejected,
    Revoked,
    TimedOut,
    Unreachable,
    tools,
)
from kubelock.sdk.model import LockInfo
from kubelock.testbed import ControlPlane, wait_until
from tests.support.access import allowed, bearer_client, bind_agents
from tests.support.claims import Locks, phase_of
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, dead_kubeconfig, kubeconfig_for

Cluster = Any  # ControlPlane, or conftest.ExistingCluster
SaToken = Callable[..., str]

# Generous for 2 shared cores; every wait returns as soon as the state is reached.
DEADLINE = 60.0
# A lease renewed in the background while a test watches it: its renew deadline (two thirds of it)
# leaves a loaded machine seconds for each renewal, which 2 or 3 s leases did not.
SHORT_TTL = 6
ALICE, BOB = "user:alice/w1", "user:bob/w1"  # the holders of the team's clients
POD_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok only pretends to run it


# ---- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def operator(control_plane: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as op:
        yield op


def unbind(admin_api: ApiClient, namespace: str, user: str) -> None:
    """Delete the user's role bindings in the namespace, and wait until the authorizer refuses it."""
    rbac = RbacAuthorizationV1Api(admin_api)
    for binding in rbac.list_namespaced_role_binding(namespace).items:
        if any(s.kind == "User" and s.name == user for s in binding.subjects or []):
            rbac.delete_namespaced_role_binding(binding.metadata.name, namespace)
    wait_until(lambda: not allowed(admin_api, user, namespace, "watch", "lockclaims"),
               what=f"{user} to be refused lockclaims", timeout=DEADLINE)


@dataclass
class Team:
    """Agents alice and bob (kubelock-agent in the namespace), and the admin's view of the claims."""

    control_plane: ControlPlane
    namespace: str
    admin: Locks
    clients: list[LockClient] = field(default_factory=list)

    def client(self, user: str, **options: Any) -> LockClient:
        options.setdefault("instance", "w1")
        client = LockClient(kubeconfig=str(self.control_plane.user_kubeconfig(user)), namespace=self.namespace,
                            decision_timeout=DEADLINE, **options)
        self.clients.append(client)
        return client

    def async_client(self, user: str, instance: str = "w1") -> AsyncLockClient:
        return AsyncLockClient(kubeconfig=str(self.control_plane.user_kubeconfig(user)), namespace=self.namespace,
                               instance=instance, decision_timeout=DEADLINE)

    def lock_of(self, uri: str) -> dict[str, Any] | None:
        try:
            return self.admin.lock(lock_name(normalise(uri)))
        except ApiException as error:
            if error.status == 404:
                return None
            raise


@pytest.fixture
def team(control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess) -> Iterator[Team]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users (alice, bob)")
    bind_agents(admin_api, namespace)
    team = Team(control_plane, namespace, Locks(admin_api, namespace))
    yield team
    for client in team.clients:
        client.close()


def claim_phase(team: Team, name: str) -> str | None:
    try:
        return phase_of(team.admin.get(name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


# ---- try-lock, waiting, deadlock, timeout -------------------------------------------------------


def test_conflict_names_the_holder_and_acquire_is_idempotent(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    uri = "github://acme/app/issues/42"

    mine = alice.try_acquire(uri, ttl=600)
    assert mine.ok
    assert mine.holder == ALICE
    assert mine.fencing_token is not None
    assert mine.expires_at is not None
    assert mine.lock_name == lock_name(uri)

    theirs = bob.try_acquire(uri + "/")  # the same resource once normalised
    assert not theirs.ok
    assert theirs.holder == ALICE
    assert theirs.held_since == mine.acquired_at
    with pytest.raises(Rejected) as rejected:
        bob.acquire(uri, wait=False)
    assert rejected.value.holder == ALICE
    assert rejected.value.reason == Reason.HELD_BY_ANOTHER.value

    again = alice.try_acquire(uri)  # asking twice finds the same claim
    assert again.ok
    assert (again.claim_name, again.fencing_token) == (mine.claim_name, mine.fencing_token)
    assert [c.name for c in alice.list()] == [mine.claim_name]
    assert alice.get(uri).held

    alice.release(uri)
    assert bob.try_acquire(uri).ok
    assert (bob.get(uri).fencing_token or 0) > (mine.fencing_token or 0)


def test_waiter_is_granted_when_the_holder_releases(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    uri = "deploy://api-prod"
    first = alice.acquire(uri)
    result: list[AcquireResult] = []
    waiter = threading.Thread(target=lambda: result.append(bob.acquire(uri, wait=True, timeout=DEADLINE)))
    waiter.start()
    team.admin.wait_phase(asyncio.run(_claim_name(team, "bob", uri)), "Pending", DEADLINE)

    alice.release(uri)
    waiter.join(DEADLINE)
    assert not waiter.is_alive()
    [granted] = result
    assert granted.ok
    assert granted.holder == BOB
    assert (granted.fencing_token or 0) > (first.fencing_token or 0)


async def _claim_name(team: Team, user: str, uri: str) -> str:
    async with team.async_client(user) as client:
        return await client.claim_name_for(uri)


async def test_deadlock_between_two_holders_is_an_error_with_the_cycle(team: Team) -> None:
    r1, r2 = "deploy://api-prod", "github://acme/app/pr/10"
    async with team.async_client("alice") as alice, team.async_client("bob") as bob:
        await alice.acquire(r1, wait=False)
        await bob.acquire(r2, wait=False)
        alice_waits = asyncio.create_task(alice.acquire(r2, wait=True, timeout=DEADLINE))
        name = await alice.claim_name_for(r2)
        await asyncio.to_thread(team.admin.wait_phase, name, "Pending", DEADLINE)

        with pytest.raises(Deadlock) as caught:
            await bob.acquire(r1, wait=True, timeout=DEADLINE)

        error = caught.value
        assert error.cycle == (BOB, r1, ALICE, r2, BOB)
        assert error.reason == Reason.DEADLOCK.value
        assert f"{BOB} → deploy://api-prod → {ALICE} → github://acme/app/pr/10 → {BOB}" in error.message
        # The other waiter keeps its place and gets the lock once bob backs off.
        assert not alice_waits.done()
        await bob.release(r2)
        granted = await asyncio.wait_for(alice_waits, DEADLINE)
        assert granted.ok
        assert granted.holder == ALICE


def test_wait_timeout_is_an_error_and_leaves_the_queue(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    uri = "github://acme/app/issues/7"
    alice.acquire(uri)

    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        bob.acquire(uri, wait=True, timeout=2)
    elapsed = time.monotonic() - started

    assert caught.value.holder == ALICE
    assert caught.value.reason == Reason.WAIT_TIMED_OUT.value
    assert 1 <= elapsed < DEADLINE
    if _exists(bob, uri):  # the operator's verdict stays as a record; a client-side timeout deletes it
        assert bob.get(uri).phase == "TimedOut"
    alice.release(uri)
    # Nobody waits any more: the lock is free once alice released it.
    wait_until(lambda: team.lock_of(uri) is None, what="the lock to be released", timeout=DEADLINE)
    assert bob.try_acquire(uri).ok


async def test_a_wait_given_up_on_a_refusal_still_leaves_the_queue(
    team: Team, admin_api: ApiClient, tmp_path: Path
) -> None:
    """A kube-apiserver that has just restarted refuses requests (403) until its RBAC authorizer has
    caught up. Here RBAC itself plays that window: alice's watch reconnects while she may not, so
    her acquire gives up, and the delete of her claim is refused too. Once she may again, the
    claim must be gone, not left queued ahead of everyone else for nobody."""
    partition = Partition(team.control_plane.server)
    config = kubeconfig_for(team.control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "via-proxy")
    refused = asyncio.Event()

    def seen(verb: str, status: int, _seconds: float) -> None:
        if (verb, status) == ("delete", 403):
            refused.set()

    uri = "deploy://api-prod"
    alice = AsyncLockClient(kubeconfig=str(config), namespace=team.namespace, instance="w1", decision_timeout=DEADLINE)
    alice.kube = KubeClient(alice.credentials, retries=4, on_request=seen)
    try:
        async with team.async_client("bob") as bob:
            await bob.acquire(uri, wait=False)
            waiting = asyncio.create_task(alice.acquire(uri, wait=True))
            name = await alice.claim_name_for(uri)
            await asyncio.to_thread(team.admin.wait_phase, name, "Pending", DEADLINE)

            await asyncio.to_thread(unbind, admin_api, team.namespace, "alice")
            partition.drop()  # the watch reconnects, and is refused
            await asyncio.wait_for(refused.wait(), DEADLINE)
            await asyncio.to_thread(bind_agents, admin_api, team.namespace, ("alice",))
            with pytest.raises(Forbidden):
                await asyncio.wait_for(waiting, DEADLINE)

            assert claim_phase(team, name) is None  # withdrawn by the acquire that gave up
            await bob.release(uri)
            # Nobody waits any more: the lock is freed, not granted to the abandoned claim.
            await asyncio.to_thread(wait_until, lambda: team.lock_of(uri) is None, what="the lock to be freed",
                                    timeout=DEADLINE)
    finally:
        partition.cut()
        await alice.close()


async def _counted(team: Team, user: str) -> tuple[AsyncLockClient, list[tuple[str, int]]]:
    """An async client of `user` that records each request it makes (verb, HTTP status), from after
    it learnt its identity."""
    client = team.async_client(user)
    requests: list[tuple[str, int]] = []
    client.kube = KubeClient(client.credentials, retries=4, on_request=lambda v, s, _t: requests.append((v, s)))
    await client.identity()
    requests.clear()
    return client, requests


async def test_an_uncontended_acquire_and_release_is_a_create_a_watch_and_a_delete(team: Team) -> None:
    """Every agent's requests queue in the API server's priority level for ServiceAccounts: the SDK
    makes no request the protocol does not need. The identity is asked once per client; the release
    deletes exactly the Held claim the acquire saw, with no read before it."""
    uri = "deploy://requests"
    alice, requests = await _counted(team, "alice")
    try:
        held = await alice.acquire(uri)
        assert requests == [("create", 201), ("watch", 200)]
        released = await alice.release(uri)
        assert released.previous_phase is Phase.HELD
        assert released.claim_name == held.claim_name
        assert requests == [("create", 201), ("watch", 200), ("delete", 200)]
        assert not await asyncio.to_thread(_claim_exists, team, held.claim_name)
        with pytest.raises(NotFound):  # nothing left to release: read, found nothing
            await alice.release(uri)
        assert requests[3:] == [("get", 404)]
    finally:
        await alice.close()


async def test_a_release_after_the_claim_changed_reads_it_and_reports_the_loss(team: Team) -> None:
    """The claim changed after the acquire saw it (here its lease ran out and the operator said so):
    the exact delete is refused, and the release reads the claim and reports the loss, as it always
    did, removing the record."""
    uri = "deploy://requests-expired"
    alice, requests = await _counted(team, "alice")
    try:
        held = await alice.acquire(uri, ttl=1)
        await asyncio.to_thread(team.admin.wait_phase, held.claim_name, "Expired", DEADLINE)
        del requests[:]
        with pytest.raises(Expired):
            await alice.release(uri)
        assert requests == [("delete", 409), ("get", 200), ("delete", 200)]
        assert not await asyncio.to_thread(_claim_exists, team, held.claim_name)
    finally:
        await alice.close()


def test_the_apf_example_gives_service_account_agents_a_priority_level_of_their_own(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, sa_token: SaToken, repo_root: Path
) -> None:
    """examples/apf-kubelock-agents.yaml, applied as a cluster admin would: an agent's requests to
    kubelock's API are classified by its FlowSchema (the API server names the FlowSchema it chose in
    every answer), other requests of the same agent stay in the built-in service-accounts one."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("changes the cluster's API Priority and Fairness configuration")
    manifest = repo_root / "examples" / "apf-kubelock-agents.yaml"
    control_plane.kubectl("apply", "--server-side", "-f", str(manifest))
    try:
        flows = CustomObjectsApi(admin_api)
        uid = {name: flows.get_cluster_custom_object("flowcontrol.apiserver.k8s.io", "v1", "flowschemas",
                                                     name)["metadata"]["uid"]
               for name in ("kubelock-agents", "service-accounts")}
        agent = bearer_client(control_plane.kubeconfig, sa_token(namespace, "apf-agent"))

        def schema(call: Callable[[], Any]) -> str | None:
            try:
                headers = call()[2]
            except ApiException as error:  # not allowed to: classified all the same, before authorization
                headers = error.headers
            # Header names are case-insensitive (the API server sends X-Kubernetes-Pf-Flowschema-Uid).
            return {k.lower(): v for k, v in (headers or {}).items()}.get("x-kubernetes-pf-flowschema-uid")

        def claims() -> Any:
            return CustomObjectsApi(agent).list_namespaced_custom_object_with_http_info(
                "kubelock.dev", "v1alpha1", namespace, "lockclaims")

        # The API server's flow-control configuration follows the objects through a watch.
        wait_until(lambda: schema(claims) == uid["kubelock-agents"], what="the agents' FlowSchema to apply",
                   timeout=DEADLINE)
        pods = lambda: CoreV1Api(agent).list_namespaced_pod_with_http_info(namespace)  # noqa: E731
        assert schema(pods) == uid["service-accounts"]
        agent.close()  # type: ignore[no-untyped-call]
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "-f", str(manifest))


def _claim_exists(team: Team, name: str) -> bool:
    try:
        team.admin.get(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _exists(client: LockClient, uri: str) -> bool:
    try:
        client.get(uri)
    except NotFound:
        return False
    return True


def test_input_is_validated_before_any_request(team: Team) -> None:
    alice = team.client("alice")
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: alice.try_acquire("no-scheme"), "has no '://'"),
        (lambda: alice.try_acquire("github://a b"), "whitespace"),
        (lambda: alice.try_acquire("github://x", ttl=0), "between 1 and 86400"),
        (lambda: alice.try_acquire("github://x", ttl=86401), "between 1 and 86400"),
        (lambda: alice.acquire("github://x", timeout=-1), "more than 0"),
        (lambda: alice.acquire("github://x", wait=False, timeout=3), "only applies when waiting"),
    ]
    for call, words in calls:
        with pytest.raises(LockError) as caught:
            call()
        assert caught.value.reason == "InvalidInput"
        assert words in caught.value.message
    assert team.admin.claims() == []


# ---- heartbeats and leases ----------------------------------------------------------------------


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "try"])
def test_a_wait_meeting_its_own_lapsed_grant_waits_afresh(team: Team, operator: OperatorProcess, wait: bool) -> None:
    """An earlier acquire's claim still `Held` after its lease ran out (the operator stopped before
    it could say `Expired`) is no lock. A wait of the same instance must not be turned away with
    that lease's end: the claim is replaced and the wait granted with a larger token. A try-lock is
    told of the lost lease (`LeaseExpired`, the record removed), and its next try asks afresh."""
    alice = team.client("alice")
    uri = f"deploy://lapsed-{'wait' if wait else 'try'}"
    # Never renewed. 6 s, not 2: the operator is stopped only once this acquire has returned, and a
    # loaded machine can take longer than a 2 s lease to tell it (the lease then expired first).
    first = alice.acquire(uri, ttl=6)
    operator.pause()
    answer: list[AcquireResult | BaseException] = []
    try:
        assert first.expires_at is not None
        # Past the lease's end; the stopped operator cannot expire it.
        time.sleep(max(0.0, first.expires_at.timestamp() + 1.5 - time.time()))
        assert phase_of(team.admin.get(first.claim_name)) == "Held"

        def acquire() -> None:
            try:
                answer.append(alice.acquire(uri, wait=True, ttl=60) if wait else alice.try_acquire(uri, ttl=60))
            except BaseException as error:  # reported by the assertions below
                answer.append(error)

        asking = threading.Thread(target=acquire, daemon=True)
        asking.start()
        time.sleep(2.0)  # the acquire meets the lapsed claim while the operator is still stopped
    finally:
        operator.resume()
    asking.join(DEADLINE)
    assert answer, "the acquire was not answered"
    result = answer[0]
    if not wait:
        assert isinstance(result, Expired), f"a try-lock answered {result!r}, not told of its lost lease"
        assert result.reason == Reason.LEASE_EXPIRED.value
        assert claim_phase(team, first.claim_name) is None, "the run-out lease's record is left"
        result = alice.try_acquire(uri, ttl=60)
    assert not isinstance(result, BaseException), f"answered {result!r}, not a fresh grant"
    assert result.ok, result
    assert result.fencing_token is not None and first.fencing_token is not None
    assert result.fencing_token > first.fencing_token
    assert alice.get(uri).held
    alice.release(uri)


def test_heartbeat_extends_the_lease_and_reports_a_lost_lock(team: Team) -> None:
    alice = team.client("alice")
    uri = "github://acme/app/issues/9"
    held = alice.acquire(uri, ttl=600)

    renewed = alice.heartbeat(uri)
    assert renewed.confirmed
    assert renewed.fencing_token == held.fencing_token
    assert renewed.expires_at is not None
    assert held.expires_at is not None
    assert renewed.expires_at > held.expires_at

    with pytest.raises(NotFound):
        alice.heartbeat("github://acme/app/issues/404")

    short = "github://acme/app/issues/10"
    claim = alice.acquire(short, ttl=1).claim_name
    team.admin.wait_phase(claim, "Expired", DEADLINE)
    with pytest.raises(Expired) as caught:
        alice.heartbeat(short)
    assert caught.value.reason == Reason.LEASE_EXPIRED.value


def test_lease_keeps_a_short_lock_for_two_ttls(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    uri = "deploy://api-prod"
    with alice.lock(uri, ttl=SHORT_TTL) as lease:
        token = lease.fencing_token
        acquired = lease.claim.acquired_at
        end = time.monotonic() + 2 * SHORT_TTL + 1
        while time.monotonic() < end:  # the scenario's duration, checked all along
            assert not lease.lost.is_set(), lease.error
            assert not bob.try_acquire(uri).ok
            time.sleep(0.5)
        current = alice.get(uri)
        assert current.held
        assert current.fencing_token == token
        assert current.renewed_at is not None
        assert acquired is not None
        assert current.renewed_at > acquired
    assert not lease.lost.is_set()
    wait_until(lambda: team.lock_of(uri) is None, what="the lock to be released on exit", timeout=DEADLINE)
    assert not _exists(alice, uri)


def test_lease_loss_is_signalled_when_an_admin_breaks_the_lock(team: Team) -> None:
    alice = team.client("alice")
    uri = "github://acme/app/pr/17"
    seen: list[LockError] = []
    called = threading.Event()

    def on_lost(error: LockError) -> None:
        seen.append(error)
        called.set()

    with alice.lock(uri, ttl=600, on_lost=on_lost) as lease:
        assert lease.fencing_token is not None
        team.admin.delete_lock(lock_name(uri))  # the administrator breaks it

        assert lease.lost.wait(DEADLINE)
        assert called.wait(DEADLINE)
        assert isinstance(lease.error, Revoked)
        assert lease.error.reason == Reason.LOCK_BROKEN.value
        assert seen == [lease.error]
        with pytest.raises(Revoked):
            lease.check()
    assert not _exists(alice, uri)  # the record is cleaned up on exit


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_lease_is_released_on_exceptions(team: Team, interruption: type[BaseException]) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    uri = "github://acme/app/issues/11"

    def work() -> None:
        with alice.lock(uri, ttl=600):
            assert not bob.try_acquire(uri).ok
            raise interruption("boom")

    with pytest.raises(interruption):
        work()
    assert not _exists(alice, uri)
    wait_until(lambda: team.lock_of(uri) is None, what="the lock to be released", timeout=DEADLINE)
    assert bob.try_acquire(uri).ok


async def test_async_lease_renews_and_releases(team: Team) -> None:
    uri = "deploy://worker"
    async with team.async_client("alice") as alice:
        async with alice.lock(uri, ttl=SHORT_TTL) as lease:
            first = lease.claim.expires_at
            assert first is not None
            await asyncio.sleep(2 * SHORT_TTL + 1)  # over two TTLs: the scenario's length, not a synchronisation
            assert not lease.lost.is_set(), lease.error
            current = await alice.get(uri)
            assert current.held
            assert current.expires_at is not None
            assert current.expires_at > first
        with pytest.raises(NotFound):
            await alice.get(uri)


# ---- failing closed -----------------------------------------------------------------------------


def test_unreachable_api_server_is_an_error_never_a_success(team: Team, tmp_path: Path) -> None:
    dead = dead_kubeconfig(team.control_plane.user_kubeconfig("alice"), tmp_path / "dead")
    client = LockClient(kubeconfig=str(dead), namespace=team.namespace, instance="w1", retries=2)
    try:
        for call in (
            lambda: client.try_acquire("github://acme/app/issues/1"),
            lambda: client.acquire("github://acme/app/issues/1"),
            lambda: client.release("github://acme/app/issues/1"),
            lambda: client.heartbeat("github://acme/app/issues/1"),
        ):
            with pytest.raises(Unreachable):
                call()
        tools.use(client)
        text = tools.acquire_lock("github://acme/app/issues/1")
        assert "NOT acquired" in text
    finally:
        tools.use(None)
        client.close()
    with pytest.raises(Unreachable) as caught:
        LockClient(kubeconfig=str(tmp_path / "missing"), namespace=team.namespace)
    assert caught.value.reason == "NotConfigured"


def test_lease_is_lost_when_the_api_server_becomes_unreachable(team: Team, tmp_path: Path) -> None:
    partition = Partition(team.control_plane.server)
    config = kubeconfig_for(team.control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "via-proxy")
    alice = LockClient(kubeconfig=str(config), namespace=team.namespace, retries=1, request_timeout=5)
    bob = team.client("bob")
    uri = "deploy://api-prod"
    try:
        with alice.lock(uri, ttl=3) as lease:
            partition.cut()
            assert lease.lost.wait(DEADLINE)  # at the latest when the last confirmed lease ends
            assert isinstance(lease.error, Expired | Revoked)
        # The operator expired it too: someone else may have it now.
        wait_until(lambda: bob.try_acquire(uri).ok, what="bob to get the expired lock", timeout=DEADLINE)
    finally:
        partition.cut()
        alice.close()


def test_renew_deadline_declares_the_lease_lost_before_it_runs_out(team: Team, tmp_path: Path) -> None:
    partition = Partition(team.control_plane.server)
    config = kubeconfig_for(team.control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "via-proxy")
    alice = LockClient(kubeconfig=str(config), namespace=team.namespace, instance="w1", retries=1, request_timeout=2)
    bob = team.client("bob")
    uri = "deploy://api-prod"
    seen: list[LockError] = []
    try:
        with pytest.raises(InvalidInput, match="shorter than the TTL"):
            alice.lock(uri, ttl=8, renew_deadline=8)
        # A lease far longer than the renew deadline: declared lost by it, while the operator's lease
        # still runs, with seconds to spare for a loaded machine.
        with alice.lock(uri, ttl=20, renew_deadline=3, on_lost=seen.append) as lease:
            lease.add_listener(seen.append)
            assert lease.renew_deadline == 3
            time.sleep(1.5)  # a renewal went through
            partition.cut()
            assert lease.lost.wait(DEADLINE)
            lost_at = time.time()
            assert isinstance(lease.error, Expired) and "renew deadline" in lease.error.message
            # Declared lost while the lease the operator confirmed still runs: nobody else has it yet.
            assert not bob.try_acquire(uri).ok
            assert lease.expires_at is not None and lost_at < lease.expires_at.timestamp()
            wait_until(lambda: seen == [lease.error] * 2, what="both loss callbacks to be called", timeout=DEADLINE)
    finally:
        partition.cut()
        alice.close()


# ---- identity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("downward_api", [True, False], ids=["env", "token"])
def test_pod_identity_binds_claims_to_the_pod(
    team: Team,
    admin_api: ApiClient,
    fake_node: str,
    sa_token: SaToken,
    tmp_path: Path,
    downward_api: bool,
) -> None:
    ns = team.namespace
    sa_token(ns, "agent")  # creates the ServiceAccount
    bind_agents(admin_api, ns, (f"system:serviceaccount:{ns}:agent",))
    core = CoreV1Api(admin_api)
    name = f"agent-{secrets.token_hex(3)}"
    pod = core.create_namespaced_pod(
        ns,
        V1Pod(
            metadata=V1ObjectMeta(name=name, labels={POD_LABEL: POD_LABEL_VALUE}),
            spec=V1PodSpec(containers=[V1Container(name="main", image=POD_IMAGE)], node_name=fake_node,
                           service_account_name="agent"),
        ),
    )
    assert pod.metadata is not None
    uid = str(pod.metadata.uid)
    config = team.control_plane.token_kubeconfig(sa_token(ns, "agent", pod), tmp_path / "pod.kubeconfig", ns)
    env = {"POD_NAME": name, "POD_UID": uid, "POD_NAMESPACE": ns} if downward_api else {}
    client = LockClient(kubeconfig=str(config), env=env, decision_timeout=DEADLINE)
    try:
        identity = client.identity()
        holder = f"pod:{ns}/{name}/{uid[:8]}"
        assert (identity.holder, identity.namespace, identity.pod_name, identity.pod_uid) == (holder, ns, name, uid)
        with client.lock("deploy://api-prod", ttl=600) as lease:
            body = team.admin.get(lease.claim_name)
            assert body["spec"]["holder"] == holder
            assert body["spec"]["podRef"] == {"name": name, "uid": uid}
            assert body["metadata"]["ownerReferences"][0]["uid"] == uid

            core.delete_namespaced_pod(name, ns, grace_period_seconds=0)

            assert lease.lost.wait(DEADLINE)
            assert isinstance(lease.error, Revoked)
    finally:
        client.close()
    wait_until(lambda: team.lock_of("deploy://api-prod") is None, what="the pod's lock to go", timeout=DEADLINE)


# ---- LLM tools ----------------------------------------------------------------------------------


def test_tools_return_short_sentences(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    uri = "github://acme/app/issues/42"
    try:
        tools.use(alice)
        acquired = tools.acquire_lock(uri, ttl_seconds=600)
        assert acquired.startswith(f"acquired {uri} (fencing token ")
        tools.use(bob)
        held = tools.acquire_lock(uri)
        assert held.startswith(f"{uri} is held by {ALICE} since ")
        assert held.endswith("; skip this resource")
        assert tools.acquire_lock("not a uri").startswith("lock on not a uri NOT acquired: ")
        assert tools.release_lock(uri).startswith("nothing to release: ")
        tools.use(alice)
        assert tools.release_lock(uri) == f"released {uri}"
    finally:
        tools.use(None)
    assert team.admin.claims() == [] or all(phase_of(c) != "Held" for c in team.admin.claims())


def test_the_tools_take_several_resources_all_or_none(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    issue, branch = "github://acme/app/issues/43", "git://acme/app/fix-43"
    try:
        tools.use(bob)
        assert tools.acquire_lock(branch).startswith(f"acquired {branch} ")
        tools.use(alice)
        busy = tools.acquire_locks([issue, branch])
        assert busy.startswith(f"none of {issue}, {branch} acquired: "), busy
        assert BOB in busy and busy.endswith("; skip them"), busy
        assert team.lock_of(issue) is None  # all or none: the free one was not taken either
        assert tools.acquire_locks([issue, issue]).startswith(f"lock on {issue}, {issue} NOT acquired: ")
        tools.use(bob)
        assert tools.release_lock(branch) == f"released {branch}"
        wait_until(lambda: team.lock_of(branch) is None, what="bob's lock to be released", timeout=DEADLINE)
        tools.use(alice)
        acquired = tools.acquire_locks([issue, branch], ttl_seconds=600)
        tokens = {uri: recorded_token(team, uri) for uri in (issue, branch)}
        granted = ", ".join(f"{uri} (fencing token {tokens[uri]})" for uri in sorted(tokens))  # grant order
        assert acquired == (
            f"acquired {granted}, "
            f"all expiring {acquired.split('all expiring ')[1].split(';')[0]}; "
            "call release_locks with the same list when done"
        ), acquired
        assert holder_of(team, issue) == holder_of(team, branch) == ALICE
        assert tools.release_locks([issue, branch]) == f"released {', '.join(sorted(tokens))}"
        wait_until(lambda: team.lock_of(issue) is None and team.lock_of(branch) is None,
                   what="both locks to be released", timeout=DEADLINE)
    finally:
        tools.use(None)


# ---- claims of several resources: lock_all, acquire_all -----------------------------------------
# Several resources in one claim, granted all together or not at all, each with its own fencing
# token; renewed and released as one; the whole lease lost when an administrator breaks any one of
# its locks; bad lists refused before anything is written.

ISSUE, BRANCH = "github://acme/app/issues/42", "git://acme/app/fix-42"


def recorded_token(team: Team, uri: str) -> int:
    """The fencing token the ResourceLock of `uri` records for its (only) grant."""
    lock = team.lock_of(uri)
    assert lock is not None, f"no lock on {uri}"
    return fencing.lock_token(lock)


def holder_of(team: Team, uri: str) -> str | None:
    lock = team.lock_of(uri)
    return None if lock is None else str(lock["spec"]["holder"])


def all_claims(team: Team) -> list[dict[str, Any]]:
    listed = team.admin.api.list_namespaced_custom_object("kubelock.dev", "v1alpha1", team.namespace, "lockclaims")
    return list(listed["items"])


def test_lock_all_holds_every_resource_each_with_its_own_token(team: Team) -> None:
    alice = team.client("alice")
    with alice.lock_all([ISSUE, BRANCH], ttl=60) as lease:
        assert lease.fencing_token is None  # several resources: one token each
        assert set(lease.fencing_tokens) == {ISSUE, BRANCH}
        for uri in (ISSUE, BRANCH):
            assert holder_of(team, uri) == ALICE
            assert lease.fencing_tokens[uri] == recorded_token(team, uri)
        assert [(g.resource, g.lock_name) for g in lease.grants] == [
            (BRANCH, lock_name(BRANCH)), (ISSUE, lock_name(ISSUE))]
        claim = alice.get([BRANCH, ISSUE])  # the same claim, whatever the order
        assert claim.name == lease.claim_name and claim.held
        renewed = alice.heartbeat([ISSUE, BRANCH])
        assert renewed.confirmed and renewed.fencing_tokens == lease.fencing_tokens
    wait_until(lambda: holder_of(team, ISSUE) is None and holder_of(team, BRANCH) is None,
               what="both locks to be released", timeout=DEADLINE)


def test_all_or_none_and_nothing_is_held_while_waiting(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    bobs = bob.acquire(BRANCH, ttl=600)

    tried = alice.try_acquire_all([ISSUE, BRANCH])
    assert not tried.ok and tried.holder == BOB
    assert holder_of(team, ISSUE) is None  # the free one was not taken either

    result: list[AcquireResult] = []
    waiter = threading.Thread(target=lambda: result.append(alice.acquire_all([ISSUE, BRANCH], timeout=DEADLINE)))
    waiter.start()
    wait_until(lambda: any(c.get("status", {}).get("phase") == "Pending" and c["spec"]["holder"] == ALICE
                           for c in all_claims(team)), what="alice's claim to wait", timeout=DEADLINE)
    assert holder_of(team, ISSUE) is None  # waiting, it holds none of its resources

    bob.release(BRANCH)
    waiter.join(DEADLINE)
    assert not waiter.is_alive()
    [granted] = result
    assert granted.ok and granted.holder == ALICE
    assert granted.fencing_tokens[BRANCH] > (bobs.fencing_token or 0)
    assert holder_of(team, ISSUE) == holder_of(team, BRANCH) == ALICE
    released = alice.release([BRANCH, ISSUE])
    assert released.previous_phase is Phase.HELD


def test_a_wait_for_several_times_out_holding_nothing(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    bob.acquire(ISSUE, ttl=600)
    with pytest.raises(TimedOut):
        alice.acquire_all([ISSUE, BRANCH], timeout=2)
    assert holder_of(team, BRANCH) is None
    assert [c["status"]["phase"] for c in all_claims(team) if c["spec"]["holder"] == ALICE] == ["TimedOut"]


def test_breaking_one_lock_loses_the_whole_lease_and_releases_the_others(team: Team) -> None:
    alice = team.client("alice")
    seen: list[LockError] = []
    with alice.lock_all([ISSUE, BRANCH], ttl=600, on_lost=seen.append) as lease:
        team.admin.delete_lock(lock_name(BRANCH))  # an administrator breaks one of them
        assert lease.lost.wait(DEADLINE)
        assert isinstance(lease.error, Revoked), lease.error
        wait_until(lambda: holder_of(team, ISSUE) is None, what="the other grant to be released", timeout=DEADLINE)
    wait_until(lambda: len(seen) == 1, what="on_lost to be called", timeout=DEADLINE)


def test_a_lease_of_one_resource_has_its_token_in_the_map_too(team: Team) -> None:
    alice = team.client("alice")
    with alice.lock(ISSUE, ttl=60) as lease:
        assert lease.fencing_token is not None
        assert lease.fencing_tokens == {ISSUE: lease.fencing_token} == {ISSUE: recorded_token(team, ISSUE)}
        assert [g.resource for g in lease.grants] == [ISSUE]
    with alice.lock_all([ISSUE], ttl=60) as lease:  # a list of one is the claim of that resource
        assert lease.fencing_token == recorded_token(team, ISSUE)
        assert lease.claim.resources == (ISSUE,)


@pytest.mark.parametrize(
    ("uris", "words"),
    [
        ([ISSUE, "GITHUB://acme/app/issues/42/"], "more than once"),
        ([f"github://acme/app/issues/{i}" for i in range(17)], "at most 16"),
        ([], "at least one"),
    ],
)
def test_bad_lists_are_refused_before_anything_is_written(team: Team, uris: list[str], words: str) -> None:
    alice = team.client("alice")
    with pytest.raises(InvalidInput, match=words):
        alice.acquire_all(uris)
    with pytest.raises(InvalidInput, match=words):
        alice.lock_all(uris)
    assert all_claims(team) == []


def test_reason_of_a_held_resource_names_the_holder(team: Team) -> None:
    alice, bob = team.client("alice"), team.client("bob")
    bob.acquire(ISSUE, ttl=600)
    with pytest.raises(LockError) as refused:
        alice.acquire_all([ISSUE, BRANCH], wait=False)
    assert refused.value.reason == Reason.HELD_BY_ANOTHER.value
    assert getattr(refused.value, "holder", None) == BOB


def test_normalised_names_are_one_claim(team: Team) -> None:
    alice = team.client("alice")
    first = alice.acquire_all([ISSUE, BRANCH], ttl=60)
    again = alice.acquire_all(["GitHub://acme/app/issues/42/", BRANCH], ttl=60)  # asked twice: the same claim
    assert again.claim_name == first.claim_name and again.fencing_tokens == first.fencing_tokens
    assert [c["metadata"]["name"] for c in all_claims(team)] == [first.claim_name]
    alice.release([normalise(BRANCH), ISSUE])
    wait_until(lambda: claim_phase(team, first.claim_name) is None, what="the claim to be deleted", timeout=DEADLINE)


async def test_async_lock_all_renews_every_grant_and_releases_them(team: Team) -> None:
    async with team.async_client("alice") as alice:
        async with alice.lock_all([ISSUE, BRANCH], ttl=SHORT_TTL) as lease:
            tokens = dict(lease.fencing_tokens)
            first = {uri: lock_expiry(team, uri) for uri in (ISSUE, BRANCH)}
            await asyncio.sleep(2 * SHORT_TTL + 1)  # over two TTLs: the scenario's length, not a synchronisation
            assert not lease.lost.is_set(), lease.error
            current = await alice.get([BRANCH, ISSUE])
            assert current.held and current.tokens == tokens  # renewed, not granted anew
            for uri in (ISSUE, BRANCH):  # one renewal of the claim renewed each grant
                assert lock_expiry(team, uri) > first[uri]
        with pytest.raises(NotFound):
            await alice.get([ISSUE, BRANCH])
    wait_until(lambda: holder_of(team, ISSUE) is None and holder_of(team, BRANCH) is None,
               what="both locks to be released", timeout=DEADLINE)


def lock_expiry(team: Team, uri: str) -> float:
    lock = team.lock_of(uri)
    assert lock is not None, f"no lock on {uri}"
    renewed = LockInfo.from_body(lock).expires_at
    assert renewed is not None
    return renewed.timestamp()
