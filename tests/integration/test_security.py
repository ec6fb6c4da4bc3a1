"""Who may do what, enforced by the API server itself (config/admission/ and config/rbac/).

Only a claim's holder claims in its name, renews it or releases it; a pod-bound ServiceAccount token
cannot act for another pod; only the operator writes ResourceLocks and claim status; lock admins
break locks, under their own name only; viewers read. Every identity is real: static users with
bearer tokens and ServiceAccount tokens from TokenRequest, bound to pods where it matters. The last
tests run the operator under exactly its least-privilege ClusterRole.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    ApiException,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
    V1ClusterRoleBinding,
    V1Container,
    V1Namespace,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1ValidatingAdmissionPolicy,
    V1ValidatingAdmissionPolicyBinding,
)

from kubelock.api.constants import (
    BREAK_ACTOR_ANNOTATION,
    BREAK_REASON_ANNOTATION,
    GROUP,
    POD_LABEL,
    POD_LABEL_VALUE,
    REVOKE_BY_ANNOTATION,
    REVOKE_GRACE_ANNOTATION,
    REVOKE_REASON_ANNOTATION,
    VERSION,
)
from kubelock.testbed import wait_until
from tests.support.access import bind, cluster_role, refusal, service_account_user, subject, wait_allowed
from tests.support.claims import Locks, phase_of, status_of
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

# The fixtures' types (their Protocols live in conftest.py, which tests do not import).
Cluster = Any  # ControlPlane, or conftest.ExistingCluster for KUBELOCK_TEST_KUBECONFIG
SaApi = Callable[..., ApiClient]
SaToken = Callable[..., str]
UserApi = Callable[[str], ApiClient]
Body = dict[str, Any]

# Generous for 2 shared cores; every wait polls and returns as soon as the state is reached.
DEADLINE = 60.0
POD_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok only pretends to run it
AGENT_SA = "agent"
RESOURCE = "deploy://api-prod"
ALICE = "user:alice/laptop"  # alice's holder (her identity and one instance)


# ---- helpers ------------------------------------------------------------------------------------



def holder_pod(name: str, node: str) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name=name, labels={POD_LABEL: POD_LABEL_VALUE}),
        spec=V1PodSpec(
            containers=[V1Container(name="main", image=POD_IMAGE)], node_name=node, service_account_name=AGENT_SA
        ),
    )


def uid_of(pod: V1Pod) -> str:
    assert pod.metadata is not None
    assert pod.metadata.uid is not None
    return str(pod.metadata.uid)


def lock_body(name: str, holder: str) -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResourceLock",
        "metadata": {"name": name},
        "spec": {
            "resource": RESOURCE,
            "holder": holder,
            "claimRef": {"name": "somebodys-claim", "uid": "00000000-0000-0000-0000-000000000001"},
            "leaseDurationSeconds": 600,
            "acquireTime": "2030-01-01T00:00:00.000000Z",
            "renewTime": "2030-01-01T00:00:00.000000Z",
            "fencingToken": 1,
        },
    }


def as_body(response: object) -> Body:
    assert isinstance(response, dict)
    return response


def patch_lock(api: ApiClient, namespace: str, name: str, patch: Body) -> Body:
    objects = CustomObjectsApi(api)
    return as_body(objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, "resourcelocks", name, patch))


def patch_claim(api: ApiClient, namespace: str, name: str, patch: Body, *, status: bool = False) -> Body:
    objects = CustomObjectsApi(api)
    write = objects.patch_namespaced_custom_object_status if status else objects.patch_namespaced_custom_object
    return as_body(write(GROUP, VERSION, namespace, "lockclaims", name, patch))


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


# ---- the cast: two agent pods, a person, a viewer and a lock admin in one namespace -------------


@dataclass
class Team:
    namespace: str
    admin: ApiClient  # cluster admin: stands in for the operator where a test needs a ResourceLock
    pods: dict[str, V1Pod]
    alice: Locks  # a person with kubelock-agent
    viewer: Locks  # kubelock-viewer
    lockadmin: Locks  # kubelock-admin
    sa_api: SaApi

    def agent(self, pod: str) -> Locks:
        """The claims API as seen with a ServiceAccount token bound to one of the team's pods."""
        return Locks(self.sa_api(self.namespace, AGENT_SA, pod=self.pods[pod]), self.namespace)

    def uid(self, pod: str) -> str:
        return uid_of(self.pods[pod])

    def holder(self, pod: str, suffix: str = "") -> str:
        """The holder of one of the team's pods: `pod:<namespace>/<pod>/<uid prefix>[.suffix]`."""
        return f"pod:{self.namespace}/{pod}/{self.uid(pod)[:8]}" + (f".{suffix}" if suffix else "")

    def recreate(self, pod: str, node: str) -> None:
        """Deletes a pod, waits until it is gone and starts another under the same name."""
        core = CoreV1Api(self.admin)
        core.delete_namespaced_pod(pod, self.namespace)
        wait_until(
            lambda: gone(lambda: core.read_namespaced_pod(pod, self.namespace)),
            what=f"pod {pod} gone",
            timeout=DEADLINE,
        )
        self.pods[pod] = core.create_namespaced_pod(self.namespace, holder_pod(pod, node))


def dry_run_status(locks: Locks, spec: Body) -> int:
    """The HTTP status of a dry-run claim (admission runs, nothing is stored): 201, 403, 422 ..."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": "probe"}, "spec": spec}
    try:
        locks.api.create_namespaced_custom_object(GROUP, VERSION, locks.namespace, "lockclaims", body, dry_run="All")
    except ApiException as error:
        return int(error.status)
    return 201


def policies_enforced(locks: Locks) -> bool:
    """True once the holder policy refuses a claim in another user's name: the API server loads
    policies from a watch, so they take effect shortly after the control plane applies them."""
    return dry_run_status(locks, {"resource": "probe://policy", "holder": "not-alice"}) == 403


@pytest.fixture
def team(
    admin_api: ApiClient, namespace: str, fake_node: str, user_api: UserApi, sa_api: SaApi, sa_token: SaToken
) -> Team:
    sa_token(namespace, AGENT_SA)  # creates the ServiceAccount the pods run as
    agent_user = service_account_user(namespace, AGENT_SA)
    for role, user in (
        ("kubelock-agent", agent_user),
        ("kubelock-agent", "alice"),
        ("kubelock-viewer", "viewer"),
        ("kubelock-admin", "lockadmin"),
    ):
        bind(admin_api, namespace, role, user)
    for user, verb, resource in (
        (agent_user, "create", "lockclaims"),
        ("alice", "create", "lockclaims"),
        ("viewer", "list", "lockclaims"),
        ("lockadmin", "delete", "resourcelocks"),
    ):
        wait_allowed(admin_api, user, namespace, verb, resource)
    core = CoreV1Api(admin_api)
    pods = {name: core.create_namespaced_pod(namespace, holder_pod(name, fake_node)) for name in ("agent-a", "agent-b")}
    alice = Locks(user_api("alice"), namespace)
    wait_until(lambda: policies_enforced(alice), what="the admission policies to be enforced", timeout=DEADLINE)
    return Team(
        namespace=namespace,
        admin=admin_api,
        pods=pods,
        alice=alice,
        viewer=Locks(user_api("viewer"), namespace),
        lockadmin=Locks(user_api("lockadmin"), namespace),
        sa_api=sa_api,
    )


# ---- holder binding: only the holder claims, renews and releases --------------------------------


def test_agent_cannot_release_renew_or_change_another_agents_claim(team: Team) -> None:
    a, b = team.agent("agent-a"), team.agent("agent-b")
    holder = team.holder("agent-a")
    a.claim("mine", RESOURCE, holder, pod=("agent-a", team.uid("agent-a")))
    only = f'only the holder "{holder}" (any instance of its identity, or a lock admin) may'

    status, message = refusal(lambda: b.delete("mine"))
    assert status == 403
    assert f"{only} release (delete) this claim; you are pod:{team.namespace}/agent-b" in message

    status, message = refusal(lambda: b.renew("mine"))
    assert status == 403
    assert f"{only} renew or change this claim; you are pod:{team.namespace}/agent-b" in message

    status, message = refusal(
        lambda: patch_claim(b.api.api_client, team.namespace, "mine", {"spec": {"ttlSeconds": 5}})
    )
    assert status == 403
    assert f"may renew or change this claim; you are pod:{team.namespace}/agent-b" in message

    # A person with the same role is not the holder either.
    status, message = refusal(lambda: team.alice.delete("mine"))
    assert status == 403
    assert f"{only} release (delete) this claim; you are user:alice" in message

    # The holder itself renews and releases.
    renewed = a.renew("mine", "2030-01-01T00:00:00Z")
    assert renewed["metadata"]["annotations"]["kubelock.dev/renew"] == "2030-01-01T00:00:00Z"
    a.delete("mine")
    assert gone(lambda: a.get("mine"))


def test_agent_cannot_claim_as_another_agent(team: Team) -> None:
    b = team.agent("agent-b")

    forged = team.holder("agent-a")
    status, message = refusal(lambda: b.claim("forged", RESOURCE, forged, pod=("agent-a", team.uid("agent-a"))))

    assert status == 403
    assert (
        f'holder must be your identity "pod:{team.namespace}/agent-b" followed by "/" and an instance name (1-63 '
        f'letters, digits, ".", "_" or "-", beginning with the first 8 characters of your pod uid, '
        f'"{team.uid("agent-b")[:8]}"), not "{forged}": set spec.holder: {team.holder("agent-b")}'
    ) in message
    assert team.alice.claims() == []


def test_pod_token_claims_only_for_its_own_pod(team: Team) -> None:
    a = team.agent("agent-a")
    uid_a, uid_b = team.uid("agent-a"), team.uid("agent-b")

    mine = team.holder("agent-a")
    status, message = refusal(lambda: a.claim("c1", RESOURCE, mine, pod=("agent-b", uid_b)))
    assert status == 403
    assert 'spec.podRef must name your own pod "agent-a", not "agent-b": set spec.podRef.name: agent-a' in message

    status, message = refusal(lambda: a.claim("c2", RESOURCE, mine, pod=("agent-a", uid_b)))
    assert status == 403
    assert f'spec.podRef.uid must be the uid of your pod "agent-a" ({uid_a}), not {uid_b}' in message
    assert f"set spec.podRef.uid: {uid_a} or leave it out" in message

    # Its claims name the pod, so that they end when the pod does.
    status, message = refusal(lambda: a.claim("c3", RESOURCE, mine))
    assert status == 403
    assert (
        'a claim made with a token bound to pod "agent-a" must name that pod: set spec.podRef.name: agent-a' in message
    )

    # Its instances begin with its uid's first characters, in every namespace.
    status, message = refusal(lambda: a.claim("c4", RESOURCE, f"pod:{team.namespace}/agent-a/worker-2",
                                              pod=("agent-a", uid_a)))
    assert status == 403
    assert (
        f'the instance of a claim made with a token bound to pod "agent-a" must be "{uid_a[:8]}" or begin with '
        f'"{uid_a[:8]}.", the first 8 characters of its uid {uid_a}, not "worker-2"'
    ) in message

    a.claim("with-uid", RESOURCE, mine, pod=("agent-a", uid_a))
    a.claim("without-uid", "deploy://api-staging", team.holder("agent-a", "w2"), pod=("agent-a", None))
    assert sorted(c["metadata"]["name"] for c in team.alice.claims()) == ["with-uid", "without-uid"]


def test_pod_token_from_another_namespace_cannot_name_a_pod_here(
    team: Team, admin_api: ApiClient, fake_node: str, sa_api: SaApi
) -> None:
    elsewhere = f"kl-{secrets.token_hex(4)}"
    core = CoreV1Api(admin_api)
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=elsewhere)))
    try:
        remote = core.create_namespaced_pod(elsewhere, holder_pod("remote-0", fake_node))
        user = service_account_user(elsewhere, AGENT_SA)
        bind(admin_api, team.namespace, "kubelock-agent", user)
        wait_allowed(admin_api, user, team.namespace, "create", "lockclaims")
        agent = Locks(sa_api(elsewhere, AGENT_SA, pod=remote), team.namespace)

        # podRef means a pod in the claim's namespace: a pod of the same name here is somebody else.
        remote_holder = f"pod:{elsewhere}/remote-0/{uid_of(remote)[:8]}"
        status, message = refusal(lambda: agent.claim("c", RESOURCE, remote_holder, pod=("remote-0", None)))
        assert status == 403
        assert (
            f'spec.podRef names a pod in namespace {team.namespace}, but your pod "remote-0" runs in namespace '
            f"{elsewhere}: remove spec.podRef"
        ) in message

        agent.claim("c", RESOURCE, remote_holder)
        agent.delete("c")
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(elsewhere)


def test_a_same_named_pod_in_another_namespace_cannot_touch_the_claims(
    team: Team, admin_api: ApiClient, fake_node: str, sa_api: SaApi
) -> None:
    mine = team.holder("agent-a")
    team.agent("agent-a").claim("mine", RESOURCE, mine, pod=("agent-a", team.uid("agent-a")))
    with temporary_namespace(admin_api, "kl-") as elsewhere:
        twin = CoreV1Api(admin_api).create_namespaced_pod(elsewhere, holder_pod("agent-a", fake_node))
        user = service_account_user(elsewhere, AGENT_SA)
        bind(admin_api, team.namespace, "kubelock-agent", user)  # allowed to claim here, as the docs suggest
        wait_allowed(admin_api, user, team.namespace, "create", "lockclaims")
        other = Locks(sa_api(elsewhere, AGENT_SA, pod=twin), team.namespace)
        you_are = f"you are pod:{elsewhere}/agent-a"

        for name, call in (
            ("create", lambda: other.claim("forged", RESOURCE, mine)),
            ("renew", lambda: other.renew("mine")),
            ("shorten", lambda: patch_claim(other.api.api_client, team.namespace, "mine", {"spec": {"ttlSeconds": 1}})),
            ("delete", lambda: other.delete("mine")),
        ):
            status, message = refusal(call)
            assert status == 403, name
            assert (you_are if name != "create" else f'your identity "pod:{elsewhere}/agent-a"') in message, name

        # It may claim in its own name: another holder, so it conflicts with the pod here.
        other.claim("its-own", RESOURCE, f"pod:{elsewhere}/agent-a/{uid_of(twin)[:8]}")
        assert team.alice.get("mine")["spec"]["holder"] == mine


def test_a_user_named_like_a_pod_is_another_holder(team: Team, fake_node: str) -> None:
    namesake = CoreV1Api(team.admin).create_namespaced_pod(team.namespace, holder_pod("alice", fake_node))
    team.pods["alice"] = namesake
    pod = team.agent("alice")
    pods_claim, users_claim = team.holder("alice"), ALICE
    pod.claim("pods", RESOURCE, pods_claim, pod=("alice", uid_of(namesake)))
    team.alice.claim("users", "deploy://api-staging", users_claim)

    for actor, target in ((team.alice, "pods"), (pod, "users")):
        for call in (
            lambda actor=actor, target=target: actor.renew(target),
            lambda actor=actor, target=target: patch_claim(actor.api.api_client, team.namespace, target,
                                                           {"spec": {"ttlSeconds": 1}}),
            lambda actor=actor, target=target: actor.delete(target),
        ):
            assert refusal(call)[0] == 403, target
    assert refusal(lambda: team.alice.claim("x", "r://x", pods_claim))[0] == 403
    assert refusal(lambda: pod.claim("y", "r://y", users_claim, pod=("alice", None)))[0] == 403


def test_claims_from_before_instances_stay_with_their_owner(
    team: Team, admin_api: ApiClient, fake_node: str, sa_api: SaApi
) -> None:
    admin = team.lockadmin  # exempt: stands in for claims made before the policy changed
    admin.claim("pod-legacy", RESOURCE, "agent-a", pod=("agent-a", team.uid("agent-a")))
    admin.claim("user-legacy", "deploy://api-staging", "alice")
    admin.claim("remote-legacy", "deploy://api-test", "agent-a")  # a pod's claim in another namespace had no podRef

    a, b = team.agent("agent-a"), team.agent("agent-b")
    a.renew("pod-legacy")
    team.alice.renew("user-legacy")
    for actor, target in ((b, "pod-legacy"), (team.alice, "pod-legacy"), (a, "user-legacy"), (a, "remote-legacy")):
        assert refusal(lambda actor=actor, target=target: actor.renew(target))[0] == 403, target
    with temporary_namespace(admin_api, "kl-") as elsewhere:
        twin = CoreV1Api(admin_api).create_namespaced_pod(elsewhere, holder_pod("agent-a", fake_node))
        user = service_account_user(elsewhere, AGENT_SA)
        bind(admin_api, team.namespace, "kubelock-agent", user)
        wait_allowed(admin_api, user, team.namespace, "delete", "lockclaims")
        other = Locks(sa_api(elsewhere, AGENT_SA, pod=twin), team.namespace)
        for target in ("pod-legacy", "remote-legacy"):
            assert refusal(lambda target=target: other.delete(target))[0] == 403, target
    a.delete("pod-legacy")
    team.alice.delete("user-legacy")
    assert [c["metadata"]["name"] for c in team.alice.claims()] == ["remote-legacy"]  # runs out, or an admin deletes


def test_only_lock_admins_set_finalizers_on_claims(team: Team) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim",
            "metadata": {"name": "kept", "finalizers": ["example.com/keep"]},
            "spec": {"resource": RESOURCE, "holder": ALICE}}
    status, message = refusal(
        lambda: team.alice.api.create_namespaced_custom_object(GROUP, VERSION, team.namespace, "lockclaims", body)
    )
    assert status == 403
    assert "only a lock admin may add or remove finalizers of a LockClaim" in message
    team.alice.claim("mine", RESOURCE, ALICE)
    keep = {"metadata": {"finalizers": ["example.com/keep"]}}
    assert refusal(lambda: patch_claim(team.alice.api.api_client, team.namespace, "mine", keep))[0] == 403
    team.alice.delete("mine")
    assert gone(lambda: team.alice.get("mine"))


def claim_body(name: str, holder: str, owners: list[Body], pod: tuple[str, str] | None = None) -> Body:
    spec: Body = {"resource": f"r://{name}", "holder": holder}
    if pod is not None:
        spec["podRef"] = {"name": pod[0], "uid": pod[1]}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim",
            "metadata": {"name": name, "ownerReferences": owners}, "spec": spec}


def owner(kind: str, name: str, uid: str, *, api_version: str = "v1", block: bool = False) -> Body:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            **({"blockOwnerDeletion": True} if block else {})}


def test_claim_owner_references_name_only_the_holders_pod(team: Team) -> None:
    """Without OwnerReferencesPermissionEnforcement (the bed, many clusters) an agent could tie its
    claim to another holder's claim, with blockOwnerDeletion; the holder policy allows only the pod
    of spec.podRef, the one reference the SDK sets."""
    a, b = team.agent("agent-a"), team.agent("agent-b")
    uid_a, uid_b = team.uid("agent-a"), team.uid("agent-b")
    target = a.claim("a-claim", RESOURCE, team.holder("agent-a"), pod=("agent-a", uid_a))
    to_claim = owner("LockClaim", "a-claim", target["metadata"]["uid"], api_version=f"{GROUP}/{VERSION}", block=True)

    def create(locks: Locks, body: Body) -> Body:
        return as_body(locks.api.create_namespaced_custom_object(GROUP, VERSION, team.namespace, "lockclaims", body))

    status, message = refusal(lambda: create(team.alice, claim_body("tied", ALICE, [to_claim])))
    assert status == 403
    assert (
        "a LockClaim's ownerReferences may name only its holder's pod (apiVersion v1, kind Pod, the pod spec.podRef"
        f" names), not LockClaim a-claim (apiVersion {GROUP}/{VERSION}): remove that ownerReference"
    ) in message

    # Added later (an UPDATE) it is refused the same way.
    team.alice.claim("plain", "r://plain", ALICE)
    status, message = refusal(
        lambda: patch_claim(team.alice.api.api_client, team.namespace, "plain",
                            {"metadata": {"ownerReferences": [to_claim]}})
    )
    assert status == 403
    assert "not LockClaim a-claim" in message

    # A pod, but not the one of spec.podRef (another holder's pod).
    mine = team.holder("agent-b")
    status, message = refusal(
        lambda: create(b, claim_body("other-pod", mine, [owner("Pod", "agent-a", uid_a)], pod=("agent-b", uid_b)))
    )
    assert status == 403
    assert (
        f'ownerReferences may name only the pod spec.podRef names ("agent-b", uid {uid_b}), not pod "agent-a" '
        f"(uid {uid_a}): set spec.podRef to your own pod, or remove that ownerReference"
    ) in message

    # Its own pod, holding up the pod's deletion: needs pods/finalizers, as the upstream plugin asks.
    status, message = refusal(
        lambda: create(b, claim_body("blocking", mine, [owner("Pod", "agent-b", uid_b, block=True)],
                                     pod=("agent-b", uid_b)))
    )
    assert status == 403
    assert 'blockOwnerDeletion on the ownerReference to pod "agent-b" needs the right to update pods/finalizers' \
        in message

    # What the SDK sets: the holder's own pod, the one spec.podRef names. Renewing keeps working.
    create(b, claim_body("own-pod", mine, [owner("Pod", "agent-b", uid_b)], pod=("agent-b", uid_b)))
    b.renew("own-pod")

    # Lock admins are exempt.
    create(team.lockadmin, claim_body("admins", ALICE, [to_claim]))


def test_restarted_pod_releases_but_cannot_renew_its_predecessors_claim(team: Team, fake_node: str) -> None:
    old_uid = team.uid("agent-a")
    team.agent("agent-a").claim("stale", RESOURCE, team.holder("agent-a"), pod=("agent-a", old_uid))

    team.recreate("agent-a", fake_node)  # a StatefulSet replica comes back under the same name
    successor = team.agent("agent-a")

    status, message = refusal(lambda: successor.renew("stale"))
    assert status == 403
    assert (
        f'this claim belongs to an earlier pod named "agent-a" (instance "{old_uid[:8]}"), not to your pod '
        f"(uid {team.uid('agent-a')}): it cannot be renewed any more; delete it and claim again"
    ) in message
    successor.delete("stale")
    assert gone(lambda: successor.get("stale"))


def test_non_pod_identities_claim_under_their_user_name(team: Team, sa_api: SaApi) -> None:
    status, message = refusal(lambda: team.alice.claim("c", RESOURCE, "user:bob/laptop"))
    assert status == 403
    assert (
        'holder must be your identity "user:alice" followed by "/" and an instance name (1-63 letters, digits, ".", '
        '"_" or "-"), not "user:bob/laptop": set spec.holder: user:alice/worker-1'
    ) in message
    for bad in ("alice", "user:alice", "user:alice/", "user:alice/a/b", "user:alice/-x"):
        assert refusal(lambda bad=bad: team.alice.claim("c", RESOURCE, bad))[0] == 403, bad
    team.alice.claim("c", RESOURCE, "user:alice/laptop")

    # A ServiceAccount token not bound to a pod is its own identity, apart from the pods that run as it.
    bare = Locks(sa_api(team.namespace, AGENT_SA), team.namespace)
    identity = f"sa:{team.namespace}/{AGENT_SA}"
    status, message = refusal(lambda: bare.claim("d", "deploy://api-staging", team.holder("agent-a")))
    assert status == 403
    assert f'holder must be your identity "{identity}" followed by "/"' in message
    bare.claim("d", "deploy://api-staging", f"{identity}/ci-1")
    bare.delete("d")


# ---- only the operator writes locks and status ---------------------------------------------------


def test_agent_cannot_write_locks_or_claim_status(team: Team) -> None:
    a = team.agent("agent-a")
    a.claim("mine", RESOURCE, team.holder("agent-a"), pod=("agent-a", team.uid("agent-a")))
    CustomObjectsApi(team.admin).create_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "resourcelocks", lock_body("held", "agent-b")
    )
    agent_api = a.api.api_client

    status, message = refusal(
        lambda: a.api.create_namespaced_custom_object(
            GROUP, VERSION, team.namespace, "resourcelocks", lock_body("mine", "agent-a")
        )
    )
    assert status == 403
    assert 'cannot create resource "resourcelocks" in API group "kubelock.dev"' in message

    status, message = refusal(lambda: patch_lock(agent_api, team.namespace, "held", {"spec": {"holder": "agent-a"}}))
    assert status == 403
    assert 'cannot patch resource "resourcelocks"' in message

    status, message = refusal(lambda: a.delete_lock("held"))
    assert status == 403
    assert 'cannot delete resource "resourcelocks"' in message

    # Nobody but the operator writes status, not even on a claim of one's own, nor a lock admin.
    for api in (agent_api, team.lockadmin.api.api_client):
        status, message = refusal(
            functools.partial(patch_claim, api, team.namespace, "mine", {"status": {"phase": "Held"}}, status=True)
        )
        assert status == 403
        assert 'cannot patch resource "lockclaims/status"' in message
    assert phase_of(a.get("mine")) is None


# ---- lock admins break locks, under their own name -----------------------------------------------


def test_lock_admin_breaks_locks_and_releases_or_claims_for_anyone(team: Team) -> None:
    admin = team.lockadmin
    admin_api = admin.api.api_client
    team.alice.claim("alices", RESOURCE, ALICE)
    admin.claim("for-agent", "deploy://api-staging", "agent-a")  # on anybody's behalf
    admin.delete("alices")  # releases anybody's claim
    assert [c["metadata"]["name"] for c in admin.claims()] == ["for-agent"]

    # A lock exists (written here by the cluster admin, as the operator would).
    CustomObjectsApi(team.admin).create_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "resourcelocks", lock_body("held", "agent-b")
    )

    status, message = refusal(
        lambda: admin.api.create_namespaced_custom_object(
            GROUP, VERSION, team.namespace, "resourcelocks", lock_body("mine", "lockadmin")
        )
    )
    assert status == 403
    assert (
        "ResourceLocks are created only by the kubelock operator, and you (\"lockadmin\") lack the verb 'operate' "
        "on resourcelocks: to take a lock, create a LockClaim"
    ) in message

    for change in (
        {"spec": {"holder": "lockadmin"}},
        {"spec": {"leaseDurationSeconds": 86400}},
        {"metadata": {"finalizers": ["example.com/keep"]}},
        {"metadata": {"labels": {"kubelock.dev/holder-hash": "x"}}},
        {"metadata": {"annotations": {"note": "mine now"}}},
    ):
        status, message = refusal(functools.partial(patch_lock, admin_api, team.namespace, "held", change))
        assert status == 403, change
        assert (
            "a ResourceLock is changed only by the kubelock operator; others may only set the annotations "
            "kubelock.dev/broken-by and kubelock.dev/break-reason"
        ) in message, change

    # The break record names the breaker and cannot name anybody else.
    forged = {"metadata": {"annotations": {BREAK_ACTOR_ANNOTATION: "alice"}}}
    status, message = refusal(lambda: patch_lock(admin_api, team.namespace, "held", forged))
    assert status == 403
    assert (
        "kubelock.dev/broken-by records who broke the lock and must be your own user name: "
        'set kubelock.dev/broken-by: lockadmin (not "alice")'
    ) in message
    # ... not even by a cluster admin.
    status, message = refusal(lambda: patch_lock(team.admin, team.namespace, "held", forged))
    assert status == 403
    assert "kubelock.dev/broken-by records who broke the lock and must be your own user name" in message

    # The reason goes into log lines, Events and terminals: one line, no escapes, bounded; nor a line
    # or paragraph separator (a line break to log viewers and browsers), nor a bidirectional override
    # or a zero-width character (the reader would see other text than is stored).
    for why in ("line one\nFAKE log line", "\x1b[2J\x1b[Hall clear", "x" * 1025, "one\u2028FAKE log line",
                "one\u2029two", "txt.\u202eexe", "zero\u200bwidth"):
        odd = {"metadata": {"annotations": {BREAK_ACTOR_ANNOTATION: "lockadmin", BREAK_REASON_ANNOTATION: why}}}
        status, message = refusal(lambda odd=odd: patch_lock(admin_api, team.namespace, "held", odd))
        assert status == 422, (status, message)
        assert (
            "kubelock.dev/break-reason goes into the claim, an Event and the operator log: write one line of at "
            "most 1024 characters without control characters (newlines, tabs, escapes) or invisible ones (line "
            f"separators, bidirectional overrides, zero-width characters); {len(why)} characters given"
        ) in message, message

    record = {BREAK_ACTOR_ANNOTATION: "lockadmin", BREAK_REASON_ANNOTATION: "deploy pipeline stuck ⚠ é"}
    annotated = patch_lock(admin_api, team.namespace, "held", {"metadata": {"annotations": record}})
    assert {k: annotated["metadata"]["annotations"][k] for k in record} == record
    assert annotated["spec"] == admin.lock("held")["spec"]

    admin.delete_lock("held")
    assert gone(lambda: admin.lock("held"))


def test_only_lock_admins_set_change_or_remove_a_revocation_request(team: Team) -> None:
    """kubelock-revocation-request skips, by its match condition, every claim write whose old and new
    claim carry no kubelock.dev/revoke-* annotation: the writes it refused are still refused, on
    create, on change and on removal, and a holder still renews a claim a request is on."""
    only_admins = "only those who may break locks in namespace"
    request = {REVOKE_BY_ANNOTATION: "alice", REVOKE_REASON_ANNOTATION: "mine"}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim",
            "metadata": {"name": "asks", "annotations": request},
            "spec": {"resource": RESOURCE, "holder": ALICE, "wait": False}}
    status, message = refusal(lambda: team.alice.api.create_namespaced_custom_object(
        GROUP, VERSION, team.namespace, "lockclaims", body))
    assert status == 403 and only_admins in message, message

    # A lock admin's request on alice's claim: alice may renew the claim, but not touch the request.
    team.alice.claim("alices", RESOURCE, ALICE)
    asked = {REVOKE_BY_ANNOTATION: "lockadmin", REVOKE_GRACE_ANNOTATION: "30"}
    patch_claim(team.lockadmin.api.api_client, team.namespace, "alices", {"metadata": {"annotations": asked}})
    renewed = team.alice.renew("alices")
    assert {k: renewed["metadata"]["annotations"][k] for k in asked} == asked
    for change in ({REVOKE_GRACE_ANNOTATION: "86400"}, {REVOKE_BY_ANNOTATION: None},
                   {REVOKE_BY_ANNOTATION: None, REVOKE_GRACE_ANNOTATION: None}):
        status, message = refusal(functools.partial(
            patch_claim, team.alice.api.api_client, team.namespace, "alices", {"metadata": {"annotations": change}}))
        assert status == 403 and only_admins in message, (change, message)
    assert {k: team.alice.get("alices")["metadata"]["annotations"][k] for k in asked} == asked

    # The reason, as a break's: one line of visible characters (it goes into the claim, an Event, the log).
    for why in ("one\nFAKE log line", "one\u2028FAKE log line", "txt.\u202eexe", "x" * 1025):
        odd = {REVOKE_BY_ANNOTATION: "lockadmin", REVOKE_REASON_ANNOTATION: why}
        status, message = refusal(functools.partial(
            patch_claim, team.lockadmin.api.api_client, team.namespace, "alices", {"metadata": {"annotations": odd}}))
        assert status == 422, (why, status, message)
        assert (
            "kubelock.dev/revoke-reason goes into the claim, an Event and the operator log: write one line of at "
            "most 1024 characters without control characters (newlines, tabs, escapes) or invisible ones (line "
            f"separators, bidirectional overrides, zero-width characters); {len(why)} characters given"
        ) in message, message
    fine = {REVOKE_BY_ANNOTATION: "lockadmin", REVOKE_REASON_ANNOTATION: "deploy pipeline stuck ⚠ é"}
    patched = patch_claim(team.lockadmin.api.api_client, team.namespace, "alices", {"metadata": {"annotations": fine}})
    assert patched["metadata"]["annotations"][REVOKE_REASON_ANNOTATION] == fine[REVOKE_REASON_ANNOTATION]


def test_no_kubelock_role_can_forge_the_operators_events(team: Team) -> None:
    """The operator's Events are the trail of who broke which lock (LockBroken names the breaker). The
    kubelock roles read them and nothing more: kubelock-admin had `create`, which nothing of kubelock
    uses, and with it a lock admin could post a LockBroken Event naming another admin as the breaker."""
    claim = team.alice.claim("alices", RESOURCE, ALICE)
    forged = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "alices.forged"},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "name": "alices",
                           "namespace": team.namespace, "uid": claim["metadata"]["uid"]},
        "reason": "LockBroken", "type": "Warning", "source": {"component": "kubelock-operator"},
        "message": f"the lock on {RESOURCE} was broken by otheradmin: forged",
    }
    for who in (team.lockadmin, team.alice, team.viewer):
        core = CoreV1Api(who.api.api_client)
        core.list_namespaced_event(team.namespace)  # they read them
        status, message = refusal(lambda core=core: core.create_namespaced_event(team.namespace, forged))
        assert status == 403, (status, message)
        assert 'cannot create resource "events"' in message, message


def test_viewer_only_reads(team: Team) -> None:
    team.alice.claim("alices", RESOURCE, ALICE)
    viewer = team.viewer

    assert [c["metadata"]["name"] for c in viewer.claims()] == ["alices"]
    assert viewer.get("alices")["spec"]["holder"] == ALICE
    assert viewer.locks() == []

    for verb, resource, call in (
        ("create", "lockclaims", lambda: viewer.claim("own", "deploy://api-staging", "user:viewer/v")),
        ("patch", "lockclaims", lambda: viewer.renew("alices")),
        ("delete", "lockclaims", lambda: viewer.delete("alices")),
        ("delete", "resourcelocks", lambda: viewer.delete_lock("any")),
    ):
        status, message = refusal(call)
        assert status == 403
        assert f'User "viewer" cannot {verb} resource "{resource}" in API group "kubelock.dev"' in message


# ---- lease bounds --------------------------------------------------------------------------------


def scoped_bounds_policy(repo_root: Path, namespace: str, max_ttl: int) -> tuple[Body, Body]:
    """kubelock-lockclaim-bounds as the chart renders it for another maxTtlSeconds, bound to one
    namespace only, so that the test changes nothing for anybody else."""
    with (repo_root / "config" / "admission" / "lockclaim-bounds.yaml").open() as f:
        policy, binding = list(yaml.safe_load_all(f))
    name = f"kubelock-lockclaim-bounds-{namespace}"
    policy["metadata"]["name"] = name
    variables = policy["spec"]["variables"]
    [maximum] = [v for v in variables if v["name"] == "maxTtlSeconds"]
    assert maximum["expression"] == "86400"  # the value the chart substitutes with {{ .Values.maxTtlSeconds }}
    maximum["expression"] = str(max_ttl)
    binding["metadata"]["name"] = name
    binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    return policy, binding


def test_lease_and_wait_bounds(team: Team, repo_root: Path) -> None:
    alice = team.alice
    alice.claim("day", RESOURCE, ALICE, ttl=86400)  # the default maxTtlSeconds is allowed
    status, message = refusal(lambda: alice.claim("longer", "deploy://api-staging", ALICE, ttl=86401))
    assert status == 422
    assert "spec.ttlSeconds: Invalid value: 86401: ttlSeconds must be between 1 and 86400" in message

    # Renewal markers are small: the operator keeps each one and copies it into the claim's status, so
    # markers as large as annotations may be (256 KiB) would let one agent fill the operator's memory.
    alice.renew("day", "x" * 128)
    status, message = refusal(lambda: alice.renew("day", "y" * 200_000))
    assert status == 422
    assert (
        "the annotation kubelock.dev/renew is a renewal marker of at most 128 characters (any new value renews, "
        "e.g. the time: kubelock.dev/renew=$(date +%s)), not 200000"
    ) in message

    # The installed policy holds the default (it equals the CRD's ceiling, which refuses first) ...
    admission = AdmissionregistrationV1Api(team.admin)
    installed = admission.read_validating_admission_policy("kubelock-lockclaim-bounds").to_dict()
    assert {"name": "maxTtlSeconds", "expression": "86400"} in installed["spec"]["variables"]
    bound = admission.read_validating_admission_policy_binding("kubelock-lockclaim-bounds").to_dict()
    assert bound["spec"]["policy_name"] == "kubelock-lockclaim-bounds"
    assert bound["spec"]["validation_actions"] == ["Deny"]

    # ... and a cluster configured with maxTtlSeconds 600 refuses more.
    policy, binding = scoped_bounds_policy(repo_root, team.namespace, 600)
    admission.create_validating_admission_policy(V1ValidatingAdmissionPolicy.model_validate(policy))
    try:
        admission.create_validating_admission_policy_binding(V1ValidatingAdmissionPolicyBinding.model_validate(binding))

        def enforced() -> bool:
            return dry_run_status(alice, {"resource": "probe://bounds", "holder": ALICE, "ttlSeconds": 601}) == 422

        wait_until(enforced, what="maxTtlSeconds 600 to be enforced", timeout=DEADLINE)

        status, message = refusal(lambda: alice.claim("long", "deploy://api-staging", ALICE, ttl=601))
        assert status == 422
        assert (
            "spec.ttlSeconds 601 exceeds maxTtlSeconds 600 (the longest lease this cluster grants): "
            "set spec.ttlSeconds to at most 600 and renew the claim to keep the lock longer"
        ) in message

        status, message = refusal(
            lambda: alice.claim("patient", "deploy://api-staging", ALICE, wait=True, wait_timeout=601)
        )
        assert status == 422
        assert (
            "spec.waitTimeoutSeconds 601 exceeds maxTtlSeconds 600: set spec.waitTimeoutSeconds to at most 600"
            in message
        )

        alice.claim("short", "deploy://api-staging", ALICE, ttl=600, wait=True, wait_timeout=600)
        # A claim made before the bound was lowered can still be renewed, but not lengthened.
        alice.renew("day")
        lengthen = {"spec": {"ttlSeconds": 900}}
        status, message = refusal(lambda: patch_claim(alice.api.api_client, team.namespace, "day", lengthen))
        assert status == 422
        assert "spec.ttlSeconds 900 exceeds maxTtlSeconds 600" in message
    finally:
        with contextlib.suppress(ApiException):
            admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
        with contextlib.suppress(ApiException):
            admission.delete_validating_admission_policy(policy["metadata"]["name"])


# ---- the operator under its least-privilege role -------------------------------------------------

# What operator/kubelock/operator/ and kube/ call, plus kopf's discovery: nothing more.
EXPECTED_OPERATOR_RULES = [
    {"apiGroups": ["kubelock.dev"], "resources": ["lockclaims"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": ["kubelock.dev"], "resources": ["lockclaims/status"], "verbs": ["update"]},
    {
        "apiGroups": ["kubelock.dev"],
        "resources": ["resourcelocks"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete", "operate"],
    },
    {"apiGroups": ["kubelock.dev"], "resources": ["lockpolicies"], "verbs": ["list", "watch"]},
    {"apiGroups": ["kubelock.dev"], "resources": ["lockpolicies/status"], "verbs": ["patch"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
]


def token_kubeconfig(control_plane: Cluster, token: str, path: Path) -> Path:
    """A kubeconfig for the cluster under test that authenticates with ``token`` only."""
    if hasattr(control_plane, "token_kubeconfig"):
        written: Path = control_plane.token_kubeconfig(token, path)
        return written
    # An existing cluster (KUBELOCK_TEST_KUBECONFIG): its current context's cluster, this token as user.
    with Path(control_plane.kubeconfig).open() as f:
        config: Body = yaml.safe_load(f)
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "token", "user": {"token": token}}],
                "contexts": [{"name": "token", "context": {"cluster": cluster["name"], "user": "token"}}],
                "current-context": "token",
            }
        )
    )
    return path


def operator_role(repo_root: Path) -> Body:
    with (repo_root / "config" / "rbac" / "operator-role.yaml").open() as f:
        role: Body = yaml.safe_load(f)
    return role


def test_operator_role_grants_only_what_the_code_uses(repo_root: Path) -> None:
    role = operator_role(repo_root)

    assert role["kind"] == "ClusterRole"
    assert role["metadata"]["name"] == "kubelock-operator"
    assert role["rules"] == EXPECTED_OPERATOR_RULES
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        assert "resourceNames" not in rule
        assert "nonResourceURLs" not in rule


@pytest.fixture
def restricted_operator(
    control_plane: Cluster, admin_api: ApiClient, team: Team, sa_token: SaToken, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, authenticated as a ServiceAccount bound to exactly config/rbac/operator-role.yaml."""
    namespace = team.namespace
    token = sa_token(namespace, "kubelock-operator")
    user = service_account_user(namespace, "kubelock-operator")
    rbac = RbacAuthorizationV1Api(admin_api)
    binding = f"kubelock-operator-{namespace}"
    rbac.create_cluster_role_binding(
        V1ClusterRoleBinding(
            metadata=V1ObjectMeta(name=binding), role_ref=cluster_role("kubelock-operator"), subjects=[subject(user)]
        )
    )
    try:
        for verb, resource in (("watch", "lockclaims"), ("operate", "resourcelocks")):
            wait_allowed(admin_api, user, None, verb, resource)
        kubeconfig = token_kubeconfig(control_plane, token, tmp_path / "operator.kubeconfig")
        with OperatorProcess(kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as operator:
            yield operator
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(binding)


def test_operator_works_under_exactly_its_role(team: Team, restricted_operator: OperatorProcess) -> None:
    a, b = team.agent("agent-a"), team.agent("agent-b")
    ref_a, ref_b = ("agent-a", team.uid("agent-a")), ("agent-b", team.uid("agent-b"))

    # grant
    a.claim("a", RESOURCE, team.holder("agent-a"), pod=ref_a)
    held = status_of(a.wait_phase("a", "Held", DEADLINE))
    lock = held["lockName"]
    assert team.viewer.lock(lock)["spec"]["holder"] == team.holder("agent-a")

    # conflict
    b.claim("b", RESOURCE, team.holder("agent-b"), pod=ref_b)
    assert status_of(b.wait_phase("b", "Rejected", DEADLINE))["holder"] == team.holder("agent-a")

    # renew, then release: the lock goes with the claim
    a.renew("a")
    a.delete("a")
    wait_until(lambda: gone(lambda: team.viewer.lock(lock)), what=f"lock {lock} released", timeout=DEADLINE)

    # break: a lock admin records who and why, then deletes the lock
    b.claim("b2", RESOURCE, team.holder("agent-b"), pod=ref_b, wait=True)
    lock = status_of(b.wait_phase("b2", "Held", DEADLINE))["lockName"]
    record = {BREAK_ACTOR_ANNOTATION: "lockadmin", BREAK_REASON_ANNOTATION: "stuck deploy"}
    granted = team.viewer.lock(lock)
    # Never written since its creation, so its token is its resourceVersion: the record carries it.
    assert granted["spec"]["fencingToken"] == 0
    token = int(granted["metadata"]["resourceVersion"])
    annotate = {"metadata": {"annotations": record}}
    status, message = refusal(lambda: patch_lock(team.lockadmin.api.api_client, team.namespace, lock, annotate))
    assert status == 422
    assert f"so its fencing token is its resourceVersion, {token}: this first write must record it" in message
    patch_lock(team.lockadmin.api.api_client, team.namespace, lock, {**annotate, "spec": {"fencingToken": token}})
    team.lockadmin.delete_lock(lock)
    assert status_of(b.wait_phase("b2", "Revoked", DEADLINE))["reason"] == "LockBroken"

    # the holder pod ends: its claim is revoked (the operator reads and watches holder pods)
    a.claim("a2", "deploy://api-staging", team.holder("agent-a"), pod=ref_a)
    a.wait_phase("a2", "Held", DEADLINE)
    CoreV1Api(team.admin).delete_namespaced_pod("agent-a", team.namespace)
    assert status_of(a.wait_phase("a2", "Revoked", DEADLINE))["reason"] == "HolderPodTerminated"

    # a quota: the reservation goes to the quota ledger (a Lease the admission policy keeps for the
    # operator), the claim over the limit is refused
    policy = {"apiVersion": "kubelock.dev/v1alpha1", "kind": "LockPolicy", "metadata": {"name": "quota"},
              "spec": {"resourcePrefix": "quota://", "maxHeldPerHolder": 1}}
    CustomObjectsApi(team.admin).create_namespaced_custom_object(
        "kubelock.dev", "v1alpha1", team.namespace, "lockpolicies", policy
    )
    leases = CoordinationV1Api(team.admin)

    def ledgers() -> list[str]:
        names = [lease.metadata.name for lease in leases.list_namespaced_lease(team.namespace).items]
        return [name for name in names if name.startswith("kubelock-quota")]

    # The operator records, under its role, that it governs with the policy (lockpolicies/status):
    # every claim made after that is decided under it, so its first grant writes a ledger.
    def observed() -> object:
        body = CustomObjectsApi(team.admin).get_namespaced_custom_object(
            "kubelock.dev", "v1alpha1", team.namespace, "lockpolicies", "quota")
        return (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"]

    wait_until(observed, what="the operator records the policy's generation", timeout=DEADLINE)
    b.claim("q-first", "quota://first", team.holder("agent-b"), pod=ref_b)
    b.wait_phase("q-first", "Held", DEADLINE)
    assert ledgers()
    b.claim("q-over", "quota://over", team.holder("agent-b"), pod=ref_b)
    over = status_of(b.wait_phase("q-over", "Rejected", DEADLINE))
    assert over["reason"] == "QuotaExceeded", over

    # ... and it recorded Events all along
    events = CoreV1Api(team.admin).list_namespaced_event(team.namespace).items
    assert {"Granted", "LockBroken"} <= {e.reason for e in events}
    # The holder, and a viewer, read why its claim ended (`kubectl describe lockclaim` lists these).
    for reader in (b.api.api_client, team.viewer.api.api_client):
        wait_until(
            lambda reader=reader: "LockBroken" in {e.reason for e in CoreV1Api(reader).list_namespaced_event(
                team.namespace, field_selector="involvedObject.name=b2").items},
            what="the LockBroken Event of b2", timeout=DEADLINE,
        )

    restricted_operator.stop()
    log = restricted_operator.log_text()
    for sign in ("Forbidden", "forbidden", "Not enough permissions", "Traceback"):
        assert sign not in log, log


def test_a_deleted_pods_token_stops_working_and_its_claims_end(team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    """What a pod-bound token can still do after its pod is deleted: until the API server's
    authenticator sees the pod gone, it is accepted (the window docs/security.md states); its claims
    in the pod's namespace end with the pod (podRef), and a renewal is refused once the token is."""
    a = team.agent("agent-a")
    a.claim("mine", RESOURCE, team.holder("agent-a"), pod=("agent-a", team.uid("agent-a")))
    CoreV1Api(team.admin).delete_namespaced_pod("agent-a", team.namespace, grace_period_seconds=0)
    deleted = time.monotonic()
    accepted_until = deleted
    status = 0
    while time.monotonic() - deleted < DEADLINE:
        try:
            a.renew("mine")
            accepted_until = time.monotonic()
        except ApiException as error:
            status = int(error.status)
            if status == 401:
                break
        time.sleep(0.2)
    window = accepted_until - deleted
    with capsys.disabled():
        print(f"\na deleted pod's token was accepted for {window:.1f}s after the deletion")
    assert status == 401, status
    assert window < 30
