"""Where #1's and #10's time goes, sample by sample:
`python bench/acquire_stages.py [--samples 40] [--rounds 3] [--burn 2] [--operator TREE/operator]`.

One control plane (admission policies on, as `run.py`), one operator run through `stage_probe.py`
(wall-clock stamps of its watch events, reconciles, decisions, API requests, GC pauses and slow
event-loop callbacks). Rounds alternate quiet and loaded (`--burn N` CPU-bound processes beside the
run, started at the round's start and stopped at its end); each round is `--samples` of #1
(`scenarios.acquire`'s steps: claim create → `Held` seen) and `--shared-samples` of #10 (one more
`Shared` claim beside `--holders` Shared holders), after `--samples` of the anchor O (a Lease
created → seen on a watch, `anchors.create_seen`) in the same phase. Each sample is cut into stages
by the stamps:

- create: the client's create sent → its answer;
- event: create sent → the operator's watch delivers the claim (ADDED);
- queue: that event → the resource's reconcile starts;
- decide: reconcile start → the arbiter called;
- grant: decision → the lock's write answered (a POST for #1; #10 adds a grant to the lock);
- held write: the lock's write answered → the claim's `Held` status write answered;
- seen: that answer → the client's watch shows `Held`;

and beside them, for the sample's window, the operator's requests by verb and resource, its GC
pauses and its event-loop callbacks over 5 ms. Prints per round and phase the median and the slowest
tenth of each stage, and writes every sample (`--out`).

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/acquire_stages.py --out FILE --workdir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anchors
import harness
import options
import scenarios
from harness import (
    REPO,
    Env,
    OperatorProcess,
    RequestTally,
    Watch,
    deleted,
    ensure_namespace,
    measured_on_deployed_plane,
    new_client,
    unique,
)
from scenarios import HELD

from kubelock.kube import config, paths
from kubelock.testbed import ControlPlane

NS = "bench-stages"
NS_ANCHOR = "bench-stages-anchor"
STAGES = ("create", "event", "queue", "decide", "grant", "held_write", "seen", "total")


class ProbedOperator(OperatorProcess):
    stamps: Path = Path("stamps.jsonl")

    def argv(self) -> list[str]:
        command = super().argv()
        assert command[1:3] == ["-m", "kubelock.operator"]
        return [command[0], str(REPO / "bench" / "stage_probe.py"), str(self.stamps), *command[3:]]


def burn(stop_at: float) -> None:
    # A forked copy of this process inherits the test bed's SIGTERM handler, which stops every control
    # plane it knows of: a burner must die of its signal, not take the control plane with it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    x = 0
    while time.time() < stop_at:
        x = (x * 31 + 7) % 1000003


async def one_acquire(env: Env, name: str) -> dict[str, Any]:
    resource = f"bench://stages/{name}"
    lname = scenarios.lock_of(resource)
    async with (
        Watch(env.client, paths.claims(NS), fieldSelector=f"metadata.name={name}") as claims,
        Watch(env.client, paths.locks(NS), fieldSelector=f"metadata.name={lname}") as locks,
    ):
        t0 = time.time()
        p0 = time.perf_counter()
        await env.client.create(paths.claims(NS), scenarios.claim_body(name, resource, "agent"))
        created = time.time()
        seen = await claims.wait_for(name, HELD, env.timeout)
        await env.client.delete(paths.claims(NS, name))
        await locks.wait_for(lname, deleted, env.timeout)
    return {"kind": "acquire", "name": name, "resource": resource, "lock": lname, "t0": t0, "created": created,
            "held": t0 + (seen.at - p0)}


async def shared_round(env: Env, holders: int, samples: int) -> list[dict[str, Any]]:
    tag = unique("s")
    resource = f"bench://stages-shared/{tag}"
    lname = scenarios.lock_of(resource)
    out = []
    version = await harness.current_version(env.client, paths.claims(NS))
    async with Watch(env.watcher, paths.claims(NS), resource_version=version) as watch:
        readers = [f"{tag}-r{i}" for i in range(holders)]
        for name in readers:
            await env.client.create(paths.claims(NS), scenarios.claim_body(name, resource, name, mode="Shared"))
        for name in readers:
            await watch.wait_for(name, HELD, env.timeout)
        for k in range(samples):
            name = f"{tag}-s{k}"
            t0 = time.time()
            p0 = time.perf_counter()
            await env.client.create(paths.claims(NS), scenarios.claim_body(name, resource, name, mode="Shared"))
            created = time.time()
            seen = await watch.wait_for(name, HELD, env.timeout)
            out.append({"kind": "shared", "name": name, "resource": resource, "lock": lname, "t0": t0,
                        "created": created, "held": t0 + (seen.at - p0)})
            await env.client.delete(paths.claims(NS, name))
            await watch.wait_for(name, deleted, env.timeout)
            watch.forget(name)
        for name in readers:
            await env.client.delete(paths.claims(NS, name))
    await scenarios.settle_locks(env, NS)
    return out


def load_stamps(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _resource_of(path: str) -> str:
    parts = path.split("?")[0].rstrip("/").split("/")
    for i, part in enumerate(parts):
        if part in ("lockclaims", "resourcelocks", "events", "lockpolicies", "leases", "pods"):
            rest = parts[i + 1:]
            sub = rest[1] if len(rest) > 1 else ""
            return part + (f"/{sub}" if sub else "")
    return parts[-1]


def stages(sample: dict[str, Any], stamps: list[dict[str, Any]]) -> dict[str, Any]:
    """Cut one sample into its stages by the operator's stamps (None where a stamp is missing)."""
    t0, held, name = sample["t0"], sample["held"], sample["name"]
    window = [s for s in stamps if s.get("t1", s.get("t0", 0)) >= t0 and s.get("t0", 0) <= held]
    ev = next((s for s in window if s["k"] == "ev" and s["noun"] == "claim" and s["name"] == name), None)
    run = next((s for s in window if s["k"] == "run" and s["resource"] == sample["resource"]
                and ev is not None and s["t1"] >= ev["t0"]), None)
    dec = next((s for s in window if s["k"] == "decide" and s["resource"] == sample["resource"]
                and ev is not None and s["t0"] >= ev["t0"]), None)
    lock_write = next((s for s in window if s["k"] == "req" and s["m"] != "GET" and (
        s.get("name") == sample["lock"] or s["p"].rstrip("/").endswith("/" + sample["lock"]))
        and dec is not None and s["t0"] >= dec["t0"]), None)
    status = next((s for s in window if s["k"] == "req" and s["p"].endswith(f"/lockclaims/{name}/status")
                   and s["s"] == 200), None)
    out: dict[str, Any] = {"kind": sample["kind"], "name": name, "total": held - t0,
                           "create": sample["created"] - t0}
    out["event"] = ev["t0"] - t0 if ev else None
    out["queue"] = run["t0"] - ev["t0"] if run and ev else None
    out["decide"] = dec["t0"] - run["t0"] if dec and run else None
    out["grant"] = lock_write["t1"] - dec["t1"] if lock_write and dec else None
    out["held_write"] = status["t1"] - (lock_write["t1"] if lock_write else dec["t1"]) if status and dec else None
    out["status_request"] = status["t1"] - status["t0"] if status else None
    out["lock_request"] = lock_write["t1"] - lock_write["t0"] if lock_write else None
    out["seen"] = held - status["t1"] if status else None
    requests: dict[str, int] = {}
    for s in window:
        if s["k"] == "req" and s["t0"] >= t0:
            key = f"{s['m']} {_resource_of(s['p'])} {s['s']}"
            requests[key] = requests.get(key, 0) + 1
    out["requests"] = requests
    out["lock_body_bytes"] = lock_write.get("bytes") if lock_write else None
    out["gc_ms"] = round(1000 * sum(s["t1"] - s["t0"] for s in window if s["k"] == "gc"), 2)
    out["gc"] = [(s["gen"], round(1000 * (s["t1"] - s["t0"]), 1)) for s in window if s["k"] == "gc"]
    out["slow"] = [(s["what"], round(1000 * (s["t1"] - s["t0"]), 1), round(1000 * (s["t0"] - t0), 1))
                   for s in window if s["k"] == "slow"]
    return out


def apiserver_figures(text: str) -> dict[str, Any]:
    """Mean time per request in the API server (kubelock's kinds) and per admission policy check, over
    the whole run: where a write's time goes on the server side."""
    figures: dict[str, Any] = {}
    for metric, keys in (("apiserver_request_duration_seconds", ("verb", "resource", "subresource")),
                         ("apiserver_validating_admission_policy_check_duration_seconds", ("policy",)),
                         ("apiserver_admission_step_admission_duration_seconds", ("operation", "type", "rejected"))):
        sums: dict[tuple[str, ...], list[float]] = {}
        for line in text.splitlines():
            for part in ("_sum{", "_count{"):
                if line.startswith(metric + part) and (match := harness._SAMPLE.match(line)) is not None:
                    labels = dict(harness._LABEL.findall(match["labels"]))
                    if metric.endswith("request_duration_seconds") and labels.get("group") != "kubelock.dev":
                        continue
                    key = tuple(labels.get(k, "") for k in keys)
                    slot = sums.setdefault(key, [0.0, 0.0])
                    slot[0 if part == "_sum{" else 1] += float(match["value"])
        figures[metric] = {"/".join(k): {"n": int(c), "mean_ms": round(1000 * s / c, 2)}
                           for k, (s, c) in sorted(sums.items()) if c}
    return figures


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each stage over all samples, and over the slowest tenth (by total)."""
    ranked = sorted(rows, key=lambda r: r["total"])
    tail = ranked[-max(1, len(ranked) // 10):]

    def med(group: list[dict[str, Any]], stage: str) -> float | None:
        values = [r[stage] for r in group if r.get(stage) is not None]
        return round(1000 * statistics.median(values), 2) if values else None

    return {
        "n": len(rows),
        "median_ms": {s: med(rows, s) for s in (*STAGES, "status_request", "lock_request")},
        "slowest_tenth_ms": {s: med(tail, s) for s in (*STAGES, "status_request", "lock_request")},
        "slowest": [{k: (round(1000 * v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in tail],
    }


async def measure(plane: ControlPlane, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    rounds: list[dict[str, Any]] = []
    failures: list[str] = []
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        await ensure_namespace(client, NS)
        await ensure_namespace(client, NS_ANCHOR)
        op = ProbedOperator("kubelock", plane.kubeconfig, NS, logs, source=args.operator)
        op.stamps = logs / "stamps.jsonl"
        await op.start(within=120)
        try:
            for _ in range(3):  # connections and caches warm
                await one_acquire(env, unique("w"))
            for index in range(args.rounds):
                for phase in (("quiet", "loaded") if index % 2 == 0 else ("loaded", "quiet")):
                    burners: list[multiprocessing.Process] = []
                    if phase == "loaded":
                        stop_at = time.time() + 600
                        burners = [multiprocessing.Process(target=burn, args=(stop_at,)) for _ in range(args.burn)]
                        for b in burners:
                            b.start()
                        await asyncio.sleep(1.0)
                    load = os.getloadavg()[0]
                    try:
                        o = (await anchors.create_seen(env, NS_ANCHOR, args.samples)).o
                        samples = []
                        for _ in range(args.samples):
                            try:
                                samples.append(await one_acquire(env, unique("a")))
                            except TimeoutError as error:  # a watch not set up in time: the sample is lost
                                failures.append(f"round {index} {phase}: {error}")
                        samples += await shared_round(env, args.holders, args.shared_samples)
                    finally:
                        for b in burners:
                            b.kill()  # SIGKILL: nothing of the parent's runs in the child
                            b.join()
                    rounds.append({"round": index, "phase": phase, "load1": round(load, 2), "o": o,
                                   "load1_after": round(os.getloadavg()[0], 2), "samples": samples})
                    print(f"round {index} {phase} load {load:.2f}", file=sys.stderr, flush=True)
            text = await harness.scrape(f"{credentials.server}/metrics", credentials.ssl_context())
        finally:
            op.stop()
    stamps = load_stamps(op.stamps)
    out: dict[str, Any] = {"rounds": [], "apiserver": apiserver_figures(text), "failures": failures}
    for r in rounds:
        cut = [stages(s, stamps) for s in r["samples"]]
        out["rounds"].append({"round": r["round"], "phase": r["phase"], "load1": r["load1"],
                              "o_ms": {"p50": round(1000 * statistics.median(r["o"]), 2),
                                       "p90": round(1000 * sorted(r["o"])[int(0.9 * len(r["o"]))], 2)},
                              "load1_after": r["load1_after"],
                              "acquire": summary([c for c in cut if c["kind"] == "acquire"]),
                              "shared": summary([c for c in cut if c["kind"] == "shared"]),
                              "samples": cut})
    for phase in ("quiet", "loaded"):
        for kind in ("acquire", "shared"):
            every = [c for r in out["rounds"] if r["phase"] == phase for c in r["samples"] if c["kind"] == kind]
            out[f"{phase}_{kind}"] = summary(every) if every else None
        o = [x for r in rounds if r["phase"] == phase for x in r["o"]]
        out[f"{phase}_o_ms"] = {"n": len(o), "p50": round(1000 * statistics.median(o), 2),
                                "p90": round(1000 * sorted(o)[int(0.9 * len(o))], 2),
                                "slowest_tenth_median":
                                    round(1000 * statistics.median(sorted(o)[-max(1, len(o) // 10):]), 2)}
    return out


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--shared-samples", type=int, default=20)
    parser.add_argument("--holders", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--burn", type=int, default=3, help="CPU-bound processes beside a loaded phase")
    parser.add_argument("--operator", type=Path, default=REPO / "operator")
    options.add_outputs(parser)
    args = parser.parse_args()
    args.operator = args.operator.resolve()
    harness.OPERATOR_SOURCE[0] = args.operator
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-stages-"))
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    result, loads = measured_on_deployed_plane(workdir, lambda plane: measure(plane, args, workdir / "logs"))
    document = {"operator": str(args.operator), **loads, **result}
    text = json.dumps(document, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(args.out)
    print(json.dumps(document["apiserver"], indent=1))
    for key in ("quiet_o_ms", "loaded_o_ms"):
        print(key, json.dumps(document.get(key)))
    for key in ("quiet_acquire", "loaded_acquire", "quiet_shared", "loaded_shared"):
        part = document.get(key)
        if part:
            print(key, json.dumps({"n": part["n"], "median_ms": part["median_ms"],
                                   "slowest_tenth_ms": part["slowest_tenth_ms"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
