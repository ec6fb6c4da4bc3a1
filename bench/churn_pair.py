"""The churn row (#9) of two operator trees at the same time: `python bench/churn_pair.py A_TREE B_TREE`.

One control plane (admission policies on, as `run.py`), one operator of each tree watching its own
namespace, and in each round both churns at once (`scenarios.churn`, the agents of `bench/churn.py`):
`--agents` agents in `--processes` processes on `--resources` resources per tree (defaults: half of
the full run's #9 each, 500 agents in 25 processes on 50 resources, so queues of about 10 as there and
1 000 agents in all). Both meet the same API server and the same machine in the same seconds, so their
ratio holds when the machine's load moves by a factor of ten between runs, as sequential runs
(`churn_ab.py`) do not. Which tree's processes start first alternates by round. Prints and writes
(`--out`) each round's grants/s per tree, the operators' and API server's cores, the errors, and the
paired ratios B ÷ A with the load.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/churn_pair.py /tmp/old . --rounds 3
"""

from __future__ import annotations

import asyncio
import compileall
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import abrun
import scenarios
from harness import (
    OperatorProcess,
    RequestTally,
    children_by_name,
    ensure_namespace,
    measured_on_deployed_plane,
    new_client,
)

from kubelock.kube import config
from kubelock.testbed import ControlPlane

NAMESPACES = {"A": "bench-churn-a", "B": "bench-churn-b"}


async def measure(plane: ControlPlane, trees: dict[str, Path], logs: Path, args: Any) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    async with new_client(credentials, RequestTally()) as client:
        ops = {}
        for label, tree in trees.items():
            await ensure_namespace(client, NAMESPACES[label])
            ops[label] = OperatorProcess("kubelock", plane.kubeconfig, NAMESPACES[label], logs,
                                         source=tree / "operator")
            await ops[label].start(within=180)
        server = children_by_name(["kube-apiserver", "etcd"])
        rounds: list[dict[str, Any]] = []
        try:
            for index in range(args.rounds):
                order = list(trees) if index % 2 == 0 else list(trees)[::-1]
                load = os.getloadavg()[0]
                results = await asyncio.gather(*(
                    scenarios.churn(client, plane.kubeconfig, NAMESPACES[label], logs,
                                    {**server, "operator": ops[label].pid}, agents=args.agents,
                                    processes=args.processes, resources=args.resources, seconds=args.seconds,
                                    warmup=args.warmup)
                    for label in order
                ))
                by = dict(zip(order, results, strict=True))
                rounds.append({
                    "round": index, "first": order[0], "load1_before": round(load, 2),
                    "load1_after": round(os.getloadavg()[0], 2),
                    **{label: {"grants_per_s": round(c.rate, 3), "grants": c.in_window,
                               "cores": {k: round(v, 3) for k, v in c.cores.items()}, "errors": c.errors,
                               "acquire_p50_s": round(statistics.median(c.took), 1) if c.took else None}
                       for label, c in by.items()},
                })
                print(rounds[-1], file=sys.stderr, flush=True)
        finally:
            for op in ops.values():
                op.stop()
    a, b = list(trees)
    pairs = [r[b]["grants_per_s"] / r[a]["grants_per_s"] for r in rounds if r[a]["grants_per_s"] > 0]
    return {"rounds": rounds,
            "median_grants_per_s": {t: statistics.median(r[t]["grants_per_s"] for r in rounds) for t in trees},
            "paired_ratio_b_over_a": {"median": round(statistics.median(pairs), 3) if pairs else None,
                                      "each": [round(p, 3) for p in pairs]}}


def main() -> int:
    parser = abrun.parser(__doc__, rounds=3, rounds_help="rounds of both churns at once")
    parser.add_argument("--agents", type=int, default=500, help="agents per tree")
    parser.add_argument("--processes", type=int, default=25, help="agent processes per tree")
    parser.add_argument("--resources", type=int, default=50, help="resources per tree")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    args = parser.parse_args()
    trees = abrun.trees(args)
    for tree in trees.values():  # bytecode, as the image has (`harness.compile_operators`)
        compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    workdir = args.workdir or Path("/tmp/kubelock-churn-pair")
    workdir.mkdir(parents=True, exist_ok=True)
    result, loads = measured_on_deployed_plane(workdir, lambda plane: measure(plane, trees, workdir / "logs", args))
    document = {"trees": {k: str(v) for k, v in trees.items()}, "agents": args.agents, "processes": args.processes,
                "resources": args.resources, "seconds": args.seconds, "warmup": args.warmup,
                **loads, **result}
    return abrun.report(document, args.out)


if __name__ == "__main__":
    sys.exit(main())
