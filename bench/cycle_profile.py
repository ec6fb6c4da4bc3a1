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
Each window also reports the watch events the API server sent per cycle, by kind (one per watcher
that received it), their mean encoded size and the watches open: a write's fan-out. With `--pprof
SECONDS`, each window takes a kube-apiserver CPU profile of its first SECONDS, cut into groups of
functions (`pprof_groups.py`) in ms a cycle; with `--sizes`, one cycle's claim and lock first, as a
watch sees them, each event's object by part (managedFields, metadata, spec, status).
Prints and writes (`--out`) the result with the load.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/cycle_profile.py --out FILE --cprofile
    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/cycle_profile.py --agents 50 --rounds 2 \
        --seconds 15 --pprof 15 --sizes --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pstats
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import abrun
import anchors
import harness
import options
import pprof_groups
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
    deployed_plane,
    ensure_namespace,
    new_client,
    scrape,
)

from kubelock.kube import config, paths
from kubelock.testbed import ControlPlane, find_binaries

NS_KUBELOCK, NS_ANCHOR = "bench-kubelock", "bench-anchor"
PLANE = ("kube-apiserver", "etcd", "kube-controller-manager")


def sums(text: str, metric: str, keys: tuple[str, ...]) -> collections.Counter[tuple[str, ...]]:
    """Float sums of one Prometheus series grouped by `keys` (harness.parse_counter rounds to ints)."""
    out: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in text.splitlines():
        if line.startswith(metric + "{") and (match := _SAMPLE.match(line)) is not None:
            labels = dict(_LABEL.findall(match["labels"]))
            # Counter for its subtraction of snapshots; its sums are floats here, typeshed's values int.
            out[tuple(labels.get(k, "") for k in keys)] += float(match["value"])  # type: ignore[assignment]
    return out


async def apiserver_state(env: Env) -> dict[str, collections.Counter[tuple[str, ...]]]:
    text = await scrape(f"{env.credentials.server}/metrics", env.credentials.ssl_context())
    by = ("verb", "resource", "subresource")
    return {
        "count": sums(text, "apiserver_request_duration_seconds_count", by),
        "seconds": sums(text, "apiserver_request_duration_seconds_sum", by),
        "apf_wait_count": sums(text, "apiserver_flowcontrol_request_wait_duration_seconds_count", ("flow_schema",)),
        "apf_wait_seconds": sums(text, "apiserver_flowcontrol_request_wait_duration_seconds_sum", ("flow_schema",)),
        # Every watch event the server sends, once per watcher that receives it, and its encoded bytes.
        "watch_events": sums(text, "apiserver_watch_events_total", ("kind", "resource")),
        "watch_bytes": sums(text, "apiserver_watch_events_sizes_sum", ("kind", "resource")),
        "watchers": sums(text, "apiserver_longrunning_requests", ("verb", "resource")),
    }


def opener(credentials: config.Credentials) -> urllib.request.OpenerDirector:
    context = credentials.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))


async def window(env: Env, pids: dict[str, int], label: str, run: Awaitable[Any],
                 profile: tuple[Path, int] | None = None) -> dict[str, Any]:
    """One measured window of cycles: rate, CPU and the API server's requests, per cycle. `profile`:
    (file, seconds) of a kube-apiserver CPU profile taken from the window's start."""
    before, cpu0, t0 = await apiserver_state(env), {k: cpu_seconds(p) for k, p in pids.items()}, time.perf_counter()
    profiling = None
    if profile is not None:
        profiling = asyncio.create_task(asyncio.to_thread(
            pprof_groups.fetch, env.credentials.server, opener(env.credentials), profile[1], profile[0]))
    cycles = await run
    elapsed = time.perf_counter() - t0
    if profiling is not None:
        await profiling
    after = await apiserver_state(env)
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    total = max(cycles.total, 1)
    requests = {}
    for key, n in (after["count"] - before["count"]).items():
        if n >= total * 0.05 and key[1] not in ("", "leases"):
            spent = after["seconds"][key] - before["seconds"][key]
            requests["/".join(k for k in key if k)] = {"per_cycle": round(n / total, 3),
                                                       "mean_ms": round(1000 * spent / n, 2)}
    fan_out = {"/".join(x for x in k if x): {
        "events_per_cycle": round(n / total, 2),
        "bytes_per_event": round((after["watch_bytes"][k] - before["watch_bytes"][k]) / n),
    } for k, n in (after["watch_events"] - before["watch_events"]).items() if n >= total * 0.05}
    watchers = {k[1]: int(n) for k, n in after["watchers"].items() if k[0] == "WATCH" and n}
    waits = {k[0]: (after["apf_wait_seconds"][k] - before["apf_wait_seconds"][k],
                    after["apf_wait_count"][k] - before["apf_wait_count"][k]) for k in after["apf_wait_count"]}
    return {
        "label": label, "rate": round(cycles.rate, 1), "cycles": cycles.total, "seconds": round(elapsed, 1),
        "cpu_ms_per_cycle": {k: round(1000 * v / total, 2) for k, v in cpu.items()},
        "cores": {k: round(v / elapsed, 2) for k, v in cpu.items()},
        "requests": requests,
        "watch_events": fan_out,
        "watches_open": watchers,
        "apf_wait_ms_mean": {k: round(1000 * s / n, 2) for k, (s, n) in waits.items() if n >= total * 0.05},
        "load1": round(os.getloadavg()[0], 2),
        **({"profile": profiled(profile, cycles.total / elapsed)} if profile is not None else {}),
    }


def profiled(profile: tuple[Path, int], cycles_per_second: float) -> dict[str, Any]:
    """The profile's CPU by group, in ms a cycle at the window's rate of cycles (all run, warm-up too)."""
    groups = pprof_groups.grouped(pprof_groups.raw_text(profile[0], find_binaries() / "kube-apiserver"))
    cycles = cycles_per_second * profile[1]
    return {"file": profile[0].name, "sampled_ms_per_cycle": round(1000 * sum(groups.values()) / cycles, 2),
            "ms_per_cycle": {k: round(1000 * v / cycles, 3) for k, v in groups.items()}}


def size_parts(obj: dict[str, Any]) -> dict[str, int]:
    """Bytes of an object as compact JSON, and of the parts of it a write carries."""
    def size(x: Any) -> int:
        return len(json.dumps(x, separators=(",", ":")))
    meta = obj.get("metadata") or {}
    return {"total": size(obj), "managedFields": size(meta.get("managedFields") or []),
            "annotations": size(meta.get("annotations") or {}), "labels": size(meta.get("labels") or {}),
            "finalizers+ownerReferences": size(meta.get("finalizers") or []) + size(meta.get("ownerReferences") or []),
            "metadata other": size({k: v for k, v in meta.items() if k not in (
                "managedFields", "annotations", "labels", "finalizers", "ownerReferences")}),
            "spec": size(obj.get("spec") or {}), "status": size(obj.get("status") or {})}


async def cycle_sizes(env: Env, namespace: str) -> dict[str, Any]:
    """One claim cycle seen through watches of claims and locks: each event's object, by part."""
    name, resource = harness.unique("sz"), f"bench://cycle/sizes/{time.time_ns()}"
    claims, locks = paths.claims(namespace), paths.locks(namespace)
    async with (harness.Watch(env.watcher, claims, resource_version=await harness.current_version(env.client, claims))
                as claim_watch,
                harness.Watch(env.watcher, locks, resource_version=await harness.current_version(env.client, locks))
                as lock_watch):
        await env.client.create(claims, scenarios.claim_body(name, resource, "agent-sizes"))
        await claim_watch.wait_for(name, scenarios.HELD, env.timeout)
        await env.client.delete(paths.claims(namespace, name))
        await scenarios.settle_locks(env, namespace)
        await asyncio.sleep(1.0)
        lock = scenarios.lock_of(resource)
        return {"claim": [{"type": e.type, **size_parts(e.obj)} for e in claim_watch.history.get(name, [])],
                "lock": [{"type": e.type, **size_parts(e.obj)} for e in lock_watch.history.get(lock, [])],
                "examples": {"claim": claim_watch.history[name][-2].obj if len(claim_watch.history[name]) > 1 else None,
                             "lock": lock_watch.history[lock][0].obj if lock_watch.history.get(lock) else None}}


class ProfiledOperator(OperatorProcess):
    """The kubelock operator under cProfile timed by its CPU clock (`cpu_cprofile.py`; the stats are
    written when it stops on SIGTERM)."""

    output: Path = Path("operator.prof")

    def argv(self) -> list[str]:
        command = super().argv()
        assert command[1] == "-m", command
        return [command[0], str(Path(__file__).with_name("cpu_cprofile.py")), "-o", str(self.output), *command[1:]]


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
            sizes = await cycle_sizes(env, NS_KUBELOCK) if args.sizes else None
            windows: list[dict[str, Any]] = []
            for index in range(args.rounds):
                order = ["floor", "kubelock"] if index % 2 == 0 else ["kubelock", "floor"]
                for which in order:
                    if which == "floor":
                        run = anchors.custom_resource_cycles(env, NS_ANCHOR, n, secs, warm)
                    else:
                        run = scenarios.claim_cycles(env, NS_KUBELOCK, n, secs, warm)
                    profile = ((logs / f"apiserver-{which}-{index}.pprof", args.pprof)
                               if args.pprof else None)
                    windows.append({"round": index, **await window(env, pids, which, run, profile)})
                    if which == "kubelock":
                        await scenarios.settle_locks(env, NS_KUBELOCK)
                    print(json.dumps(windows[-1]), file=sys.stderr, flush=True)
            figures = await operator_figures(op)
            profiled_window: dict[str, Any] | None = None
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
                profiled_window = {"window": window_, **summarise_profile(profiled.output)}
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
            "profile": profiled_window, "sizes": sizes}


def main() -> int:
    parser = options.parser(__doc__)
    options.add_windows(parser, agents=200, seconds=5.0)
    parser.add_argument("--cprofile", action="store_true", help="end with a window of an operator under cProfile")
    parser.add_argument("--operator", type=Path, default=REPO / "operator")
    parser.add_argument("--pprof", type=int, default=0, metavar="SECONDS",
                        help="a kube-apiserver CPU profile of the first SECONDS of each window, by group")
    parser.add_argument("--sizes", action="store_true", help="first, one cycle's objects by part, as watched")
    options.add_outputs(parser)
    args = parser.parse_args()
    args.operator = args.operator.resolve()
    harness.OPERATOR_SOURCE[0] = args.operator
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-cycles-"))
    load_before = os.getloadavg()
    plane = deployed_plane(workdir, profiling=bool(args.pprof))
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
