"""A hostile agent, once more (docs/security.md, "A hostile agent, once more (2026-11-27)").

Agents bound to `kubelock-agent` only (the static users alice and bob), against the real API server
and an operator of this tree: one resource spelled two ways (Unicode NFC and NFD, scheme case, a
trailing slash, percent-encoding), a claim created or patched with a status of its own making,
LockPolicies written by agents (also with the Kubernetes role `edit`), a claim in a namespace the
agent is not bound in, claims carrying as much metadata as the API server takes, and the messages
of `kubelock-lock-token`, which are built only for a refused write.
"""

from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi

from kubelock.api.constants import GROUP, VERSION
from kubelock.domain.resource import lock_name, normalise
from kubelock.sdk import InvalidInput, LockClient
from kubelock.testbed import ControlPlane
from tests.support.access import agents_namespace, refusal
from tests.support.claims import Locks, phase_of, status_of
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klh4-"
DEADLINE = 60.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
Body = dict[str, Any]
UserApi = Callable[[str], ApiClient]

NFC = "github://acme/caf\u00e9/issues/1"
NFD = unicodedata.normalize("NFD", NFC)
ALICE, BOB = "user:alice/w1", "user:bob/w1"



@pytest.fixture
def ns(admin_api: ApiClient, prefix_operator: OperatorProcess) -> Iterator[str]:
    with agents_namespace(admin_api, PREFIX) as name:
        yield name


@pytest.fixture
def alice(user_api: UserApi, ns: str) -> Locks:
    return Locks(user_api("alice"), ns)


@pytest.fixture
def bob(user_api: UserApi, ns: str) -> Locks:
    return Locks(user_api("bob"), ns)


def locks_of(admin_api: ApiClient, ns: str) -> set[str]:
    return {lock["metadata"]["name"] for lock in Locks(admin_api, ns).locks()}


# ---- one resource, two spellings ----------------------------------------------------------------


def test_one_resource_spelled_two_ways_is_one_lock_or_refused(
    alice: Locks, bob: Locks, admin_api: ApiClient, ns: str, control_plane: ControlPlane
) -> None:
    alice.claim("a", NFC, ALICE)
    assert phase_of(alice.wait_phase("a", "Held", DEADLINE)) == "Held"

    # The same name with `e` and a combining accent: refused, told the NFC spelling, holds nothing.
    bob.claim("b-nfd", NFD, BOB)
    refused = status_of(bob.wait_phase("b-nfd", "Rejected", DEADLINE))
    assert refused["reason"] == "InvalidSpec", refused
    assert "is not in Unicode normal form NFC: from character 18, U+0065 U+0301 is U+00E9 in NFC" in refused["message"]
    # Waiting would not get it either: a waiter is refused as well, not queued for later.
    bob.claim("b-nfd-wait", NFD, BOB, wait=True)
    assert status_of(bob.wait_phase("b-nfd-wait", "Rejected", DEADLINE))["reason"] == "InvalidSpec"

    # Scheme case and one trailing slash are the same lock: bob is told alice holds it.
    bob.claim("b-case", "GitHub://acme/caf\u00e9/issues/1/", BOB)
    busy = status_of(bob.wait_phase("b-case", "Rejected", DEADLINE))
    assert (busy["reason"], busy["holder"]) == ("HeldByAnotherHolder", ALICE), busy

    # Percent-encoding is another resource (the URI is opaque past the scheme): documented, not refused.
    bob.claim("b-pct", "github://acme/caf%C3%A9/issues/1", BOB)
    assert phase_of(bob.wait_phase("b-pct", "Held", DEADLINE)) == "Held"

    assert lock_name(normalise(NFD)) not in locks_of(admin_api, ns)
    assert lock_name(normalise(NFC)) in locks_of(admin_api, ns)

    # The SDK refuses the NFD spelling before it sends anything.
    client = LockClient(kubeconfig=str(control_plane.user_kubeconfig("bob")), namespace=ns, instance="w2",
                        decision_timeout=DEADLINE)
    try:
        with pytest.raises(InvalidInput, match="not in Unicode normal form NFC"):
            client.acquire(NFD, wait=False)
    finally:
        client.close()
    assert {c["metadata"]["name"] for c in bob.claims()} == {"a", "b-nfd", "b-nfd-wait", "b-case", "b-pct"}


# ---- a status of the agent's own making ------------------------------------------------------


def test_an_agent_cannot_give_its_claim_a_status(alice: Locks, bob: Locks, ns: str) -> None:
    bob.claim("held", "deploy://api-prod", BOB)
    bob.wait_phase("held", "Held", DEADLINE)

    # A status in the create's body is dropped by the API server (the status subresource), and the
    # operator answers the claim as any other.
    forged = {"phase": "Held", "holder": ALICE, "fencingToken": 999999, "lockName": "deploy-api-prod"}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": "forged"},
            "spec": {"resource": "deploy://api-prod", "holder": ALICE, "wait": False}, "status": forged}
    alice.api.create_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", body)
    answered = status_of(alice.wait_phase("forged", "Rejected", DEADLINE))
    assert (answered["reason"], answered["holder"]) == ("HeldByAnotherHolder", BOB), answered
    assert "fencingToken" not in answered

    # A status in a patch of the claim itself is ignored too (only /status writes it, and the agent
    # may not: test_security.test_agent_cannot_write_locks_or_claim_status).
    alice.api.patch_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", "forged", {"status": forged})
    assert status_of(alice.get("forged"))["phase"] == "Rejected"


# ---- LockPolicies and other namespaces ---------------------------------------------------------


def lock_policy(name: str) -> Body:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockPolicy", "metadata": {"name": name},
            "spec": {"resourcePrefix": "deploy://", "maxHeldPerHolder": 100, "lockDelaySeconds": 60}}


def test_agents_read_but_never_write_lock_policies(
    alice: Locks, admin_api: ApiClient, user_api: UserApi, ns: str, repo_root: Path
) -> None:
    CustomObjectsApi(admin_api).create_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", lock_policy("set"))
    api = CustomObjectsApi(user_api("alice"))
    listed = api.list_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies")["items"]
    assert [p["metadata"]["name"] for p in listed] == ["set"]
    for verb, call in (
        ("create", lambda: api.create_namespaced_custom_object(
            GROUP, VERSION, ns, "lockpolicies", lock_policy("mine"))),
        ("patch", lambda: api.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "lockpolicies", "set", {"spec": {"lockDelaySeconds": 0}})),
        ("delete", lambda: api.delete_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", "set")),
    ):
        status, message = refusal(call)
        assert status == 403, (verb, message)
        assert f'User "alice" cannot {verb} resource "lockpolicies" in API group "kubelock.dev"' in message
    # Nor through the Kubernetes roles `edit` and `view`: the kubelock roles that aggregate into them
    # read LockPolicies only (the bed runs no aggregation controller, so this reads the roles).
    for role in yaml.safe_load_all((repo_root / "config" / "rbac" / "user-roles.yaml").read_text()):
        labels = role["metadata"].get("labels") or {}
        if any(labels.get(f"rbac.authorization.k8s.io/aggregate-to-{r}") == "true" for r in ("edit", "view")):
            verbs = {v for rule in role["rules"] if "lockpolicies" in rule["resources"] for v in rule["verbs"]}
            assert verbs <= {"get", "list", "watch"}, (role["metadata"]["name"], verbs)


def test_an_agent_claims_only_where_it_is_bound(alice: Locks, admin_api: ApiClient, user_api: UserApi) -> None:
    # Another namespace (the operator's, say): kubelock-agent is bound per namespace.
    with temporary_namespace(admin_api, PREFIX) as elsewhere:
        there = Locks(user_api("alice"), elsewhere)
        status, message = refusal(lambda: there.claim("x", "deploy://api-prod", ALICE))
        assert status == 403
        assert f'User "alice" cannot create resource "lockclaims" in API group "kubelock.dev" in the namespace ' \
               f'"{elsewhere}"' in message


# ---- as much metadata as the API server takes ----------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_claims_with_huge_metadata_do_not_stall_other_agents(
    alice: Locks, bob: Locks, ns: str, prefix_operator: OperatorProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """As much metadata as admission lets through on each of alice's claims (16384 characters of
    annotations, kubelock-lockclaim-bounds; until that bound, 256 KiB of annotations and a thousand
    labels, what the API server takes, were measured here the same way): the operator keeps no more
    of a claim than it decides on, so bob's try-lock is answered as quickly. The same 20 claims and
    renewals without the metadata first, as the control."""
    assert prefix_operator.popen is not None
    pid = prefix_operator.popen.pid
    serial = iter(range(1_000_000))

    def answered_in() -> float:
        name = f"bob-{next(serial)}"
        started = time.monotonic()
        bob.claim(name, f"bob://{name}", BOB)
        bob.wait_for(name, lambda b: phase_of(b) is not None, DEADLINE, f"{name} answered")
        return round(time.monotonic() - started, 2)

    def twenty(kind: str, metadata: Body) -> dict[str, object]:
        cpu, rss = cpu_seconds(pid), rss_kib(pid)
        names = [f"{kind}-{i}" for i in range(20)]
        for name in names:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name, **metadata},
                    "spec": {"resource": f"{kind}://{name}", "holder": ALICE, "wait": False}}
            alice.api.create_namespaced_custom_object(GROUP, VERSION, ns, "lockclaims", body)
        during = [answered_in() for _ in range(3)]
        alice.wait_phases(names, "Held", DEADLINE)
        for name in names:  # renewals: each sends the whole object to the operator's watch again
            alice.renew(name, f"r-{name}")
        alice.wait_for(names[-1], lambda b: status_of(b).get("observedRenew") == f"r-{names[-1]}", DEADLINE)
        after = [answered_in() for _ in range(3)]
        return {"during": during, "after": after, "operator CPU s": round(cpu_seconds(pid) - cpu, 2),
                "RSS KiB": f"{rss} -> {rss_kib(pid)}"}

    before = [answered_in() for _ in range(3)]
    plain = twenty("plain", {})
    big = twenty("big", {"annotations": {"example.com/pad": "x" * (16384 - len("example.com/pad"))}})
    with capsys.disabled():
        print(f"\nbob's try-lock answered in (s): before {before}; 20 plain claims of alice, their creates and "
              f"renewals: {plain}; 20 claims with 16384 characters of annotations each: {big}; "
              f"load {os.getloadavg()[0]:.1f}")
    # A stall is minutes; a loaded machine makes every answer slow, the control's too: the bound is
    # 10 s or three times the slowest answer of the control, whichever is more.
    control = [*before, *plain["during"], *plain["after"]]  # type: ignore[misc]
    limit = max(10.0, 3 * max(control))
    assert max(big["after"]) < limit and max(big["during"]) < limit, (limit, big)  # type: ignore[call-overload]
    rss_before, rss_after = (int(v) for v in str(big["RSS KiB"]).split(" -> "))
    assert rss_after - rss_before < 64 * 1024  # a copy of the 20 claims' metadata would be ~10 MB a version


# ---- the messages of kubelock-lock-token -----------------------------------------------------------


def shared_lock(name: str, first: str, second: str) -> Body:
    now = "2030-01-01T00:00:00.000000Z"

    def grant(uid: str) -> Body:
        return {"holder": f"user:x/{uid[-1]}", "claimRef": {"name": f"c{uid[-1]}", "uid": uid},
                "leaseDurationSeconds": 600, "acquireTime": now, "renewTime": now, "fencingToken": 0,
                "mode": "Shared"}

    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceLock", "metadata": {"name": name},
            "spec": {"resource": "shared://tokens", **grant(first), "grants": [grant(second)], "holders": 2}}


def test_the_lock_token_policy_refuses_with_each_of_its_messages(admin_api: ApiClient, iso_ns: str) -> None:
    """Its messages are built only for a refused write (`(test) ? '' : message`): each still reads
    as before, word for word, and an allowed write goes through."""
    api = CustomObjectsApi(admin_api)  # a cluster admin: the policy holds for everyone
    ns = iso_ns  # no operator watches it: the hand-made lock stays as written
    first, second = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    name = "shared-tokens"
    made = api.create_namespaced_custom_object(GROUP, VERSION, ns, "resourcelocks", shared_lock(name, first, second))
    created = made["metadata"]["resourceVersion"]
    grants = made["spec"]["grants"]

    def patch(spec: Body) -> Body:
        return dict(api.patch_namespaced_custom_object(GROUP, VERSION, ns, "resourcelocks", name, {"spec": spec}))

    def refused(spec: Body) -> str:
        status, message = refusal(lambda: patch(spec))
        assert status == 422, message
        return message

    recorded = [{**grants[0], "fencingToken": int(created)}]
    # The first write must record the creation's version as the first grant's token.
    message = refused({"fencingToken": 7, "grants": recorded})
    assert (f"ResourceLock {name} has not been written since its creation, so its fencing token is its "
            f"resourceVersion, {created}: this first write must record it (spec.fencingToken: {created}), as "
            "kubectl lock unlock does") in message
    # ... and the version in each further grant with 0.
    message = refused({"fencingToken": int(created), "grants": [{**grants[0], "fencingToken": 5}]})
    assert (f"every write of ResourceLock {name} records its resourceVersion, {created}, as the token of each "
            "grant whose spec.grants[].fencingToken is 0, keeps every recorded token, and adds grants with "
            "fencingToken 0") in message
    written = patch({"fencingToken": int(created), "grants": recorded})  # as the operator writes it
    # A recorded token never changes.
    message = refused({"fencingToken": int(created) + 1})
    assert f"the fencing token of a ResourceLock never changes: spec.fencingToken of {name} is {created}" in message
    # The first grant goes and the second moves up: it keeps its token.
    moved = {**grants[0], "fencingToken": 1, "grants": None, "holders": 1}
    message = refused(moved)
    assert (f"a grant keeps its fencing token when it becomes the first grant of ResourceLock {name} (a token of 0 "
            f"is recorded as the resourceVersion, {written['metadata']['resourceVersion']})") in message
    kept = patch({**moved, "fencingToken": int(created)})
    assert kept["spec"]["claimRef"]["uid"] == second
