"""API-server CPU per write of each kind kubelock makes, with no operator running: variants of one
write alternated in rounds on one control plane, each round's figure the kube-apiserver's CPU
(utime+stime) over K requests divided by K. What a change to a write's body or verb costs the API
server, apart from the rest of a cycle and from the load of the moment (report the median of the
rounds and how often one variant was below the other).

    KUBELOCK_BIN_DIR=... PYTHONPATH=operator .venv/bin/python bench/write_costs.py OUT_DIR \\
        [--only status-patch,status-put] [--requests 600] [--rounds 10]

Variants: `lock+label` / `lock-nolabel` (a ResourceLock as the operator creates it, then deleted),
`claim` (a LockClaim created and deleted), `status-patch` / `status-put` (a claim's whole status
written as a merge patch or as a PUT of /status, alternating Held and Pending so that every write
changes the claim).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import RequestTally, children_by_name, cpu_seconds, ensure_namespace, new_client

from kubelock.api.constants import API_VERSION
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.testbed import ControlPlane, find_binaries

REPO = Path(__file__).resolve().parent.parent
NS = "write-costs"
CONCURRENCY = 10
Body = dict[str, Any]
Write = Callable[[int, int], Awaitable[None]]


def lock_body(name: str, label: bool) -> Body:
    now = to_rfc3339(time.time())
    meta: Body = {"name": name, "namespace": NS}
    if label:
        meta["labels"] = {"app.kubernetes.io/managed-by": "kubelock-operator"}
    return {
        "apiVersion": API_VERSION, "kind": "ResourceLock", "metadata": meta,
        "spec": {
            "resource": f"bench://cycle/x/{name}", "holder": "agent-1",
            "claimRef": {"name": name, "uid": "d8488f20-c78d-4787-a495-5101854b3170"},
            "leaseDurationSeconds": 1800, "acquireTime": now, "renewTime": now, "expireTime": now,
            "fencingToken": 0,
        },
    }


def claim_body(name: str, wait: bool) -> Body:
    return {"apiVersion": API_VERSION, "kind": "LockClaim", "metadata": {"name": name},
            "spec": {"resource": f"bench://cycle/x/{name}", "holder": "agent-1", "wait": wait}}


def status(i: int, held: bool) -> Body:
    """A status as the operator writes it (absent fields as null, as its merge patch did)."""
    now = to_rfc3339(time.time())

    def condition(type_: str, value: str, reason: str, message: str) -> Body:
        return {"type": type_, "status": value, "reason": reason, "message": message,
                "lastTransitionTime": now, "observedGeneration": 1}

    empty: Body = {"holder": None, "lockName": None, "fencingToken": None, "grants": None, "acquiredAt": None,
                   "renewedAt": None, "expiresAt": None, "queuePosition": None, "waitingSince": None}
    if held:
        message = f"agent-1 holds bench://x (fencing token {i})"
        grant = {"resource": "bench://x", "lockName": "bench-x-480cc472c7e8", "fencingToken": i,
                 "mode": "Exclusive", "permits": 1}
        return {**empty, "phase": "Held", "reason": "Granted", "message": message, "holder": "agent-1",
                "lockName": "bench-x-480cc472c7e8", "fencingToken": i, "grants": [grant], "acquiredAt": now,
                "renewedAt": now, "expiresAt": now, "sequence": 5, "observedGeneration": 1,
                "conditions": [condition("Held", "True", "Granted", message),
                               condition("Stale", "False", "Renewed", "renewed on schedule")]}
    return {**empty, "phase": "Pending", "reason": "HeldByAnotherHolder", "message": f"waiting {i}",
            "queuePosition": 1, "sequence": 5, "waitingSince": now, "observedGeneration": 1,
            "conditions": [condition("Held", "False", "HeldByAnotherHolder", f"waiting {i}")]}


async def variants(client: KubeClient) -> dict[str, Write]:
    claims = [await client.create(paths.claims(NS), claim_body(f"s{j}", True)) for j in range(CONCURRENCY)]
    version = {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in claims}
    uid = {c["metadata"]["name"]: c["metadata"]["uid"] for c in claims}
    serial = [0]

    def lock_cycle(label: bool) -> Write:
        async def write(j: int, k: int) -> None:
            serial[0] += 1
            name = f"l{int(label)}-{j}-{k}-{serial[0]}"
            await client.create(paths.locks(NS), lock_body(name, label))
            await client.delete(paths.locks(NS, name))
        return write

    async def claim_cycle(j: int, k: int) -> None:
        serial[0] += 1
        name = f"c-{j}-{k}-{serial[0]}"
        await client.create(paths.claims(NS), claim_body(name, False))
        await client.delete(paths.claims(NS, name))

    def status_write(put: bool) -> Write:
        async def write(j: int, k: int) -> None:
            name = f"s{j}"
            serial[0] += 1
            written = status(serial[0], k % 2 == 0)
            path = paths.claims(NS, name, status=True)
            if put:
                body = {"apiVersion": API_VERSION, "kind": "LockClaim",
                        "metadata": {"name": name, "namespace": NS, "uid": uid[name],
                                     "resourceVersion": version[name]},
                        "status": {key: v for key, v in written.items() if v is not None}}
                stored = await client.replace(path, body)
            else:
                stored = await client.patch(path, {"metadata": {"resourceVersion": version[name]}, "status": written})
            version[name] = stored["metadata"]["resourceVersion"]
        return write

    return {"lock+label": lock_cycle(True), "lock-nolabel": lock_cycle(False), "claim": claim_cycle,
            "status-patch": status_write(False), "status-put": status_write(True)}


async def measure(plane: ControlPlane, only: list[str], requests: int, rounds: int) -> dict[str, list[float]]:
    credentials = config.load(plane.kubeconfig)
    async with new_client(credentials, RequestTally()) as client:
        await ensure_namespace(client, NS)
        apiserver = children_by_name(["kube-apiserver"])["kube-apiserver"]
        chosen = {k: v for k, v in (await variants(client)).items() if not only or k in only}
        results: dict[str, list[float]] = {k: [] for k in chosen}
        for round_ in range(rounds):
            for name, write in chosen.items():
                before = cpu_seconds(apiserver)

                async def agent(j: int, write: Write = write) -> None:
                    for k in range(requests // CONCURRENCY):
                        await write(j, k)

                await asyncio.gather(*(agent(j) for j in range(CONCURRENCY)))
                results[name].append((cpu_seconds(apiserver) - before) * 1000 / requests)
            figures = {k: round(v[-1], 3) for k, v in results.items()}
            print(f"round {round_}: {figures} ms, load {os.getloadavg()[0]:.1f}", flush=True)
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    parser.add_argument("--requests", type=int, default=600, help="writes (or create+delete pairs) per round")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifests = [REPO / "crds", REPO / "config/rbac"]
    plane = ControlPlane(args.out / "control-plane", bin_dir=find_binaries(), manifests=manifests)
    plane.start()
    try:
        results = asyncio.run(measure(plane, [v for v in args.only.split(",") if v], args.requests, args.rounds))
    finally:
        plane.stop()
    medians = {k: round(statistics.median(v), 3) for k, v in results.items()}
    print("median ms per write (create+delete pair for lock and claim):", medians)
    (args.out / "write-costs.json").write_text(json.dumps({"rounds": results, "median_ms": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
