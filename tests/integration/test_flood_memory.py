"""Memory after a flood (docs/reliability.md, "Memory after a flood (2026-11-28)").

Rounds of 1 000 held claims, each on its own resource, new resources and claim names every round,
all deleted before the next: after each round's deletions the operator dumps its heap facts
(`bench/heapfacts`: VmRSS, pymalloc's arenas, objects by type, and the sizes of kubelock's and kopf's
own containers). What a deleted claim leaves in the operator's tables grows by a round's worth each
round; what the allocator keeps does not grow once its first flood has made the pages.

The same rounds, varied (smaller: `KUBELOCK_FLOOD_VARIED` claims a round): claims of several resources
(up to 16, some waiting on each other), claims under a LockPolicy quota (the quota ledger), kwok pods
as holders (the pod index), and claims spread over 20 namespaces made and deleted each round, each
namespace with a quota (its quota ledger).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from kubelock.api.constants import GROUP, VERSION
from kubelock.operator.cache import TOMBSTONES
from kubelock.operator.quotaledger import SWEEP_SECONDS
from tests.support.claims import Locks, phase_of, wait_until
from tests.support.namespaces import new_namespace, temporary_namespace
from tests.support.operator import REPO, OperatorProcess

PREFIX = "klfm-"
FLOOD = int(os.environ.get("KUBELOCK_FLOOD_CLAIMS", "1000"))
ROUNDS = int(os.environ.get("KUBELOCK_FLOOD_ROUNDS", "3"))
HEAPFACTS = REPO / "bench" / "heapfacts"
# Per-round growth of any own table that a round's 1 000 deleted claims may leave: a table that kept
# one entry per deleted claim (or resource) grows by FLOOD a round; bounded tables (the tombstones of
# recently deleted objects, capped) stop growing.
ALLOWED_GROWTH = 50


class _FactsOperator(OperatorProcess):
    """The operator with `bench/heapfacts` on its path (its `sitecustomize` answers SIGUSR2)."""

    def __init__(self, facts: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.facts = facts

    def argv(self) -> list[str]:
        return [
            "env", f"PYTHONPATH={REPO / 'operator'}:{HEAPFACTS}", f"KUBELOCK_HEAPFACTS_DIR={self.facts}",
            *super().argv(),
        ]

    def dump(self, tag: str) -> dict[str, Any]:
        assert self.popen is not None
        (self.facts / ".tag").write_text(tag)
        os.rename(self.facts / ".tag", self.facts / "tag")
        os.kill(self.popen.pid, signal.SIGUSR2)
        out = self.facts / f"{tag}.json"
        wait_until(out.exists, f"heap facts {tag}", 60)
        facts: dict[str, Any] = json.loads(out.read_text())
        return facts


@pytest.fixture(scope="module")
def operator(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_FactsOperator]:
    facts = tmp_path_factory.mktemp("heapfacts")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = _FactsOperator(facts, control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",))
    with op:
        yield op


def _flood(locks: Locks, round_no: int) -> None:
    clients = [Locks(locks.api.api_client, locks.namespace) for _ in range(4)]

    def create(i: int) -> None:
        clients[i % 4].claim(f"r{round_no}-{i}", f"mr://flood{round_no}/{i}", f"user:alice/w{i % 50}", ttl=600)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(FLOOD)))
    wait_until(lambda: sum(phase_of(c) == "Held" for c in locks.claims()) == FLOOD, "the flood held", 600)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: clients[i % 4].delete(f"r{round_no}-{i}"), range(FLOOD)))
    wait_until(lambda: not locks.claims() and not locks.locks(), "nothing left of the flood", 600)


@pytest.mark.timeout(600 + ROUNDS * 900)  # a round's 1 000 creates and deletions, on 2 loaded cores
def test_rounds_of_floods_leave_no_per_claim_entries_behind(admin_api: ApiClient, operator: _FactsOperator) -> None:
    rounds: list[dict[str, Any]] = []
    with temporary_namespace(admin_api, PREFIX) as ns:
        locks = Locks(admin_api, ns)
        time.sleep(2)
        rounds.append(operator.dump("start"))
        for round_no in range(ROUNDS):
            _flood(locks, round_no)
            time.sleep(5)  # the deletions' last handlers and Event writes done
            rounds.append(operator.dump(f"after-{round_no}"))
        rounds.append(operator.dump("after-collect"))
        rounds.append(operator.dump("after-collect-trim"))
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().strip()
    print(f"\nflood of {FLOOD} x {ROUNDS}, load {load}")
    for facts in rounds:
        pymalloc = facts["pymalloc"]
        print(
            f"{facts['tag']:>20}: RSS {facts['rss_mib']:.1f} MiB"
            + (f" (trimmed {facts['rss_after_trim_mib']:.1f})" if "rss_after_trim_mib" in facts else "")
            + f", blocks {facts['allocated_blocks']}, tracked {facts['tracked']},"
            f" arenas {pymalloc.get('# arenas allocated current')}, heap in use {facts['mallinfo']['uordblks']},"
            f" free {facts['mallinfo']['fordblks']}"
        )
    first, last = rounds[1], rounds[ROUNDS]
    grown = {
        key: (first["sizes"].get(key, 0), last["sizes"][key])
        for key in last["sizes"]
        if last["sizes"][key] - first["sizes"].get(key, 0) > 0
    }
    print("own containers grown from the first round's end to the last's:", json.dumps(grown, indent=1))
    types_first, types_last = dict(first["types"]), dict(last["types"])
    print("types grown:", {t: (types_first.get(t, 0), n) for t, n in types_last.items() if n > types_first.get(t, 0)})
    # The tombstones of deleted uids are capped (the oldest forgotten first): they fill up to the cap.
    assert last["sizes"].get("Cache._deleted", 0) <= TOMBSTONES
    kept = {
        key: sizes for key, sizes in grown.items() if sizes[1] - sizes[0] > ALLOWED_GROWTH and key != "Cache._deleted"
    }
    assert not kept, kept


VARIED = int(os.environ.get("KUBELOCK_FLOOD_VARIED", "120"))
VARIED_ROUNDS = int(os.environ.get("KUBELOCK_FLOOD_VARIED_ROUNDS", "3"))
POD_LABEL = {"kubelock.dev/lock-holder": "true"}
SPREAD = 20  # namespaces a round of the spread variation uses
# Bounded by design: the tombstones of deleted and refused claims (capped, the oldest forgotten), Events
# over their rate folded until the next flush, and a quota ledger's entries (16 shards a policy), which
# its next write drops once they are past their 30 s bound.
BOUNDED = (
    "Cache._deleted", "Cache._refused", "Folding._summaries", "_Summary.names", "_Known.entries",
    "RoutineLimit._buckets",  # the routine Events' rate of each namespace, capped (full ones forgotten first)
    # kopf's responses of one API context: each added open, the closed ones dropped at kopf's next
    # request; a dump after a quiet spell finds the last burst's (the spread's 20 namespaces') still there.
    "APIContext.responses",
)


def _claim_all(locks: Locks, name: str, resources: list[str], holder: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name},
        "spec": {"resources": resources, "holder": holder, "wait": True, "ttlSeconds": 600},
    }
    locks.api.create_namespaced_custom_object(GROUP, VERSION, locks.namespace, "lockclaims", body)


def _answered(locks: Locks, count: int) -> bool:
    claims = locks.claims()
    return len(claims) == count and all(phase_of(c) in ("Held", "Pending", "Rejected") for c in claims)


def _delete_all(locks: Locks) -> None:
    names = [c["metadata"]["name"] for c in locks.claims()]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(locks.delete, names))
    wait_until(lambda: not locks.claims() and not locks.locks(), "nothing left of the flood", 600)


def _several(admin_api: ApiClient, ns: str, round_no: int) -> None:
    """Claims of 2 to 16 resources out of a pool of VARIED, overlapping: some wait on others."""
    locks = Locks(admin_api, ns)
    claims = max(1, VARIED // 4)

    def create(i: int) -> None:
        width = 2 + i % 15
        resources = [f"mr://sev{round_no}/{(i * 7 + j) % VARIED}" for j in range(width)]
        _claim_all(locks, f"s{round_no}-{i}", resources, f"user:alice/w{i}")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(claims)))
    wait_until(lambda: _answered(locks, claims), "the claims of several resources answered", 600)
    _delete_all(locks)


def _quota(admin_api: ApiClient, ns: str, round_no: int) -> None:
    """Claims under a quota (`maxHeldPerHolder`, a capacity of 2): the ledger reserves each grant, the
    claims over the quota are rejected; the holders' identities are new each round."""
    locks = Locks(admin_api, ns)

    def create(i: int) -> None:
        locks.claim(f"q{round_no}-{i}", f"deploy://q{round_no}/{i}", f"user:q{round_no}x{i % 10}/w{i}", ttl=600)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(VARIED)))
    wait_until(lambda: _answered(locks, VARIED), "the quota's claims answered", 600)
    _delete_all(locks)


def _pods(admin_api: ApiClient, ns: str, round_no: int, node: str) -> None:
    """Each claim held for a kwok pod of its own; the claims deleted, then the pods."""
    locks, core = Locks(admin_api, ns), CoreV1Api(admin_api)

    def create(i: int) -> None:
        body = {
            "metadata": {"name": f"p{round_no}-{i}", "labels": POD_LABEL},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "agent:latest"}]},
        }
        pod = core.create_namespaced_pod(ns, body)
        locks.claim(f"p{round_no}-{i}", f"mr://pod{round_no}/{i}", f"user:alice/w{i}", ttl=600,
                    pod=(pod.metadata.name, pod.metadata.uid))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(VARIED)))
    wait_until(lambda: sum(phase_of(c) == "Held" for c in locks.claims()) == VARIED, "the pods' claims held", 600)
    _delete_all(locks)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: core.delete_namespaced_pod(f"p{round_no}-{i}", ns, grace_period_seconds=0),
                      range(VARIED)))
    wait_until(lambda: not core.list_namespaced_pod(ns).items, "the pods gone", 600)


def _quota_policy(admin_api: ApiClient, ns: str, prefix: str, held: int) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockPolicy", "metadata": {"name": "quota"},
        "spec": {"resourcePrefix": prefix, "capacity": 2, "maxHeldPerHolder": held},
    }
    CustomObjectsApi(admin_api).create_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", body)


def _spread(admin_api: ApiClient, round_no: int) -> None:
    """VARIED claims over SPREAD namespaces made for the round, each namespace with a quota (a quota
    ledger each); claims and namespaces deleted."""
    names = [new_namespace(admin_api, PREFIX) for _ in range(SPREAD)]
    try:
        for name in names:
            _quota_policy(admin_api, name, "mr://spread", VARIED)
        time.sleep(3)  # the operator's watches of the new namespaces started (patterns)

        def create(i: int) -> None:
            Locks(admin_api, names[i % SPREAD]).claim(
                f"n{round_no}-{i}", f"mr://spread{round_no}/{i}", f"user:alice/w{i}", ttl=600
            )

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(create, range(VARIED)))
        spread = [Locks(admin_api, name) for name in names]
        wait_until(lambda: all(phase_of(c) == "Held" for locks in spread for c in locks.claims()),
                   "the spread claims held", 600)
        for name in names:
            _delete_all(Locks(admin_api, name))
    finally:
        for name in names:
            CoreV1Api(admin_api).delete_namespace(name)
    core = CoreV1Api(admin_api)
    wait_until(lambda: not set(names) & {n.metadata.name for n in core.list_namespace().items},
               "the round's namespaces gone", 600)


def _report(label: str, rounds: list[dict[str, Any]], unit: int) -> dict[str, tuple[int, int]]:
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().strip()
    print(f"\n{label}: {VARIED} claims x {VARIED_ROUNDS} rounds, load {load}")
    for facts in rounds:
        print(f"{facts['tag']:>20}: RSS {facts['rss_mib']:.1f} MiB, blocks {facts['allocated_blocks']},"
              f" tracked {facts['tracked']}")
    first, last = rounds[1], rounds[-1]
    grown = {
        key: (first["sizes"].get(key, 0), last["sizes"][key])
        for key in last["sizes"]
        if last["sizes"][key] - first["sizes"].get(key, 0) > 0
    }
    print("own containers grown:", json.dumps(grown))
    types_first = dict(first["types"])
    print("types grown:", {t: (types_first.get(t, 0), n) for t, n in dict(last["types"]).items()
                           if n > types_first.get(t, 0) + 20})
    # A table keeping an entry per claim, resource, pod or namespace of a round (or per held one, or
    # per tenth of them) grows by a tenth of `unit` or more a round; the capped tombstones fill up to
    # their cap, and Events over their rate wait in summaries until the next flush.
    assert last["sizes"].get("Cache._deleted", 0) <= TOMBSTONES
    limit = max(4, unit // 10) * (len(rounds) - 2)
    return {k: v for k, v in grown.items() if v[1] - v[0] >= limit and k not in BOUNDED}


@pytest.mark.timeout(600 + VARIED_ROUNDS * 600)
@pytest.mark.parametrize("variation", ["several", "quota", "pods", "spread"])
def test_varied_floods_leave_no_per_claim_entries_behind(
    admin_api: ApiClient, operator: _FactsOperator, fake_node: str, variation: str
) -> None:
    rounds: list[dict[str, Any]] = []
    with temporary_namespace(admin_api, PREFIX) as ns:
        if variation in ("quota", "spread"):
            _quota_policy(admin_api, ns, "deploy://", 8)
        time.sleep(3)
        rounds.append(operator.dump(f"{variation}-start"))
        for round_no in range(VARIED_ROUNDS):
            if variation == "several":
                _several(admin_api, ns, round_no)
            elif variation == "quota":
                _quota(admin_api, ns, round_no)
            elif variation == "pods":
                _pods(admin_api, ns, round_no, fake_node)
            else:
                _spread(admin_api, round_no)
                # A decision under a quota: it forgets the round's ledgers, their claims all gone.
                time.sleep(SWEEP_SECONDS + 1)
                probe = Locks(admin_api, ns)
                probe.claim(f"probe{round_no}", f"deploy://probe{round_no}", "user:probe/w0", ttl=600)
                probe.wait_phase(f"probe{round_no}", "Held")
                _delete_all(probe)
            time.sleep(5)  # the deletions' last handlers and Event writes done
            # Collected first: kopf's bodies and the exceptions kept by their tracebacks form cycles,
            # freed by the cyclic collector whenever it runs, not kept state.
            rounds.append(operator.dump(f"{variation}-after-{round_no}-collect"))
    unit = {"several": max(1, VARIED // 4), "spread": SPREAD}.get(variation, VARIED)
    kept = _report(variation, rounds, unit)
    assert not kept, kept
