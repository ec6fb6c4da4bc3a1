"""Where a restart's time goes (#8): `python bench/restart_timeline.py TREE [TREE ...] --locks 10000`.

The scenario of `run.py`'s #8 (SIGKILL, a new process at once, a new claim created at once, until it is
`Held`) on one control plane, each tree in turn, the new process started with `--debug kubelock.start
--debug kubelock.early --debug kubelock.prelist`: the steps those loggers name (settings and
credentials read, imports done, event loop running, policies listed, the early path's LIST, view,
writes, the priming in) as seconds from the SIGKILL, beside the bench's own (process started, claim
created, `Held` seen). The operator's log timestamps are wall-clock milliseconds, as are the bench's.
"""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import abrun
import anchors
import options
from harness import Env, OperatorProcess, Watch, unique
from scenarios import HELD, claim_body

from kubelock.kube import paths
from kubelock.testbed import ControlPlane

DEBUG = ("--debug", "kubelock.start", "--debug", "kubelock.early", "--debug", "kubelock.prelist")
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})Z \S+\s+(\S+): (.*)$")
# (step, logger, what the message starts with or contains)
STEPS = (
    ("settings read", "kubelock.start", "settings read"),
    ("credentials read", "kubelock.start", "credentials read"),
    ("early LIST of unanswered claims in (thread)", "kubelock.prelist", "status.phase%3D"),
    ("early LIST of policies in (thread)", "kubelock.prelist", "lockpolicies"),
    ("imports done", "kubelock.start", "imports done"),
    ("event loop running", "kubelock.start", "event loop running"),
    ("early path: unanswered claims listed", "kubelock.early", "unanswered claims listed"),
    ("policies listed", "kubelock.start", "policies listed"),
    ("early path: view read", "kubelock.early", "view of claim"),
    ("early path: first write (lock create)", "kubelock.early", "applying CreateLock"),
    ("early path: second write (status)", "kubelock.early", "applying SetStatus"),
    ("early path: granted", "kubelock.early", "granted before the priming"),
    ("early LIST of claims in (thread)", "kubelock.prelist", "lockclaims:"),
    ("early LIST of locks in (thread)", "kubelock.prelist", "resourcelocks:"),
    ("priming in", "kubelock.start", "priming in"),
)


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()


def steps_of(log: str, killed: float) -> dict[str, float]:
    """Each step's first line in `log`, as seconds after `killed` (wall clock)."""
    found: dict[str, float] = {}
    for line in log.splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        at, logger, message = match.groups()
        for step, name, text in STEPS:
            if step not in found and logger == name and text in message:
                found[step] = round(_stamp(at) - killed, 3)
    return found


async def one_restart(env: Env, op: OperatorProcess, namespace: str) -> dict[str, Any]:
    name = unique("t")
    async with Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={name}") as watch:
        killed = time.time()
        op.kill()
        op.spawn()
        spawned = time.time()
        await env.client.create(paths.claims(namespace), claim_body(name, f"bench://restart/{name}", "agent"))
        created = time.time()
        seen = await watch.wait_for(name, HELD, 120)
        held = time.time() - (time.perf_counter() - seen.at)
    await op.wait_ready(60)
    await env.client.delete(paths.claims(namespace, name))
    timeline = {"process started (bench)": round(spawned - killed, 3),
                "claim created (bench)": round(created - killed, 3)}
    timeline |= steps_of(op.log_text(), killed)
    timeline["Held seen (bench)"] = round(held - killed, 3)
    return dict(sorted(timeline.items(), key=lambda kv: kv[1]))


async def measure(plane: ControlPlane, trees: list[Path], locks: int, rounds: int, logs: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    async with abrun.restart_bed(plane, trees[0], locks, logs, extra_args=DEBUG) as bed:
        for index in range(rounds):
            list_seconds, _ = await anchors.list_leases(bed.env, bed.anchor)
            for tree in trees if index % 2 == 0 else trees[::-1]:
                bed.op.source = tree / "operator"
                timeline = await one_restart(bed.env, bed.op, bed.namespace)
                runs.append({"round": index, "tree": str(tree), "L": round(list_seconds, 3),
                             "load1": round(os.getloadavg()[0], 1), "timeline": timeline})
                print(json.dumps(runs[-1], indent=1), file=sys.stderr)
                await asyncio.sleep(2)
    medians: dict[str, dict[str, float]] = {}
    for tree in trees:
        mine = [r["timeline"] for r in runs if r["tree"] == str(tree)]
        names = {step for t in mine for step in t}
        medians[str(tree)] = dict(sorted(
            ((step, round(statistics.median(t[step] for t in mine if step in t), 3)) for step in names),
            key=lambda kv: kv[1],
        ))
    return {"runs": runs, "medians": medians}


def main() -> int:
    parser = options.parser(__doc__, whole_doc=True)
    parser.add_argument("trees", type=Path, nargs="+", help="operator trees (their operator/ is run)")
    parser.add_argument("--locks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    options.add_outputs(parser)
    args = parser.parse_args()
    trees = [t.resolve() for t in args.trees]
    for tree in trees:
        compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    timelines = lambda plane, _, logs: measure(plane, trees, args.locks, args.rounds, logs)  # noqa: E731
    measured = abrun.on_plane(args.workdir, "timeline", timelines, {str(t): t for t in trees})
    document = {"locks": args.locks, "rounds": args.rounds, "load_before": measured["load_before"],
                "load_after": measured["load_after"], **measured["results"]}
    text = json.dumps(document, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(json.dumps(document["medians"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
