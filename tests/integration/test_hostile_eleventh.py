"""A hostile agent, an eleventh pass (docs/security.md, "A hostile agent, an eleventh pass
(2026-11-28)"). The static users alice and bob bound to `kubelock-agent`, against the real API server
and an operator of this tree: a claim whose watch event is longer than a client's line buffer; what
admission lets into the text the commands print; what one namespace's agent is told of another's.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from kubelock.testbed import ControlPlane
from tests.integration.conftest import UserApi
from tests.support.access import agents_namespace, bind_agents
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klh11-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
Body = dict[str, Any]


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with agents_namespace(admin_api, PREFIX) as name:
        yield name


def _annotate(api: ApiClient, namespace: str, name: str, annotations: dict[str, str]) -> None:
    CustomObjectsApi(api).patch_namespaced_custom_object(
        "kubelock.dev", "v1alpha1", namespace, "lockclaims", name, {"metadata": {"annotations": annotations}}
    )


def test_the_largest_claim_an_agent_can_make_stops_nobody(
    ns: str, user_api: UserApi, prefix_operator: OperatorProcess, control_plane: ControlPlane
) -> None:
    """A claim of 16 resources of 1 024 bytes, each `<` but its start (the API server's JSON writes a `<`
    as `\\u003c`, six bytes), and 16 384 characters of annotations that JSON escapes the same way:
    the longest watch event an agent's claim can be, in the spec and again in the status."""
    alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), ns)
    log_start = len(prefix_operator.log_text())
    resources = [f"mr://{n:02d}/" + "<" * (1024 - 8) for n in range(16)]
    body = {
        "apiVersion": "kubelock.dev/v1alpha1",
        "kind": "LockClaim",
        "metadata": {"name": "big", "annotations": {"n": "\x01" * 16_000}},
        "spec": {"resources": resources, "holder": "user:alice/w", "ttlSeconds": 300},
    }
    api = CustomObjectsApi(user_api("alice"))
    api.create_namespaced_custom_object("kubelock.dev", "v1alpha1", ns, "lockclaims", body)
    alice.wait_phase("big", "Held", DEADLINE)
    raw = subprocess.run(
        [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig), "get", "--raw",
         f"/apis/kubelock.dev/v1alpha1/namespaces/{ns}/lockclaims/big"], check=True, capture_output=True).stdout
    # 490 451 bytes here: 34 KB below the 512 KiB line a client's reader takes by default (aiohttp's);
    # the client reads longer lines too (`kube.client.WATCH_LINE_BYTES`).
    print(f"stored claim as JSON: {len(raw)} bytes")
    assert len(raw) > 400_000
    for n in range(3):
        _annotate(user_api("alice"), ns, "big", {"m": str(n)})
    started = time.monotonic()
    bob.claim("after", "mr://00/b", "user:bob/w", ttl=300)
    held = bob.wait_for("after", lambda x: phase_of(x) is not None, DEADLINE, "answered")
    assert phase_of(held) == "Held", status_of(held)
    took = time.monotonic() - started
    bob.claim("next", resources[3], "user:bob/w2", ttl=300, wait=True)
    bob.wait_phase("next", "Pending", DEADLINE)
    alice.delete("big")
    bob.wait_phase("next", "Held", DEADLINE)
    log = prefix_operator.log_text()[log_start:]
    assert "Traceback" not in log, log[-4000:]
    print(f"bob's try-lock answered in {took:.2f} s")


# Terminal escapes (ESC, the 8-bit CSI), a line break, the line and paragraph separators, a
# right-to-left override, a zero-width space and a BOM: each would rewrite or hide what `kubelock
# status`, `list` or `why` print if it reached a resource, a holder or an instance.
HOSTILE_TEXT = ("\x1b[2J", "\x9b31m", "\n", "\r", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\u0085",
                "\x07", "\t", " ")


@pytest.mark.parametrize("text", HOSTILE_TEXT, ids=[f"U+{ord(t[0]):04X}" for t in HOSTILE_TEXT])
def test_text_a_terminal_would_obey_is_refused_at_admission(ns: str, user_api: UserApi, text: str) -> None:
    alice = Locks(user_api("alice"), ns)
    tries: list[tuple[str, dict[str, Any]]] = [
        ("resource", {"resource": f"mr://esc/{text}x", "holder": "user:alice/w"}),
        ("resources", {"resources": ["mr://esc/ok", f"mr://esc/{text}y"], "holder": "user:alice/w"}),
        ("instance", {"resource": "mr://esc/z", "holder": f"user:alice/w{text}"}),
    ]
    for field, spec in tries:
        body = {"apiVersion": "kubelock.dev/v1alpha1", "kind": "LockClaim",
                "metadata": {"name": f"esc-{field}"}, "spec": {"ttlSeconds": 60, **spec}}
        with pytest.raises(ApiException) as refused:
            alice.api.create_namespaced_custom_object("kubelock.dev", "v1alpha1", ns, "lockclaims", body)
        assert refused.value.status == 422, (field, refused.value.body)
        assert "control characters" in str(refused.value.body), (field, refused.value.body)
    assert not [c for c in alice.claims() if c["metadata"]["name"].startswith("esc-")]


def test_an_agent_is_told_nothing_of_another_namespace(
    admin_api: ApiClient, ns: str, user_api: UserApi, prefix_operator: OperatorProcess
) -> None:
    """bob has `kubelock-agent` in his namespace only; alice holds the same URI in hers and waits behind
    herself there. Nothing bob can read names her, her namespace or her lock."""
    mine = ns
    with temporary_namespace(admin_api, PREFIX) as other:
        bind_agents(admin_api, other, ("alice",))
        alice, bob = Locks(user_api("alice"), other), Locks(user_api("bob"), mine)
        alice.claim("secret-held", "mr://shared/x", "user:alice/secret", ttl=300)
        alice.wait_phase("secret-held", "Held", DEADLINE)
        alice.claim("secret-wait", "mr://shared/x", "user:alice/secret2", ttl=300, wait=True)
        alice.wait_phase("secret-wait", "Pending", DEADLINE)
        bob.claim("mine", "mr://shared/x", "user:bob/w", ttl=300)
        held = bob.wait_phase("mine", "Held", DEADLINE)
        bob.claim("behind", "mr://shared/x", "user:bob/w2", ttl=300, wait=True)
        bob.wait_phase("behind", "Pending", DEADLINE)
        seen = str([*bob.claims(), *bob.locks()])
        for word in (other, "secret"):  # (alice has claims of her own in bob's namespace too)
            assert word not in seen, (word, seen)
        assert status_of(held)["fencingToken"] >= 1
        events = CoreV1Api(user_api("bob")).list_namespaced_event(mine).items
        assert all("secret" not in str(e) and other not in str(e) for e in events), events
        # and bob reads nothing of hers
        for call in (lambda: bob.api.list_namespaced_custom_object("kubelock.dev", "v1alpha1", other, "lockclaims"),
                     lambda: CoreV1Api(user_api("bob")).list_namespaced_event(other),
                     lambda: bob.api.list_cluster_custom_object("kubelock.dev", "v1alpha1", "lockclaims")):
            with pytest.raises(ApiException) as refused:
                call()
            assert refused.value.status == 403
        for name in ("mine", "behind"):
            bob.delete(name)
        for name in ("secret-held", "secret-wait"):
            alice.delete(name)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _try_lock_seconds(locks: Locks, name: str, resource: str) -> float:
    started = time.monotonic()
    locks.claim(name, resource, "user:bob/w", ttl=300)
    locks.wait_phase(name, "Held", DEADLINE)
    took = time.monotonic() - started
    locks.delete(name)
    return took


DENSE = 200  # waiters, each of 16 resources


def test_a_dense_wait_for_graph_leaves_another_namespace_served(
    admin_api: ApiClient, ns: str, user_api: UserApi, prefix_operator: OperatorProcess
) -> None:
    """alice's holders h0 … h199 each hold one resource, and each but h0 waits with a claim of 16
    resources: those of the 16 holders before it. No cycle, but every new wait's search for one reaches
    every holder before it (16 edges each). bob try-locks in another namespace before, during, after."""
    assert prefix_operator.popen is not None
    pid = prefix_operator.popen.pid
    log_start = len(prefix_operator.log_text())
    with temporary_namespace(admin_api, PREFIX) as other:
        bind_agents(admin_api, other, ("bob",))
        alice, bob = Locks(user_api("alice"), ns), Locks(user_api("bob"), other)
        before = [_try_lock_seconds(bob, f"before-{i}", f"mr://o/{i}") for i in range(8)]
        cpu_start, started = _cpu_seconds(pid), time.monotonic()
        for i in range(DENSE):
            alice.claim(f"dense-h{i}", f"mr://dense/{i}", f"user:alice/h{i}", ttl=600)
        alice.wait_phases([f"dense-h{i}" for i in range(DENSE)], "Held", 600)
        clients = [Locks(user_api("alice"), ns) for _ in range(4)]

        def wait_on_earlier(i: int) -> None:
            body = {"apiVersion": "kubelock.dev/v1alpha1", "kind": "LockClaim", "metadata": {"name": f"dense-w{i}"},
                    "spec": {"resources": [f"mr://dense/{j}" for j in range(max(0, i - 16), i)],
                             "holder": f"user:alice/h{i}", "ttlSeconds": 600, "wait": True}}
            clients[i % 4].api.create_namespaced_custom_object("kubelock.dev", "v1alpha1", ns, "lockclaims", body)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            creating = pool.map(wait_on_earlier, range(1, DENSE))
            during = [_try_lock_seconds(bob, f"during-{i}", f"mr://o/d{i}") for i in range(8)]
            list(creating)
        alice.wait_phases([f"dense-w{i}" for i in range(1, DENSE)], "Pending", 600)
        built_in, cpu_built = time.monotonic() - started, _cpu_seconds(pid) - cpu_start
        # Churn at the head: h0 lets go. h1's wait (its only resource was h0's) is granted, or ends
        # Deadlocked: the four threads create the waits in no set order, and a later holder's claim
        # queued first on the freed resource reserves it while it waits for what h1 holds.
        cpu_churn = _cpu_seconds(pid)
        churn = [_try_lock_seconds(bob, f"churn-{i}", f"mr://o/c{i}") for i in range(4)]
        alice.delete("dense-h0")
        alice.wait_for("dense-w1", lambda x: phase_of(x) in ("Held", "Deadlocked"), DEADLINE, "decided")
        cpu_churn = _cpu_seconds(pid) - cpu_churn
        for claim in alice.claims():
            if claim["metadata"]["name"].startswith("dense-"):
                alice.delete(claim["metadata"]["name"])
        wait_until(lambda: not [c for c in alice.claims() if c["metadata"]["name"].startswith("dense-")],
                   "the dense claims gone", 600)
        after = [_try_lock_seconds(bob, f"after-{i}", f"mr://o/a{i}") for i in range(8)]
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().strip()
    print(f"\ndense graph of {DENSE}: built in {built_in:.1f} s, operator CPU {cpu_built:.1f} s; head churn CPU "
          f"{cpu_churn:.2f} s; bob's try-lock s (median/max) before {sorted(before)[4]:.2f}/{max(before):.2f} "
          f"during {sorted(during)[4]:.2f}/{max(during):.2f} churn {sorted(churn)[2]:.2f}/{max(churn):.2f} "
          f"after {sorted(after)[4]:.2f}/{max(after):.2f}; load {load}")
    log = prefix_operator.log_text()[log_start:]
    assert "Traceback" not in log, log[-4000:]
    # Before one pass answered for all of a claim's resources (`WaitForGraph.reaches`): 42.6 s of the
    # operator's CPU to build the graph, and bob's try-lock up to 88 s. Now 5.5 s and 2.9 s (load 3.1).
    assert cpu_built < 20, cpu_built
    assert max(during) < 30 and max(after) < 30, (during, after)
