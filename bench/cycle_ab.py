"""#2's uncontended cycle through two operator trees, in alternating windows on one control plane:
`python bench/cycle_ab.py --operator-a TREE/operator [--operator-b TREE/operator] [--agents 50]
[--rounds 4] [--seconds 15]`.

`run.py --quick` measures #2 over windows of about a second, and two runs are minutes apart: on a
shared machine whose load swings from 8 to 30 within a run, the operator's CPU per cycle then varies
by ±30 % between runs of one tree. Here each window starts a fresh operator of one tree, warms it up
(`scenarios.claim_cycles` for 2 s) and measures `--seconds` of cycles at `--agents` agents with
`cycle_profile.window` (cycles/s, each process's CPU per cycle, the API server's requests); windows
go A B, B A, A B, ... so that a trend in the load falls on both trees alike. Prints every window and,
per pair, B's figures over A's, with the load.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/cycle_ab.py \\
        --operator-a OLD/operator --operator-b operator --out FILE
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import abrun
import harness
import options
import scenarios
from cycle_profile import NS_KUBELOCK, PLANE, window
from harness import (
    REPO,
    Env,
    OperatorProcess,
    RequestTally,
    children_by_name,
    ensure_namespace,
    measured_on_deployed_plane,
    new_client,
)

from kubelock.kube import config
from kubelock.testbed import ControlPlane


async def measure(plane: ControlPlane, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    trees = {"A": args.operator_a, "B": args.operator_b}
    windows: list[dict[str, Any]] = []
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        await ensure_namespace(client, NS_KUBELOCK)
        for index in range(args.rounds):
            for which in ("A", "B") if index % 2 == 0 else ("B", "A"):
                op = OperatorProcess("kubelock", plane.kubeconfig, NS_KUBELOCK, logs, source=trees[which])
                await op.start(within=120)
                try:
                    pids = {**children_by_name(PLANE), "operator": op.pid, "bench client": os.getpid()}
                    await scenarios.claim_cycles(env, NS_KUBELOCK, args.agents, 2.0, 1.0)  # warm
                    await scenarios.settle_locks(env, NS_KUBELOCK)
                    run = scenarios.claim_cycles(env, NS_KUBELOCK, args.agents, args.seconds, args.warmup)
                    result = await window(env, pids, which, run)
                    await scenarios.settle_locks(env, NS_KUBELOCK)
                finally:
                    op.stop()
                windows.append({"round": index, **result})
                print({k: result[k] for k in ("label", "rate", "cycles", "cpu_ms_per_cycle", "load1")},
                      file=sys.stderr, flush=True)
    pairs = []
    for index in range(args.rounds):
        a, b = (next(w for w in windows if w["round"] == index and w["label"] == x) for x in ("A", "B"))
        pairs.append({
            "round": index,
            "load1": [a["load1"], b["load1"]],
            "rate_b_over_a": round(b["rate"] / a["rate"], 3),
            "cpu_b_over_a": {k: round(b["cpu_ms_per_cycle"][k] / a["cpu_ms_per_cycle"][k], 3)
                             for k in a["cpu_ms_per_cycle"] if a["cpu_ms_per_cycle"][k]},
        })
    medians = {"rate_b_over_a": statistics.median(p["rate_b_over_a"] for p in pairs),
               "operator_cpu_b_over_a": statistics.median(p["cpu_b_over_a"]["operator"] for p in pairs)}
    return {"windows": windows, "pairs": pairs, "medians": medians}


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("--operator-a", type=Path, required=True)
    parser.add_argument("--operator-b", type=Path, default=REPO / "operator")
    options.add_windows(parser, agents=50, seconds=15.0)
    options.add_outputs(parser)
    args = parser.parse_args()
    args.operator_a, args.operator_b = args.operator_a.resolve(), args.operator_b.resolve()
    harness.OPERATOR_SOURCE[0], harness.OPERATOR_SOURCE_B[0] = args.operator_a, args.operator_b
    harness.compile_operators()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-cycle-ab-"))
    result, loads = measured_on_deployed_plane(workdir, lambda plane: measure(plane, args, workdir / "logs"))
    document = {"agents": args.agents, "rounds": args.rounds, "seconds": args.seconds,
                "operator_a": str(args.operator_a), "operator_b": str(args.operator_b),
                **loads, **result}
    return abrun.report(document, args.out)


if __name__ == "__main__":
    sys.exit(main())
