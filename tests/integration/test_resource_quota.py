"""Kubernetes ResourceQuotas beside kubelock, against the real API server and its resourcequota
controller (a control plane of its own, started with ``quotas=True``; the shared one runs no such
controller, and there a quota is never counted).

A quota on ``count/lockclaims.kubelock.dev`` (examples/resourcequota-lockclaims.yaml, applied as it is)
bounds the claims an agent can store at admission: the create past the count is refused with the API
server's own words, and the SDK and ``kubelock acquire`` say so (``Forbidden``, exit 3); a deleted
claim frees its slot; other namespaces and the operator's own writes are untouched. A quota on
``count/resourcelocks.kubelock.dev`` refuses the operator's grants: it fails closed and says why
(``LockRefused``), without retrying each second.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.reasons import Reason
from kubelock.domain.resource import lock_name
from kubelock.sdk import Forbidden, LockClient, TimedOut
from kubelock.testbed import ControlPlane
from kubelock.testbed.__main__ import MANIFESTS
from tests.support.access import bind, wait_allowed
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.commands import environment, run
from tests.support.namespaces import temporary_namespace
from tests.support.operator import REPO, OperatorProcess
from tests.support.planes import started

EXAMPLE = REPO / "examples" / "resourcequota-lockclaims.yaml"
CLAIMS = "count/lockclaims.kubelock.dev"
LOCKS = "count/resourcelocks.kubelock.dev"
DEADLINE = 60.0  # generous for 2 shared cores
DECISION = 30.0  # the SDK's wait for the operator's answer
REFUSED_WAIT = 20  # a wait that ends TimedOut under a used-up lock quota, told of the refusal first


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("quota-bed"), manifests=[REPO / m for m in MANIFESTS], quotas=True)
    with started(plane):
        yield plane


@pytest.fixture(scope="module")
def operator(bed: ControlPlane) -> Iterator[OperatorProcess]:
    with OperatorProcess(bed.kubeconfig, bed.workdir / "logs" / "operator.log") as process:
        yield process


@pytest.fixture(scope="module")
def admin(bed: ControlPlane) -> Iterator[ApiClient]:
    api: ApiClient = kubernetes.config.new_client_from_config(config_file=str(bed.kubeconfig))  # type: ignore[no-untyped-call]
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespaces(admin: ApiClient, bed: ControlPlane) -> Iterator[tuple[str, str]]:
    """Two namespaces where alice has the documented agent role (kubelock-agent) and nothing else."""
    with temporary_namespace(admin, "kl-quota-") as first, temporary_namespace(admin, "kl-quota-other-") as second:
        for namespace in (first, second):
            bind(admin, namespace, "kubelock-agent", "alice")
            wait_allowed(admin, "alice", namespace, "create", "lockclaims")
        yield first, second


def alice_api(bed: ControlPlane) -> ApiClient:
    api: ApiClient = kubernetes.config.new_client_from_config(config_file=str(bed.user_kubeconfig("alice")))  # type: ignore[no-untyped-call]
    return api


def quota(admin: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(CoreV1Api(admin).read_namespaced_resource_quota(name, namespace).to_dict())


def wait_used(admin: ApiClient, namespace: str, name: str, resource: str, used: int) -> None:
    """Wait for the resourcequota controller to count `used` of `resource` (status.hard set too: until
    the controller has filled it in, admission refuses every create the quota covers)."""

    def counted() -> bool:
        status = quota(admin, namespace, name).get("status") or {}
        return resource in (status.get("hard") or {}) and (status.get("used") or {}).get(resource) == str(used)

    wait_until(counted, what=f"quota {name} in {namespace} to count {used} of {resource}", timeout=DEADLINE)


def holder(instance: str) -> str:
    return f"user:alice/{instance}"


def test_a_quota_on_claims_refuses_the_create_past_its_count_at_admission(
    bed: ControlPlane, operator: OperatorProcess, admin: ApiClient, namespaces: tuple[str, str]
) -> None:
    namespace, other = namespaces
    bed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    example = yaml.safe_load(EXAMPLE.read_text())
    name, limit = example["metadata"]["name"], int(example["spec"]["hard"][CLAIMS])
    wait_used(admin, namespace, name, CLAIMS, 0)

    api = alice_api(bed)
    alice = Locks(api, namespace)
    try:
        # The agent creates claims, each its own resource, until the API server refuses one.
        made: list[str] = []
        refusal: ApiException | None = None
        for i in range(limit + 5):
            claim = f"c{i}"
            try:
                alice.claim(claim, f"mr://quota/{i}", holder(f"i{i}"))
            except ApiException as error:
                refusal = error
                break
            made.append(claim)
        assert len(made) == limit, f"{len(made)} claims stored under a quota of {limit}"
        assert refusal is not None and refusal.status == 403
        assert f"exceeded quota: {name}" in refusal.body and f"limited: {CLAIMS}={limit}" in refusal.body
        print(f"\nrefused create #{limit + 1}: {refusal.status} {json.loads(refusal.body)['message']}")

        # The operator's writes for the stored claims are status updates and lock creates: all pass
        # (the lock count is not in the quota, and a status write is no create).
        held = [alice.wait_phase(claim, "Held", timeout=DEADLINE) for claim in made]
        assert all(status_of(c)["fencingToken"] > 0 for c in held)
        assert len(alice.locks()) == limit
        assert (quota(admin, namespace, name)["status"]["used"] or {}) == {CLAIMS: str(limit)}

        # The SDK and the command say what the API server said, as a refusal of this identity.
        config = str(bed.user_kubeconfig("alice"))
        with (
            LockClient(kubeconfig=config, namespace=namespace, instance="sdk", decision_timeout=DECISION) as client,
            pytest.raises(Forbidden) as refused,
        ):
            client.acquire("mr://quota/sdk", wait=False)
        assert refused.value.reason == "Forbidden"
        assert f"exceeded quota: {name}" in refused.value.message
        command = run("kubelock", "acquire", "mr://quota/cli", "--json",
                      env=environment(config, namespace, instance="cli"))  # fmt: skip
        assert command.code == ExitCode.FORBIDDEN, command
        assert command.json["error"] == "Forbidden" and f"exceeded quota: {name}" in command.json["message"]
        assert "Traceback" not in command.stderr
        plain = run("kubelock", "acquire", "mr://quota/cli", env=environment(config, namespace, instance="cli"))
        assert plain.code == ExitCode.FORBIDDEN and "Traceback" not in plain.stderr
        assert f"exceeded quota: {name}" in plain.stderr

        # Another namespace without a quota is not bounded by this one.
        elsewhere = Locks(api, other)
        for i in range(limit + 1):
            elsewhere.claim(f"c{i}", f"mr://quota/{i}", holder(f"i{i}"))
        assert len(elsewhere.claims()) == limit + 1

        # A deleted claim frees its slot once the controller has counted the deletion.
        alice.delete(made[0])
        deleted = time.monotonic()
        wait_used(admin, namespace, name, CLAIMS, limit - 1)
        print(f"deletion counted by the resourcequota controller after {time.monotonic() - deleted:.1f} s")
        with LockClient(kubeconfig=config, namespace=namespace, instance="sdk", decision_timeout=DECISION) as client:
            result = client.acquire("mr://quota/sdk", wait=False)
            assert result.fencing_token > 0
            client.release("mr://quota/sdk")
    finally:
        api.close()  # type: ignore[no-untyped-call]


def test_a_quota_on_locks_makes_the_operator_fail_closed_and_say_why(
    bed: ControlPlane, operator: OperatorProcess, admin: ApiClient, namespaces: tuple[str, str]
) -> None:
    """An admin's `count/resourcelocks.kubelock.dev: 1` refuses the operator's second grant in the
    namespace: nothing is granted, a try-once claim ends Rejected `LockRefused` (the SDK's `Forbidden`,
    exit 3, with the API server's words), a waiter stays Pending with reason `LockRefused` (written
    once, with one Warning Event), its client says so while it waits and when it gives up, and the
    create is tried again every 10 s, not each second; once the first lock is released the waiter is
    granted."""
    namespace, _ = namespaces
    name = "locks"
    bed.kubectl("create", "quota", name, f"--hard={LOCKS}=1", "-n", namespace)
    wait_used(admin, namespace, name, LOCKS, 0)
    config = str(bed.user_kubeconfig("alice"))
    api = alice_api(bed)
    alice = Locks(api, namespace)
    try:
        with LockClient(kubeconfig=config, namespace=namespace, instance="first", decision_timeout=DECISION) as first:
            first.acquire("mr://locks/a", wait=False)
            wait_used(admin, namespace, name, LOCKS, 1)

            # A try-once claim on another (free) resource: refused by the API server, so Rejected.
            with LockClient(kubeconfig=config, namespace=namespace, instance="once",
                            decision_timeout=DECISION) as once:  # fmt: skip
                began = time.monotonic()
                with pytest.raises(Forbidden) as refused:
                    once.acquire("mr://locks/b", wait=False)
                assert time.monotonic() - began < DECISION  # an answer, not the SDK giving up on the operator
            assert refused.value.reason == Reason.LOCK_REFUSED.value
            assert "exceeded quota: locks" in refused.value.message
            command = run("kubelock", "acquire", "mr://locks/c", "--json",
                          env=environment(config, namespace, instance="cli"))  # fmt: skip
            assert command.code == ExitCode.FORBIDDEN, command
            assert command.json["error"] == Reason.LOCK_REFUSED.value
            assert "exceeded quota: locks" in command.json["message"]
            print(f"try-lock under a used-up lock quota: exit {command.code}, {command.stdout.strip()}")

            # A waiter stays Pending, and its status says why (reason LockRefused, the API server's
            # words), written once with one Event; the operator tries again seldom, not each second.
            waiter = f"w-{secrets.token_hex(3)}"
            alice.claim(waiter, "mr://locks/d", holder("waiter"), wait=True)
            refused_events = events_of(admin, namespace, waiter, Reason.LOCK_REFUSED.value)
            told = alice.wait_for(waiter, lambda b: status_of(b).get("reason") == Reason.LOCK_REFUSED.value,
                                  DEADLINE, "Pending LockRefused")
            assert phase_of(told) == "Pending" and "exceeded quota: locks" in status_of(told)["message"]
            wait_until(lambda: refused_events(), what="a LockRefused Event on the waiter", timeout=DEADLINE)
            time.sleep(12)  # more than one retry's wait
            again = alice.get(waiter)
            assert phase_of(again) == "Pending"
            assert again["metadata"]["resourceVersion"] == told["metadata"]["resourceVersion"]  # not rewritten
            assert [e.count in (None, 1) for e in refused_events()] == [True]
            log = operator.log_text()
            assert f"reconcile of mr://locks/d in {namespace} failed" not in log  # no retry each second
            assert log.count(f"{namespace}/{waiter} Pending for {holder('waiter')}: mr://locks/d (LockRefused)") == 1

            # A waiter's client is told while it waits and when it gives up: the command (stderr is no
            # terminal here: one line) and the SDK's TimedOut both say the grant was refused.
            # Waits long enough for the operator's refused create and its status to reach the client.
            command = run("kubelock", "acquire", "mr://locks/e", "--wait", "--timeout", str(REFUSED_WAIT),
                          env=environment(config, namespace, instance="cli-wait"))  # fmt: skip
            assert command.code == ExitCode.TIMED_OUT, command
            assert "kubelock: waiting for mr://locks/e: the API server refused to create lock" in command.stderr
            assert "not granted because the API server refused" in command.stderr, command.stderr
            assert command.stderr.count("exceeded quota: locks") == 2, command.stderr  # the line, the error
            print(f"waiter under a used-up lock quota: exit {command.code}, stderr {command.stderr.strip()!r}")
            with (
                LockClient(kubeconfig=config, namespace=namespace, instance="sdk-w", decision_timeout=DECISION) as sdk,
                pytest.raises(TimedOut) as gave_up,
            ):
                sdk.acquire("mr://locks/f", wait=True, timeout=REFUSED_WAIT)
            assert "not granted because the API server refused" in gave_up.value.message
            assert "exceeded quota: locks" in gave_up.value.message

            # The first lock released: a slot is free, and the waiter's next try takes it.
            first.release("mr://locks/a")
            released = time.monotonic()
        alice.wait_phase(waiter, "Held", timeout=DEADLINE)
        print(f"waiter granted {time.monotonic() - released:.1f} s after the held lock's release")
    finally:
        api.close()  # type: ignore[no-untyped-call]


def test_a_try_lock_of_several_resources_refused_half_way_holds_nothing(
    bed: ControlPlane, operator: OperatorProcess, admin: ApiClient, namespaces: tuple[str, str]
) -> None:
    """Room for one lock more under `count/resourcelocks.kubelock.dev: 2`: a try-lock of two free
    resources is granted the first and refused the second. It ends Rejected `LockRefused` (the SDK's
    `Forbidden`) and holds nothing: its first grant is removed, and the resource goes to the next."""
    namespace, _ = namespaces
    name = "locks"
    bed.kubectl("create", "quota", name, f"--hard={LOCKS}=2", "-n", namespace)
    wait_used(admin, namespace, name, LOCKS, 0)
    config = str(bed.user_kubeconfig("alice"))
    api = alice_api(bed)
    alice = Locks(api, namespace)
    try:
        with LockClient(kubeconfig=config, namespace=namespace, instance="first", decision_timeout=DECISION) as first:
            first.acquire("mr://set/a", wait=False)
            wait_used(admin, namespace, name, LOCKS, 1)
            with LockClient(kubeconfig=config, namespace=namespace, instance="set",
                            decision_timeout=DECISION) as both:  # fmt: skip
                began = time.monotonic()
                with pytest.raises(Forbidden) as refused:
                    both.try_acquire_all(["mr://set/b", "mr://set/c"])
                assert time.monotonic() - began < DECISION  # an answer, not the SDK giving up on the operator
            assert refused.value.reason == Reason.LOCK_REFUSED.value, refused.value
            assert "exceeded quota: locks" in refused.value.message

            # No grant of the set is left: only the first holder's lock stays, and it stays so.
            def others() -> list[str]:
                return sorted(n for lock in alice.locks() if (n := lock["metadata"]["name"]) != lock_name("mr://set/a"))

            wait_until(lambda: others() == [], what="no lock of the refused set", timeout=DEADLINE)
            time.sleep(3)
            assert others() == []
            # Its first resource is free again: another holder takes it once the quota counts the slot.
            wait_used(admin, namespace, name, LOCKS, 1)
            with LockClient(kubeconfig=config, namespace=namespace, instance="next",
                            decision_timeout=DECISION) as after:  # fmt: skip
                taken = after.try_acquire("mr://set/b")
                assert taken.ok, taken
                after.release("mr://set/b")
    finally:
        api.close()  # type: ignore[no-untyped-call]


def events_of(admin: ApiClient, namespace: str, claim: str, reason: str) -> Any:
    core = CoreV1Api(admin)

    def listed() -> list[Any]:
        items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={claim}").items
        return [e for e in items if e.reason == reason]

    return listed
