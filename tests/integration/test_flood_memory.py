"""Memory after a flood (docs/reliability.md, "Memory after a flood (2026-11-28)").

Rounds of 1 000 held claims, each on its own resource, new resources and claim names every round,
all deleted before the next: after each round's deletions the operator dumps its heap facts
(`bench/heapfacts`: VmRSS, pymalloc's arenas, objects by type, and the sizes of kubelock's and kopf's
own containers). What a deleted claim leaves in the operator's tables grows by a round's worth each
round; what the allocator keeps does not grow once its first flood has made the pages.
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
from kubernetes.client import ApiClient

from kubelock.operator.cache import TOMBSTONES
from tests.support.claims import Locks, phase_of, wait_until
from tests.support.namespaces import temporary_namespace
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
