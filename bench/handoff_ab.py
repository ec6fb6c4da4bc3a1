"""Handoffs of two operator trees on one control plane: `python bench/handoff_ab.py A_TREE B_TREE`.

Blocks #3 (exclusive handoff) and #11 (semaphore handoff, capacity 3) of `run.py`, with the same
scenario code, but both trees' operators run at once, each watching a namespace of its own, and the
rounds alternate between the H anchor, tree A and tree B (A before B, then B before A). On a shared
machine whose load moves by a factor of two within minutes, the runs of `run.py --operator` one after
another compare two moments as much as two trees; here both see the same moments. Prints and writes
(`--out`) the p50 and p99 of each, and their ratios to H of the same rounds.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/handoff_ab.py /tmp/old . --rounds 8
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import abrun
import anchors
import scenarios
from harness import REPO, Env, RequestTally, ensure_namespace, new_client

from kubelock.kube import config
from kubelock.testbed import ControlPlane
from kubelock.testbed.processes import free_port

WAITERS = 10
CAPACITY = 3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ready(log: Path) -> bool:
    return log.exists() and "watching LockClaims" in log.read_text(errors="replace")


async def wait_ready(log: Path, within: float = 90.0) -> None:
    for _ in range(int(within / 0.1)):
        if ready(log):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"operator not ready: see {log}")


def spawn(plane: ControlPlane, tree: Path, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "kubelock.operator", "--kubeconfig", str(plane.kubeconfig),
            "-n", namespace, "--health-address", f"127.0.0.1:{free_port()}"]
    environment = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PYTHONPATH": str(tree / "operator")}
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=REPO)


async def measure(plane: ControlPlane, trees: dict[str, Path], rounds: int, logs: Path) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        namespaces = {label: await ensure_namespace(client, f"bench-{label.lower()}") for label in trees}
        anchor = await ensure_namespace(client, "bench-anchor")
        processes = [
            spawn(plane, tree, namespaces[label], logs / f"operator-{label}.log") for label, tree in trees.items()
        ]
        try:
            for label in trees:
                await wait_ready(logs / f"operator-{label}.log")
                await scenarios.handoff(env, namespaces[label], 2)  # warm-up
                await scenarios.ensure_semaphore_policy(env, namespaces[label], CAPACITY)
                await scenarios.semaphore_handoff(env, namespaces[label], CAPACITY, 2)
            samples: dict[str, list[float]] = {"H": []}
            order = ["H", *trees]
            for index in range(rounds):
                for who in order if index % 2 == 0 else order[::-1]:
                    if who == "H":
                        samples["H"] += await anchors.lease_handoff(env, anchor, WAITERS)
                        continue
                    samples.setdefault(f"{who} #3", []).extend(
                        (await scenarios.handoff(env, namespaces[who], WAITERS)).held)
                    samples.setdefault(f"{who} #11", []).extend(
                        (await scenarios.semaphore_handoff(env, namespaces[who], CAPACITY, WAITERS)).held)
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    h50, h99 = statistics.median(samples["H"]), percentile(samples["H"], 0.99)
    out: dict[str, Any] = {}
    for name, values in samples.items():
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        out[name] = {"p50_ms": round(1000 * p50, 2), "p99_ms": round(1000 * p99, 2), "samples": len(values),
                     "p50_ratio": round(p50 / h50, 2), "p99_ratio": round(p99 / h99, 2)}
    return out


def main() -> int:
    rounds_help = "rounds of each (10 handoffs of #3 and of #11 each)"
    args = abrun.parser(__doc__, rounds=8, rounds_help=rounds_help).parse_args()
    return abrun.run(args, "handoff", lambda plane, trees, logs: measure(plane, trees, args.rounds, logs))


if __name__ == "__main__":
    sys.exit(main())
