"""A hostile agent, a fifth pass (docs/security.md, "A hostile agent, a fifth pass (2026-11-27)").

Agents bound to `kubelock-agent` (two ServiceAccounts of one namespace, and the static users alice and
bob), against the real API server and an operator of this tree: every write a second identity of the
namespace may try on the first one's claim, a claim deleted and made again at once under its name
(by its holder, by another identity, and while the operator is down), a claim whose deletion waits
(a foreground deletion held up by a dependent, a lock admin's finalizer) and what its holder is told,
and the bound on a claim's labels and annotations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import (
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
    V1ConfigMap,
    V1DeleteOptions,
    V1ObjectMeta,
    V1PolicyRule,
    V1Role,
    V1RoleBinding,
    V1RoleRef,
)

from kubelock.api.constants import GROUP, VERSION
from kubelock.api.fencing import lock_token
from kubelock.sdk import LockClient
from kubelock.testbed import ControlPlane
from tests.support.access import bind, refusal, service_account_user, subject, wait_allowed
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klh5-"
DEADLINE = 60.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
Body = dict[str, Any]
UserApi = Callable[[str], ApiClient]
SaApi = Callable[..., ApiClient]
ALICE, BOB = "user:alice/w1", "user:bob/w1"



@pytest.fixture
def ns(admin_api: ApiClient, prefix_operator: OperatorProcess) -> Iterator[str]:
    with temporary_namespace(admin_api, PREFIX) as name:
        users = ("alice", "bob", service_account_user(name, "agent-a"), service_account_user(name, "agent-b"))
        for user in users:
            bind(admin_api, name, "kubelock-agent", user)
        bind(admin_api, name, "kubelock-admin", "lockadmin")
        for user in users:
            wait_allowed(admin_api, user, name, "create", "lockclaims")
        wait_allowed(admin_api, "lockadmin", name, "delete", "resourcelocks")
        try:
            yield name
        finally:
            release_finalizers(admin_api, name)


def release_finalizers(admin_api: ApiClient, ns: str) -> None:
    """Finalizers a test left would keep its namespace from going."""
    custom, core = CustomObjectsApi(admin_api), CoreV1Api(admin_api)
    clear = {"metadata": {"finalizers": None}}
    for claim in custom.list_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims")["items"]:
        if claim["metadata"].get("finalizers"):
            custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", claim["metadata"]["name"], clear)
    for cm in core.list_namespaced_config_map(ns).items:
        if cm.metadata.finalizers:
            core.patch_namespaced_config_map(cm.metadata.name, ns, clear)


def grant_config_maps(admin_api: ApiClient, ns: str, user: str) -> None:
    """What the Kubernetes role `edit` gives an agent beside kubelock-agent: ConfigMaps of its own,
    with whatever ownerReferences and finalizers it likes."""
    rbac = RbacAuthorizationV1Api(admin_api)
    rbac.create_namespaced_role(ns, V1Role(
        metadata=V1ObjectMeta(name="configmaps"),
        rules=[V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["create", "get", "patch", "delete"])],
    ))
    rbac.create_namespaced_role_binding(ns, V1RoleBinding(
        metadata=V1ObjectMeta(name="configmaps"),
        role_ref=V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmaps"),
        subjects=[subject(user)],
    ))
    wait_allowed(admin_api, user, ns, "create", "configmaps", group="")


def patch(api: ApiClient, ns: str, name: str, body: Body, *, status: bool = False) -> object:
    """A merge patch of the claim (or of its status subresource)."""
    custom = CustomObjectsApi(api)
    call = custom.patch_namespaced_custom_object_status if status else custom.patch_namespaced_custom_object
    return call(GROUP, VERSION, ns, "lockclaims", name, body)


def token_of(body: Body) -> int:
    return int(status_of(body)["fencingToken"])


def the_lock(admin: Locks) -> Body:
    locks = admin.locks()
    assert len(locks) == 1, locks
    return locks[0]


# ---- another identity in my namespace -----------------------------------------------------------


def test_a_second_service_account_in_the_namespace_cannot_touch_the_first_ones_claim(
    ns: str, sa_api: SaApi, admin_api: ApiClient
) -> None:
    """Two ServiceAccounts bound to kubelock-agent in one namespace: RBAC lets both patch and delete
    every claim there; kubelock-lockclaim-holder refuses B each write on A's claim, whatever it
    changes (spec, labels, annotations, finalizers, ownerReferences) or however it deletes, and
    kubelock-operator-writes (RBAC first) its status."""
    a_api, b_api = sa_api(ns, "agent-a"), sa_api(ns, "agent-b")
    a, b = Locks(a_api, ns), Locks(b_api, ns)
    holder = f"sa:{ns}/agent-a/w1"
    a.claim("mine", "r://mine", holder, ttl=600)
    held = a.wait_phase("mine", "Held", DEADLINE)
    only = f'only the holder "{holder}" (any instance of its identity, or a lock admin) may'
    you = f"you are sa:{ns}/agent-b"
    custom = CustomObjectsApi(b_api)

    def delete(**options: object) -> object:
        return custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", "mine", **options)

    attempts: dict[str, Callable[[], object]] = {
        "delete": lambda: delete(),
        "delete, dry run": lambda: delete(dry_run="All"),
        "delete, foreground": lambda: delete(body=V1DeleteOptions(propagation_policy="Foreground")),
        "delete, orphan": lambda: delete(body=V1DeleteOptions(propagation_policy="Orphan")),
        "delete, uid precondition": lambda: delete(
            body=V1DeleteOptions(preconditions={"uid": held["metadata"]["uid"]})),
        "renew": lambda: b.renew("mine"),
        "label": lambda: patch(b_api, ns, "mine", {"metadata": {"labels": {"team": "b"}}}),
        "annotation": lambda: patch(b_api, ns, "mine", {"metadata": {"annotations": {"note": "b was here"}}}),
        "remove the renewal marker": lambda: patch(
            b_api, ns, "mine", {"metadata": {"annotations": {"kubelock.dev/renew": None}}}),
        "finalizer": lambda: patch(b_api, ns, "mine", {"metadata": {"finalizers": ["example.com/keep"]}}),
        "ownerReference": lambda: patch(b_api, ns, "mine", {"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "00000000-0000-0000-0000-000000000001"}]}}),
        "ttlSeconds": lambda: patch(b_api, ns, "mine", {"spec": {"ttlSeconds": 1}}),
    }
    for what, attempt in attempts.items():
        status, message = refusal(attempt)
        assert status == 403, (what, message)
        assert only in message and you in message, (what, message)
    # The status subresource: RBAC gives agents no lockclaims/status at all.
    status, message = refusal(lambda: patch(b_api, ns, "mine", {"status": {"phase": "Released"}}, status=True))
    assert status == 403, message
    # Its name: taken while A's claim exists.
    assert refusal(lambda: b.claim("mine", "r://mine", f"sa:{ns}/agent-b/w1"))[0] == 409

    after = a.get("mine")
    assert after["metadata"]["resourceVersion"] == held["metadata"]["resourceVersion"]
    assert phase_of(after) == "Held"
    assert the_lock(Locks(admin_api, ns))["spec"]["claimRef"]["uid"] == held["metadata"]["uid"]
    # A itself, under another instance, may (instances of one identity are one trust domain).
    Locks(sa_api(ns, "agent-a"), ns).delete("mine")
    wait_until(lambda: not Locks(admin_api, ns).locks(), "A's lock to go with its claim", DEADLINE)


# ---- names and uids -----------------------------------------------------------------------------


def test_a_claim_made_again_at_once_under_its_name_is_a_new_grant_with_a_new_token(
    ns: str, user_api: UserApi, admin_api: ApiClient
) -> None:
    """The lock names its claim by name and uid; the operator follows claims by uid. A claim deleted
    and made again under the same name before the operator has seen the deletion (by its holder, or
    by another identity) inherits nothing: its grant is a new one, with a new, larger token."""
    alice, bob, admin = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns), Locks(admin_api, ns)
    first = alice.claim("c", "r://c", ALICE, ttl=600)
    first_token = token_of(alice.wait_phase("c", "Held", DEADLINE))

    alice.delete("c")
    second = alice.claim("c", "r://c", ALICE, ttl=600)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    second_token = token_of(alice.wait_phase("c", "Held", DEADLINE))
    assert second_token > first_token
    lock = the_lock(admin)
    assert (lock["spec"]["claimRef"]["uid"], lock_token(lock)) == (second["metadata"]["uid"], second_token)

    # Another identity takes the name the moment it is free.
    alice.delete("c")
    third = bob.claim("c", "r://c", BOB, ttl=600)
    third_token = token_of(bob.wait_phase("c", "Held", DEADLINE))
    assert third_token > second_token
    lock = the_lock(admin)
    assert (lock["spec"]["holder"], lock["spec"]["claimRef"]["uid"]) == (BOB, third["metadata"]["uid"])


def test_a_claim_made_again_under_its_name_while_the_operator_is_down_inherits_nothing(
    ns: str, user_api: UserApi, admin_api: ApiClient, prefix_operator: OperatorProcess
) -> None:
    """The operator starts with a lock whose claimRef names `c` with the old uid, and a claim `c` of
    another identity with a new uid: the lock is released (its claim is gone) and the new claim is
    granted a new token, never the old lock."""
    alice, bob, admin = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns), Locks(admin_api, ns)
    alice.claim("c", "r://c", ALICE, ttl=600)
    old_token = token_of(alice.wait_phase("c", "Held", DEADLINE))
    old_lock = the_lock(admin)
    prefix_operator.stop()
    try:
        alice.delete("c")
        new = bob.claim("c", "r://c", BOB, ttl=600)
        assert the_lock(admin)["metadata"]["uid"] == old_lock["metadata"]["uid"]  # nothing released it yet
    finally:
        prefix_operator.start()
    body = bob.wait_phase("c", "Held", DEADLINE)
    assert token_of(body) > old_token
    # The lock may be handed over in place (same object, new holder, new token): never with the old grant.
    lock = the_lock(admin)
    assert lock_token(lock) == token_of(body)
    assert (lock["spec"]["holder"], lock["spec"]["claimRef"]["uid"]) == (BOB, new["metadata"]["uid"])


# ---- a claim whose deletion waits ---------------------------------------------------------------


def anchor(api: ApiClient, ns: str, claim: Body) -> None:
    """A ConfigMap the claim owns, which blocks the claim's foreground deletion and never goes (its
    own finalizer): the claim then stays with its deletionTimestamp set."""
    CoreV1Api(api).create_namespaced_config_map(ns, V1ConfigMap(metadata=V1ObjectMeta(
        name=f"anchor-{claim['metadata']['name']}",
        finalizers=["example.com/hold"],
        owner_references=[{"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim",
                           "name": claim["metadata"]["name"], "uid": claim["metadata"]["uid"],
                           "blockOwnerDeletion": True}],
    )))


def test_a_claim_whose_deletion_waits_releases_its_lock_at_the_delete_request(
    ns: str, user_api: UserApi, admin_api: ApiClient
) -> None:
    """Release is the delete request, not the object's end: alice (who may also write ConfigMaps, as
    with the role `edit`) makes her claim outlive its deletion (a foreground delete held up by a
    dependent of hers with a finalizer). Bob, waiting, gets the lock at once; her renewals of the
    claim that stays do not bring the grant back."""
    grant_config_maps(admin_api, ns, "alice")
    alice, bob, admin = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns), Locks(admin_api, ns)
    mine = alice.claim("kept", "r://kept", ALICE, ttl=600)
    alice.wait_phase("kept", "Held", DEADLINE)
    bob.claim("next", "r://kept", BOB, wait=True)
    bob.wait_for("next", lambda c: phase_of(c) == "Pending" and status_of(c).get("queuePosition") == 1,
                 DEADLINE, "queued first")
    anchor(user_api("alice"), ns, mine)

    CustomObjectsApi(user_api("alice")).delete_namespaced_custom_object(
        GROUP, VERSION, ns, "lockclaims", "kept", body=V1DeleteOptions(propagation_policy="Foreground"))
    bob.wait_phase("next", "Held", DEADLINE)
    kept = alice.get("kept")  # still there, being deleted
    assert kept["metadata"].get("deletionTimestamp") and "foregroundDeletion" in kept["metadata"]["finalizers"]
    lock = the_lock(admin)
    assert lock["spec"]["holder"] == BOB

    alice.renew("kept")  # admitted (she owns it), and read as nothing: the claim is released
    wait_until(lambda: phase_of(bob.get("next")) == "Held" and the_lock(admin)["spec"]["holder"] == BOB,
               "bob to keep the lock", 5)
    assert the_lock(admin)["metadata"]["uid"] == lock["metadata"]["uid"]


def test_a_holder_is_told_at_once_that_its_claim_was_deleted_though_the_claim_stays(
    ns: str, control_plane: ControlPlane, user_api: UserApi, admin_api: ApiClient
) -> None:
    """A lock admin's finalizer on alice's claim (an audit controller's, say), then a delete of the
    claim (by the lock admin, releasing on alice's behalf): the operator releases the lock and bob
    gets it. Alice's lease must be lost then, not when its last confirmed expiry passes: until the
    fix, the SDK read the claim that stayed (status Held, renewals admitted) as still held, and two
    holders each believed they held the lock for up to a lease."""
    bob, admin = Locks(user_api("bob"), ns), Locks(admin_api, ns)
    lost = threading.Event()
    errors: list[str] = []

    def on_lost(error: object) -> None:
        errors.append(str(error))
        lost.set()

    client = LockClient(kubeconfig=str(control_plane.user_kubeconfig("alice")), namespace=ns, instance="w1",
                        decision_timeout=DEADLINE)
    try:
        with client.lock("r://audited", ttl=120, on_lost=on_lost) as lease:
            name = lease.claim_name
            custom = CustomObjectsApi(user_api("lockadmin"))
            custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", name,
                                                  {"metadata": {"finalizers": ["example.com/audit"]}})
            bob.claim("next", "r://audited", BOB, wait=True)
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", name)
            bob.wait_phase("next", "Held", DEADLINE)
            assert the_lock(admin)["spec"]["holder"] == BOB
            # Within a minute, half the 120 s lease: the loss comes from the claim's deletion, not from
            # the lease running out (a watch event can come seconds late on a loaded machine).
            assert lost.wait(DEADLINE), "alice's lease still calls itself held while bob holds the lock"
            assert lease.lost.is_set()
            assert "was deleted" in errors[0], errors
    finally:
        client.close()
        release_finalizers(admin_api, ns)


# ---- claim metadata ----------------------------------------------------------------------------


def claim_with(name: str, metadata: Body) -> Body:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name, **metadata},
            "spec": {"resource": f"r://{name}", "holder": ALICE}}


def test_a_claims_labels_and_annotations_are_bounded_at_admission(ns: str, user_api: UserApi) -> None:
    """kubelock-lockclaim-bounds: at most 16384 characters of labels and annotations (keys and
    values, the renewal marker aside), on create and on any update that adds to them; a claim over
    the bound from before the rule is still renewed. For everyone: a lock admin too."""
    alice = Locks(user_api("alice"), ns)
    custom = alice.api
    bounded = "a LockClaim's labels and annotations hold at most 16384 characters"

    def create(name: str, metadata: Body, api: CustomObjectsApi = custom) -> object:
        return api.create_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", claim_with(name, metadata))

    key = "example.com/pad"
    at_bound = {"annotations": {key: "x" * (16384 - len(key))}}
    over = {"annotations": {key: "x" * (16385 - len(key))}}
    labels = {"labels": {f"l{i}.example.com/k": "v" * 63 for i in range(300)}}  # 300 x 80 characters
    create("at-bound", at_bound)
    for name, metadata in (("over", over), ("huge", {"annotations": {key: "x" * (250 * 1024)}}),
                           ("labels", labels)):
        status, message = refusal(lambda: create(name, metadata))  # noqa: B023 (called at once)
        assert status == 422 and bounded in message, (name, message)
    status, message = refusal(lambda: create("admin-over", over, CustomObjectsApi(user_api("lockadmin"))))
    assert status == 422 and bounded in message

    # Renewal markers are bounded on their own (128) and do not count here: the claim at the bound
    # is renewed; one more character of anything else is refused.
    alice.wait_phase("at-bound", "Held", DEADLINE)
    alice.renew("at-bound", "r" * 128)
    status, message = refusal(lambda: patch(custom.api_client, ns, "at-bound",
                                            {"metadata": {"labels": {"a": "b"}}}))
    assert status == 422 and "not 16386" in message, message
    # Shrinking is always allowed.
    patch(custom.api_client, ns, "at-bound", {"metadata": {"annotations": {key: "small"}}})
