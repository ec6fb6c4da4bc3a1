"""What would meet #2, measured: the bare-ResourceLock floor, a reference operator and experimental
variants in alternating windows on one control plane.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/variants_ab.py \\
        --reference OLD/operator --variant lean=LEAN/operator --variant nohold=NOHOLD/operator:lock \\
        --variant nocel=OLD/operator:nocel [--agents 50] [--rounds 4] [--seconds 15] --out FILE

#2's targets are ratios to the bare ResourceLock create+delete of the same run (kube-apiserver CPU a
cycle ≤ 3×, cycles/s ≥ 0.3 × T_CR(N)); a variant that changes the claim protocol (a leaner `Held`
status, no `Held` write at all) can only be judged by those ratios in the same windows as the floor
and the unchanged operator. Each round runs one window of each: the floor (`anchors.
custom_resource_cycles`, no operator), the reference and every variant, each kubelock window with a
fresh operator of its tree (warmed for 2 s) and measured by `cycle_profile.window`; the order is
reversed every other round so that a trend in the load falls on all alike. A variant is
`NAME=TREE/operator[:lock][:nocel][:crd=FILE]`: `lock`, its client learns its grant from the
ResourceLock (a watch of the locks, the lock whose `spec.claimRef` names its claim) instead of the
claim's `Held`; `crd=FILE`, the LockClaim CRD is replaced by FILE for its windows and put back after;
`nocel`, by `--claim-crd` without any of its CEL rules (`x-kubernetes-validations`).
Prints every window; writes, per window and round, API CPU ÷ floor and cycles/s ÷ floor, and each
variant's ratios over the reference's in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import abrun
import anchors
import options
import scenarios
import yaml
from anchors import Cycles, run_cycles
from cycle_profile import NS_ANCHOR, NS_KUBELOCK, PLANE, window
from harness import (
    Env,
    OperatorProcess,
    Predicate,
    RequestTally,
    Seen,
    Watch,
    children_by_name,
    current_version,
    ensure_namespace,
    measured_on_deployed_plane,
    new_client,
    unique,
)

from kubelock.kube import config, paths
from kubelock.testbed import ControlPlane

CLAIM_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/lockclaims.kubelock.dev"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Variant:
    name: str
    tree: Path
    by_lock: bool = False
    crd: Path | None = None
    no_cel: bool = False

    @staticmethod
    def parse(text: str) -> Variant:
        name, _, rest = text.partition("=")
        tree, *options = rest.split(":")
        crd = next((Path(o[4:]).resolve() for o in options if o.startswith("crd=")), None)
        unknown = [o for o in options if o not in ("lock", "nocel") and not o.startswith("crd=")]
        if not name or not tree or unknown:
            raise argparse.ArgumentTypeError(f"not NAME=TREE[:lock][:nocel][:crd=FILE]: {text!r}")
        return Variant(name, Path(tree).resolve(), "lock" in options, crd, "nocel" in options)


def without_cel(node: Any) -> Any:
    """A CRD (or any part of one) with every `x-kubernetes-validations` rule list left out."""
    if isinstance(node, dict):
        return {k: without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(v) for v in node]
    return node


def held_by(claim: str) -> Predicate:
    """The lock's event that records a grant to `claim`."""
    def match(seen: Seen) -> bool:
        ref = ((seen.obj.get("spec") or {}).get("claimRef") or {})
        return seen.type in ("ADDED", "MODIFIED") and ref.get("name") == claim
    return match


async def claim_cycles_by_lock(env: Env, namespace: str, agents: int, seconds: float, warmup: float) -> Cycles:
    """#2's cycle with the holder told by the lock: create claim → its lock seen → delete claim."""
    tag = unique("c")
    version = await current_version(env.client, paths.locks(namespace))
    async with Watch(env.watcher, paths.locks(namespace), resource_version=version) as watch:

        async def cycle(index: int, k: int) -> None:
            name = f"{tag}-{index}-{k}"
            resource = f"bench://cycle/{tag}/{index}/{k}"
            lock = scenarios.lock_of(resource)
            await env.client.create(paths.claims(namespace), scenarios.claim_body(name, resource, f"agent-{index}"))
            await watch.wait_for(lock, held_by(name), env.timeout)
            await env.client.delete(paths.claims(namespace, name))
            watch.forget(lock)

        return await run_cycles(agents, seconds, warmup, cycle)


async def put_crd(env: Env, document: dict[str, Any]) -> None:
    """Replace the LockClaim CRD with `document` and give the API server time to serve it."""
    current = await env.client.get(CLAIM_CRD)
    body = {**document, "metadata": {**document["metadata"],
                                     "resourceVersion": current["metadata"]["resourceVersion"]}}
    await env.client.replace(CLAIM_CRD, body)
    await asyncio.sleep(3.0)


def writes_per_cycle(result: dict[str, Any]) -> float:
    return float(round(sum(r["per_cycle"] for k, r in result["requests"].items() if k.split("/")[0] in WRITE_VERBS), 2))


async def measure(plane: ControlPlane, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    variants = [Variant("reference", args.reference), *args.variant]
    original = yaml.safe_load(args.claim_crd.read_text())
    windows: list[dict[str, Any]] = []
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        for ns in (NS_KUBELOCK, NS_ANCHOR):
            await ensure_namespace(client, ns)
        labels = ["floor", *(v.name for v in variants)]
        for index in range(args.rounds):
            for label in labels if index % 2 == 0 else labels[::-1]:
                pids = {**children_by_name(PLANE), "bench client": os.getpid()}
                if label == "floor":
                    result = await window(env, pids, label, anchors.custom_resource_cycles(
                        env, NS_ANCHOR, args.agents, args.seconds, args.warmup))
                else:
                    variant = next(v for v in variants if v.name == label)
                    result = await kubelock_window(env, plane, variant, original, pids, args,
                                                   logs / f"{label}-{index}")
                result["writes_per_cycle"] = writes_per_cycle(result)
                windows.append({"round": index, **result})
                print({k: result[k] for k in ("label", "rate", "cycles", "writes_per_cycle", "load1")}
                      | {"api_ms": result["cpu_ms_per_cycle"]["kube-apiserver"]}, file=sys.stderr, flush=True)
    return summarise(windows, [v.name for v in variants], args.rounds)


async def kubelock_window(env: Env, plane: ControlPlane, variant: Variant, original: dict[str, Any],
                          pids: dict[str, int], args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    cycles = claim_cycles_by_lock if variant.by_lock else scenarios.claim_cycles
    swapped = variant.crd is not None or variant.no_cel
    if variant.crd is not None:
        await put_crd(env, yaml.safe_load(variant.crd.read_text()))
    if variant.no_cel:
        await put_crd(env, without_cel(original))
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    op = OperatorProcess("kubelock", plane.kubeconfig, NS_KUBELOCK, logs, source=variant.tree)
    await op.start(within=120)
    try:
        await cycles(env, NS_KUBELOCK, args.agents, 2.0, 1.0)  # warm
        await scenarios.settle_locks(env, NS_KUBELOCK)
        result = await window(env, {**pids, "operator": op.pid}, variant.name,
                              cycles(env, NS_KUBELOCK, args.agents, args.seconds, args.warmup))
        await scenarios.settle_locks(env, NS_KUBELOCK)
    finally:
        op.stop()
        if swapped:
            await put_crd(env, original)
    return result


def summarise(windows: list[dict[str, Any]], names: list[str], rounds: int) -> dict[str, Any]:
    per_round: list[dict[str, Any]] = []
    for index in range(rounds):
        of = {w["label"]: w for w in windows if w["round"] == index}
        floor = of["floor"]
        row: dict[str, Any] = {"round": index, "load1": [of[n]["load1"] for n in ["floor", *names]]}
        for name in names:
            w = of[name]
            row[name] = {
                "api_over_floor": round(w["cpu_ms_per_cycle"]["kube-apiserver"]
                                        / floor["cpu_ms_per_cycle"]["kube-apiserver"], 3),
                "rate_over_floor": round(w["rate"] / floor["rate"], 3),
                "machine_cpu_over_floor": round(sum(w["cpu_ms_per_cycle"].values())
                                                / sum(floor["cpu_ms_per_cycle"].values()), 3),
                "writes_per_cycle": w["writes_per_cycle"],
            }
        for name in names[1:]:
            ref, var = row["reference"], row[name]
            var["api_over_reference"] = round(var["api_over_floor"] / ref["api_over_floor"], 3)
            var["rate_over_reference"] = round(var["rate_over_floor"] / ref["rate_over_floor"], 3)
        per_round.append(row)
    medians = {name: {k: round(statistics.median(r[name][k] for r in per_round), 3) for k in per_round[0][name]}
               for name in names}
    return {"windows": windows, "rounds": per_round, "medians": medians}


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("--reference", type=Path, required=True, help="the unchanged operator tree")
    parser.add_argument("--variant", type=Variant.parse, action="append", default=[],
                        help="NAME=TREE/operator[:lock][:nocel][:crd=FILE]")
    parser.add_argument("--claim-crd", type=Path, default=Path(__file__).resolve().parent.parent
                        / "crds" / "kubelock.dev_lockclaims.yaml", help="the CRD put back after a crd= variant")
    options.add_windows(parser, agents=50, seconds=15.0)
    options.add_outputs(parser)
    args = parser.parse_args()
    args.reference = args.reference.resolve()
    for tree in {args.reference, *(v.tree for v in args.variant)}:
        compileall.compile_dir(str(tree / "kubelock"), quiet=1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-variants-"))
    result, loads = measured_on_deployed_plane(workdir, lambda plane: measure(plane, args, workdir / "logs"))
    document = {"agents": args.agents, "rounds": args.rounds, "seconds": args.seconds,
                "reference": str(args.reference),
                "variants": [{"name": v.name, "tree": str(v.tree), "by_lock": v.by_lock,
                              "crd": str(v.crd) if v.crd else None, "no_cel": v.no_cel} for v in args.variant],
                **loads, **result}
    return abrun.report(document, args.out)


if __name__ == "__main__":
    sys.exit(main())
