"""Where #2's cycle goes at N agents: `python bench/cycle_profile.py [--agents 200] [--rounds 4]`.

On one control plane (admission policies on, as `run.py`), in interleaved rounds: the bare
ResourceLock floor T_CR(N) (`anchors.custom_resource_cycles`) and kubelock's claim cycle
(`scenarios.claim_cycles`) through an operator of `--operator TREE/operator` (default this tree).
For each window: cycles/s, the CPU each process used per cycle and in cores, and from the API
server's own metrics the requests per cycle, their mean time in the API server
(`apiserver_request_duration_seconds`) and in API Priority and Fairness' queues
(`apiserver_flowcontrol_request_wait_duration_seconds`), and the operator's own figures (first seen
→ `Held`, the reconcile runs' mean time). With `--cprofile`, one more kubelock window runs through an
operator started under `cProfile` (py-spy cannot read this machine's processes: "Failed to find python
version"), summarised by function: what the operator's process spends its CPU on while cycles run.
Prints and writes (`--out`) the result with the load.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/cycle_profile.py --out FILE --cprofile
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import abrun
import anchors
import harness
import scenarios
from harness import (
    _LABEL,
    _SAMPLE,
    REPO,
    Env,
    OperatorProcess,
    RequestTally,
    children_by_name,
    cpu_seconds,
    ensure_namespace,
    new_client,
    scrape,
)

from kubelock.kube import config
from kubelock.testbed import ControlPlane, find_binaries

NS_KUBELOCK, NS_ANCHOR = "bench-kubelock", "bench-anchor"
PLANE = ("kube-apiserver", "etcd", "kube-controller-manager")


def sums(text: str, metric: str, keys: tuple[str, ...]) -> collections.Counter[tuple[str, ...]]:
    """Float sums of one Prometheus series grouped by `keys` (harness.parse_counter rounds to ints)."""
    out: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in text.splitlines():
        if line.startswith(metric + "{") and (match := _SAMPLE.match(line)) is not None:
            labels = dict(_LABEL.findall(match["labels"]))
            out[tuple(labels.get(k, "") for k in keys)] += float(match["value"])
    return out


async def apiserver_state(env: Env) -> dict[str, collections.Counter[tuple[str, ...]]]:
    text = await scrape(f"{env.credentials.server}/metrics", env.credentials.ssl_context())
    by = ("verb", "resource", "subresource")
    return {
        "count": sums(text, "apiserver_request_duration_seconds_count", by),
        "seconds": sums(text, "apiserver_request_duration_seconds_sum", by),
        "apf_wait_count": sums(text, "apiserver_flowcontrol_request_wait_duration_seconds_count", ("flow_schema",)),
        "apf_wait_seconds": sums(text, "apiserver_flowcontrol_request_wait_duration_seconds_sum", ("flow_schema",)),
    }


async def window(env: Env, pids: dict[str, int], label: str, run: Awaitable[Any]) -> dict[str, Any]:
    """One measured window of cycles: rate, CPU and the API server's requests, per cycle."""
    before, cpu0, t0 = await apiserver_state(env), {k: cpu_seconds(p) for k, p in pids.items()}, time.perf_counter()
    cycles = await run
    elapsed = time.perf_counter() - t0
    after = await apiserver_state(env)
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    total = max(cycles.total, 1)
    requests = {}
    for key, n in (after["count"] - before["count"]).items():
        if n >= total * 0.05 and key[1] not in ("", "leases"):
            spent = after["seconds"][key] - before["seconds"][key]
            requests["/".join(k for k in key if k)] = {"per_cycle": round(n / total, 3),
                                                       "mean_ms": round(1000 * spent / n, 2)}
    waits = {k[0]: (after["apf_wait_seconds"][k] - before["apf_wait_seconds"][k],
                    after["apf_wait_count"][k] - before["apf_wait_count"][k]) for k in after["apf_wait_count"]}
    return {
        "label": label, "rate": round(cycles.rate, 1), "cycles": cycles.total, "seconds": round(elapsed, 1),
        "cpu_ms_per_cycle": {k: round(1000 * v / total, 2) for k, v in cpu.items()},
        "cores": {k: round(v / elapsed, 2) for k, v in cpu.items()},
        "requests": requests,
        "apf_wait_ms_mean": {k: round(1000 * s / n, 2) for k, (s, n) in waits.items() if n >= total * 0.05},
        "load1": round(os.getloadavg()[0], 2),
    }


class ProfiledOperator(OperatorProcess):
    """The kubelock operator under `python -m cProfile -o FILE` (written when it stops on SIGTERM)."""

    output: Path = Path("operator.prof")

    def argv(self) -> list[str]:
        command = super().argv()
        return [command[0], "-m", "cProfile", "-o", str(self.output), *command[1:]]


def summarise_profile(path: Path, top: int = 30) -> dict[str, Any]:
    """The functions with the most CPU of their own (tottime) and with callees (cumtime), as shares
    of the profile's total."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    rows = stats.stats  # type: ignore[attr-defined]

    def name(key: tuple[str, int, str]) -> str:
        file, line, function = key
        return f"{'/'.join(Path(file).parts[-2:])}:{line}:{function}"

    own = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    cumulative = sorted(rows.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
    return {"total_s": round(total, 2),
            "self": [(name(k), round(v[2] / total, 3)) for k, v in own],
            "cumulative": [(name(k), round(v[3] / total, 3)) for k, v in cumulative]}


async def operator_figures(op: OperatorProcess) -> dict[str, float]:
    text = await scrape(f"http://127.0.0.1:{op.metrics_port}/metrics")
    values = {}
    for line in text.splitlines():
        for metric in ("kubelock_acquire_latency_seconds", "kubelock_reconcile_duration_seconds"):
            for part in ("sum", "count"):
                if line.startswith(f"{metric}_{part} "):
                    values[f"{metric}_{part}"] = float(line.split()[1])
    return values


async def measure(plane: ControlPlane, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        for ns in (NS_KUBELOCK, NS_ANCHOR):
            await ensure_namespace(client, ns)
        op = OperatorProcess("kubelock", plane.kubeconfig, NS_KUBELOCK, logs, source=args.operator)
        await op.start(within=90)
        pids = {**children_by_name(PLANE), "operator": op.pid, "bench client": os.getpid()}
        n, secs, warm = args.agents, args.seconds, args.warmup
        try:
            await scenarios.claim_cycles(env, NS_KUBELOCK, n, 2.0, 1.0)  # connections and caches warm
            await scenarios.settle_locks(env, NS_KUBELOCK)
            windows: list[dict[str, Any]] = []
            for index in range(args.rounds):
                order = ["floor", "kubelock"] if index % 2 == 0 else ["kubelock", "floor"]
                for which in order:
                    if which == "floor":
                        run = anchors.custom_resource_cycles(env, NS_ANCHOR, n, secs, warm)
                    else:
                        run = scenarios.claim_cycles(env, NS_KUBELOCK, n, secs, warm)
                    windows.append({"round": index, **await window(env, pids, which, run)})
                    if which == "kubelock":
                        await scenarios.settle_locks(env, NS_KUBELOCK)
                    print(json.dumps(windows[-1]), file=sys.stderr, flush=True)
            figures = await operator_figures(op)
            profile = None
            if args.cprofile:
                op.stop()
                profiled = ProfiledOperator("kubelock", plane.kubeconfig, NS_KUBELOCK, logs, source=args.operator)
                profiled.output = logs / "operator.prof"
                await profiled.start(within=180)
                try:
                    window_ = await window(env, {**pids, "operator": profiled.pid}, "kubelock under cProfile",
                                           scenarios.claim_cycles(env, NS_KUBELOCK, n, secs, warm))
                finally:
                    profiled.stop()
                profile = {"window": window_, **summarise_profile(profiled.output)}
        finally:
            op.stop()
    rate = {w: [x["rate"] for x in windows if x["label"] == w] for w in ("floor", "kubelock")}
    pairs = [k["rate"] / f["rate"] for k, f in zip([x for x in windows if x["label"] == "kubelock"],
                                                  [x for x in windows if x["label"] == "floor"], strict=True)]
    return {"windows": windows, "median_rate": {k: statistics.median(v) for k, v in rate.items()},
            "ratio_kubelock_over_floor": {"median": round(statistics.median(pairs), 3),
                                          "each": [round(p, 3) for p in pairs]},
            "operator_first_seen_to_held_mean_s": round(figures["kubelock_acquire_latency_seconds_sum"]
                                                        / max(figures["kubelock_acquire_latency_seconds_count"], 1), 3),
            "operator_reconcile_run_mean_s": round(figures["kubelock_reconcile_duration_seconds_sum"]
                                                   / max(figures["kubelock_reconcile_duration_seconds_count"], 1), 3),
            "profile": profile}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--cprofile", action="store_true", help="end with a window of an operator under cProfile")
    parser.add_argument("--operator", type=Path, default=REPO / "operator")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    args.operator = args.operator.resolve()
    harness.OPERATOR_SOURCE[0] = args.operator
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-cycles-"))
    load_before = os.getloadavg()
    plane = ControlPlane(workdir / "control-plane", bin_dir=find_binaries(),
                         manifests=[REPO / m for m in ("crds", "config/rbac", "config/admission")])
    plane.start()
    try:
        result = asyncio.run(measure(plane, args, workdir / "logs"))
    finally:
        plane.stop()
    document = {"agents": args.agents, "rounds": args.rounds, "seconds": args.seconds, "operator": str(args.operator),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()], **result}
    return abrun.report(document, args.out)


if __name__ == "__main__":
    sys.exit(main())
