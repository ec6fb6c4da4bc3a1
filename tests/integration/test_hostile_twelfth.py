"""A hostile agent, a twelfth pass (docs/security.md, "A hostile agent, a twelfth pass (2026-11-28)").
The static users alice and bob bound to `kubelock-agent` (and `lockadmin` to `kubelock-admin`), against
the real API server and an operator of this tree: a process of an instance whose claim ended renewing
the claim made anew under its name; lease and wait bounds at the admission limits; leases that end,
or are renewed, while the operator is down; finalizer, label and owner games on a lock; URIs at the
length limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException

from kubelock.domain.resource import lock_name, normalise
from kubelock.testbed import ControlPlane
from tests.integration.conftest import UserApi
from tests.support.access import static_agents_namespace, user_environment
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.commands import python_json
from tests.support.operator import OperatorProcess

PREFIX = "klh12-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
Body = dict[str, Any]
GROUP, VERSION = "kubelock.dev", "v1alpha1"


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    with static_agents_namespace(admin_api, control_plane, PREFIX, lock_admin=True) as name:
        yield name


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def refused(call: Any, *args: Any, **kwargs: Any) -> ApiException:
    """The API server's refusal of `call(*args, **kwargs)`."""
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value


# One process of alice's instance took a lock; its claim ended (released on its behalf, or its lease
# ran out) and the instance took the resource again, under the same claim name (it is derived from
# holder and URI). The first lease object, which does not know yet, sends its renewal as a lease
# does: the patch of `kubelock.dev/renew` by name, unconditionally.
STALE_RENEWAL = """
import asyncio, json
from kubelock.sdk import LockError
from kubelock.sdk.client import AsyncLockClient

async def main():
    async with AsyncLockClient(decision_timeout=120) as client:
        first = await client.acquire_claim({uri!r}, wait=False, ttl=60)
        await client.release({uri!r})
        second = await client.acquire_claim({uri!r}, wait=False, ttl=60)
        out = {{"first": [first.uid, first.fencing_token], "second": [second.uid, second.fencing_token]}}
        marker = "stale-" + client.renewal_marker()
        try:
            renewed = await client.renew_claim(first, marker, conditional=False)
            out["stale"] = {{"renewed": [renewed.uid, renewed.fencing_token, renewed.renew_request]}}
        except LockError as error:
            out["stale"] = {{"error": type(error).__name__, "message": str(error)}}
        now = await client.get({uri!r})
        out["now"] = [now.uid, now.renew_request]
        out["marker"] = marker
        await client.release({uri!r})
        print(json.dumps(out))

asyncio.run(main())
"""


def test_a_stale_lease_never_renews_the_claim_made_anew_under_its_name(
    ns: str, control_plane: ControlPlane
) -> None:
    env = user_environment(control_plane, "alice", ns, "stale")
    answer = python_json(STALE_RENEWAL.format(uri="mr://stale/renewal"), env)
    print(f"\nstale renewal: {answer}")
    first_uid, second_uid = answer["first"][0], answer["second"][0]
    assert first_uid != second_uid and answer["second"][1] > answer["first"][1], answer
    # Before: the stale renewal was admitted onto the new claim (another grant, another token) and
    # renewed it; the lease went on believing in its own grant.
    assert answer["stale"].get("error") == "NotFound", answer
    assert "now is another" in answer["stale"]["message"], answer
    assert answer["now"][0] == second_uid and answer["now"][1] != answer["marker"], answer  # not renewed


def test_lease_and_wait_bounds_at_the_admission_limits(ns: str, user_api: UserApi) -> None:
    alice = Locks(user_api("alice"), ns)
    for ttl in (0, -1, 86401):
        error = refused(alice.claim, f"ttl-{ttl + 10}", f"mr://bounds/ttl{ttl}", "user:alice/w", ttl=ttl)
        assert error.status == 422, (ttl, error.body)
    for wait_timeout in (-1, 86401):
        error = refused(alice.claim, f"wt-{wait_timeout + 10}", f"mr://bounds/wt{wait_timeout}", "user:alice/w",
                        wait=True, wait_timeout=wait_timeout)
        assert error.status == 422, (wait_timeout, error.body)
    # At the bounds: admitted and served.
    alice.claim("ttl-max", "mr://bounds/max", "user:alice/w", ttl=86400)
    held = alice.wait_phase("ttl-max", "Held", DEADLINE)
    status = status_of(held)
    assert moment(status["expiresAt"]) - moment(status["renewedAt"]) == pytest.approx(86400, abs=1), status
    alice.claim("ttl-min", "mr://bounds/min", "user:alice/w", ttl=1)
    alice.wait_for("ttl-min", lambda x: phase_of(x) in ("Held", "Expired"), DEADLINE, "answered")
    alice.wait_phase("ttl-min", "Expired", DEADLINE)  # never renewed: a one-second lease ends
    # A waiter with the longest wait, and one with waitTimeoutSeconds 0 (refused or answered at once).
    alice.claim("wt-max", "mr://bounds/max", "user:alice/w2", wait=True, wait_timeout=86400)
    alice.wait_for("wt-max", lambda x: status_of(x).get("reason") == "Queued", DEADLINE, "Queued")
    try:
        alice.claim("wt-zero", "mr://bounds/max", "user:alice/w3", wait=True, wait_timeout=0)
    except ApiException as error:
        zero = f"refused {error.status}"
    else:
        zero = str(phase_of(alice.wait_for("wt-zero", lambda x: phase_of(x) not in (None, "Pending"), DEADLINE,
                                           "an end")))
    print(f"\nwaitTimeoutSeconds 0: {zero}")
    assert zero in ("refused 422", "TimedOut"), zero
    # The lease's length raised past the bound on a held claim: refused; lowered to 1: the end in force
    # stays until the next renewal, then the lease is one second.
    patch = {"spec": {"ttlSeconds": 86401}}
    error = refused(alice.api.patch_namespaced_custom_object, GROUP, VERSION, ns, "lockclaims", "ttl-max", patch)
    assert error.status == 422, error.body
    alice.api.patch_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", "ttl-max", {"spec": {"ttlSeconds": 1}})
    time.sleep(3)
    assert phase_of(alice.get("ttl-max")) == "Held"
    assert status_of(alice.get("ttl-max"))["expiresAt"] == status["expiresAt"]
    alice.renew("ttl-max")
    alice.wait_phase("ttl-max", "Expired", DEADLINE)
    alice.wait_phase("wt-max", "Held", DEADLINE)
    for name in ("ttl-max", "ttl-min", "wt-max"):
        alice.delete(name)
    if zero == "TimedOut":
        alice.delete("wt-zero")


def test_leases_that_end_or_are_renewed_while_the_operator_is_down(
    ns: str, user_api: UserApi, prefix_operator: OperatorProcess
) -> None:
    alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns)
    # 20 s, not 8: the three grants seen Held and a waiter queued behind each (a dozen requests, each
    # taking seconds on a loaded machine) before the operator stops; with 8 s a lease could end first,
    # and its waiter was granted instead of queued.
    alice.claim("down-lapsed", "mr://down/lapsed", "user:alice/w", ttl=20)
    alice.claim("down-late", "mr://down/late", "user:alice/w", ttl=20)
    alice.claim("down-kept", "mr://down/kept", "user:alice/w", ttl=60)
    told = {n: status_of(alice.wait_phase(n, "Held", DEADLINE)) for n in ("down-lapsed", "down-late", "down-kept")}
    for name, resource in (("w-lapsed", "mr://down/lapsed"), ("w-late", "mr://down/late"), ("w-kept", "mr://down/kept")):
        bob.claim(name, resource, "user:bob/w", ttl=60, wait=True)
        bob.wait_for(name, lambda x: status_of(x).get("reason") == "Queued", DEADLINE, "Queued")
    prefix_operator.stop()
    try:
        # Renewed in time by the holder's own account, while nobody observes it: `down-late` just
        # before its end, `down-kept` long before its end; `down-lapsed` never.
        wait_until(lambda: time.time() >= moment(told["down-late"]["expiresAt"]) - 2, "2 s before the end", 60)
        alice.renew("down-late", "renewed-while-down")
        alice.renew("down-kept", "renewed-while-down")
        wait_until(lambda: time.time() >= moment(told["down-late"]["expiresAt"]) + 2, "past the end", 60)
    finally:
        prefix_operator.start()
    lapsed = alice.wait_phase("down-lapsed", "Expired", DEADLINE)
    late = alice.wait_for("down-late", lambda x: phase_of(x) != "Held", DEADLINE, "decided")
    kept = alice.wait_for("down-kept", lambda x: status_of(x).get("observedRenew") == "renewed-while-down",
                          DEADLINE, "renewed")
    print(f"\nlapsed: {status_of(lapsed)}\nlate: {status_of(late)}\nkept: {status_of(kept)}")
    # The end the holder was told is the end enforced: a renewal the operator did not see before it
    # does not revive the lease (the holder's SDK gives the lease up at that end too).
    assert phase_of(late) == "Expired", status_of(late)
    assert phase_of(kept) == "Held" and moment(status_of(kept)["expiresAt"]) > moment(told["down-kept"]["expiresAt"])
    for name, old in (("w-lapsed", told["down-lapsed"]), ("w-late", told["down-late"])):
        granted = status_of(bob.wait_phase(name, "Held", DEADLINE))
        assert granted["fencingToken"] > old["fencingToken"], (granted, old)
    assert phase_of(bob.get("w-kept")) == "Pending"
    for locks, names in ((alice, ("down-lapsed", "down-late", "down-kept")), (bob, ("w-lapsed", "w-late", "w-kept"))):
        for name in names:
            locks.delete(name)


def test_a_locks_finalizers_labels_and_owners_are_the_operators(
    ns: str, user_api: UserApi
) -> None:
    alice, admin = Locks(user_api("alice"), ns), Locks(user_api("lockadmin"), ns)
    alice.claim("meta", "mr://meta/lock", "user:alice/w", ttl=300)
    held = alice.wait_phase("meta", "Held", DEADLINE)
    name = status_of(held)["lockName"]
    lock = alice.lock(name)
    patches: dict[str, Body] = {
        "finalizer": {"metadata": {"finalizers": ["example.com/keep"]}},
        "label": {"metadata": {"labels": {"kubelock.dev/holder-hash": "x"}}},
        "annotation": {"metadata": {"annotations": {"example.com/note": "x"}}},
        "owner": {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": ns,
                                                    "uid": lock["metadata"]["uid"]}]}},
        "holder": {"spec": {"holder": "user:alice/other"}},
    }
    seen: dict[str, str] = {}
    for who, locks in (("alice", alice), ("lockadmin", admin)):
        for what, patch in patches.items():
            error = refused(locks.api.patch_namespaced_custom_object, GROUP, VERSION, ns, "resourcelocks", name, patch)
            seen[f"{who} {what}"] = f"{error.status}"
            assert error.status == 403 if who == "alice" else error.status in (403, 422), (who, what, error.body)
    print(f"\nlock metadata writes: {seen}")
    after = alice.lock(name)
    assert after["metadata"].get("finalizers") == lock["metadata"].get("finalizers")
    assert after["metadata"].get("labels") == lock["metadata"].get("labels")
    assert after["metadata"].get("ownerReferences") == lock["metadata"].get("ownerReferences")
    # The claim: the holder may label and annotate it; finalizers and foreign owners stay refused.
    claim_patch = {"metadata": {"finalizers": ["example.com/keep"]}}
    error = refused(alice.api.patch_namespaced_custom_object, GROUP, VERSION, ns, "lockclaims", "meta", claim_patch)
    assert error.status in (403, 422), error.body
    owner = {"metadata": {"ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceLock",
                                               "name": name, "uid": lock["metadata"]["uid"]}]}}
    error = refused(alice.api.patch_namespaced_custom_object, GROUP, VERSION, ns, "lockclaims", "meta", owner)
    assert error.status in (403, 422), error.body
    alice.delete("meta")
    wait_until(lambda: not [x for x in alice.locks() if x["metadata"]["name"] == name], "the lock gone", DEADLINE)


def test_uris_at_the_length_limit_are_one_lock_per_resource(ns: str, user_api: UserApi) -> None:
    alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns)
    base = "mr://long/" + "é" * 500  # two bytes each in UTF-8
    at_limit = base + "x" * (1024 - len(base.encode()))
    assert len(at_limit.encode()) == 1024
    other = at_limit[:-1] + "y"
    slash = at_limit[:-1] + "/"  # 1024 bytes ending in one `/`: the resource without it
    alice.claim("long-a", at_limit, "user:alice/w", ttl=300)
    alice.wait_phase("long-a", "Held", DEADLINE)
    bob.claim("long-b", other, "user:bob/w", ttl=300)
    bob.wait_phase("long-b", "Held", DEADLINE)  # another resource: the digest covers every byte
    assert lock_name(normalise(at_limit)) != lock_name(normalise(other))
    bob.claim("long-slash", slash, "user:bob/w2", ttl=300)
    answered = bob.wait_for("long-slash", lambda x: phase_of(x) is not None, DEADLINE, "answered")
    assert phase_of(answered) == "Held", status_of(answered)  # `…é/` is `…é`, which nobody holds
    bob.claim("long-slash-2", at_limit[:-1], "user:bob/w3", ttl=300)
    rejected = bob.wait_for("long-slash-2", lambda x: phase_of(x) is not None, DEADLINE, "answered")
    assert phase_of(rejected) == "Rejected", status_of(rejected)
    for size in (1025, 1026):
        longer = at_limit + "z" * (size - 1024)
        error = refused(bob.claim, f"long-{size}", longer, "user:bob/w", ttl=300)
        assert error.status == 422, error.body
    # Multi-byte at the edge: a 1023-byte start and a two-byte character is 1025 bytes.
    edge = at_limit[:-1] + "é"
    assert len(edge.encode()) == 1025
    error = refused(bob.claim, "long-edge", edge, "user:bob/w", ttl=300)
    assert error.status == 422 and "byte" in str(error.body), error.body
    for locks, names in ((alice, ("long-a",)), (bob, ("long-b", "long-slash", "long-slash-2"))):
        for name in names:
            locks.delete(name)


# A lock admin asks the holders of a resource to give it back. Between its listing of the claims and
# its request, the holder's claim ended and a claim of the same name was made afresh (here by the
# lock admin itself, which may create claims for anyone). Its request, made with the listed claim's
# uid, must not land on the new claim, nor end the command in an error.
STALE_REVOCATION = """
import asyncio, json, time
from kubelock.kube import paths
from kubelock.sdk import LockError
from kubelock.sdk.admin import AsyncAdmin
from kubelock.sdk.client import AsyncLockClient

NS, NAME, URI = {ns!r}, {name!r}, {uri!r}

async def main():
    async with AsyncLockClient(decision_timeout=120) as client:
        admin = AsyncAdmin(client)
        listed = await admin.claims(NS)
        body = await client.kube.get(paths.claims(NS, NAME))
        await client.kube.delete(paths.claims(NS, NAME))
        fresh = {{"apiVersion": "kubelock.dev/v1alpha1", "kind": "LockClaim", "metadata": {{"name": NAME}},
                 "spec": body["spec"]}}
        await client.kube.create(paths.claims(NS), fresh)
        deadline = time.monotonic() + 120
        while True:
            now = await client.kube.get(paths.claims(NS, NAME))
            if (now.get("status") or {{}}).get("phase") == "Held" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)

        async def stale(namespace):
            return listed
        admin.claims = stale
        out = {{"old": body["metadata"]["uid"], "new": now["metadata"]["uid"]}}
        try:
            asked = await admin.request_revocation(URI, grace_seconds=300, reason="stale list", namespace=NS)
            out["asked"] = [a.claim.uid for a in asked]
        except LockError as error:
            out["error"] = f"{{type(error).__name__}}: {{error}}"
        after = await client.kube.get(paths.claims(NS, NAME))
        out["annotations"] = sorted(k for k in after["metadata"].get("annotations", {{}}) if "revoke" in k)
        print(json.dumps(out))

asyncio.run(main())
"""


def test_a_revocation_request_made_on_a_stale_listing_skips_a_claim_made_afresh(
    ns: str, control_plane: ControlPlane, user_api: UserApi
) -> None:
    alice = Locks(user_api("alice"), ns)
    alice.claim("revoked-anew", "mr://stale/revocation", "user:alice/w", ttl=300)
    alice.wait_phase("revoked-anew", "Held", DEADLINE)
    env = user_environment(control_plane, "lockadmin", ns, "admin")
    answer = python_json(STALE_REVOCATION.format(ns=ns, name="revoked-anew", uri="mr://stale/revocation"), env)
    print(f"\nstale revocation: {answer}")
    assert answer["old"] != answer["new"], answer
    # Before: "InvalidInput: … metadata.uid: Invalid value: …: field is immutable" (the API server
    # answers a patch's uid precondition with 422, not the 409 the command expected).
    assert "error" not in answer, answer
    assert answer["asked"] == [] and answer["annotations"] == [], answer
    assert phase_of(alice.get("revoked-anew")) == "Held"
    alice.delete("revoked-anew")
