"""What the A/B scripts (handoff_ab.py, restart_ab.py, restart_timeline.py) share: operator trees given
on the command line, one control plane they are measured on in turns, the held locks a restart is
measured among, and the JSON document of the result with the machine's load before and after (these
machines are noisy: a ratio is read with its load)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anchors
import options
from harness import REPO, Env, OperatorProcess, RequestTally, ensure_namespace, new_client
from scenarios import populate

from kubelock.kube import config
from kubelock.testbed import ControlPlane, find_binaries

Measure = Callable[[ControlPlane, dict[str, Path], Path], Coroutine[Any, Any, dict[str, Any]]]


def parser(doc: str | None, *, rounds: int, rounds_help: str) -> argparse.ArgumentParser:
    """The arguments every A/B script takes; a script adds its own."""
    parser = options.parser(doc, whole_doc=True)
    parser.add_argument("a", type=Path, help="tree A (its operator/ directory is run)")
    parser.add_argument("b", type=Path, help="tree B")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    options.add_outputs(parser)
    return parser


def trees(args: argparse.Namespace) -> dict[str, Path]:
    return {"A": args.a.resolve(), "B": args.b.resolve()}


def on_plane(workdir: Path | None, name: str, measure: Measure, measured: dict[str, Path]) -> dict[str, Any]:
    """Start a control plane, `measure` the trees on it and stop it: the result with the load before
    and after."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"kubelock-{name}-ab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    plane = ControlPlane(workdir / "control-plane", bin_dir=find_binaries(),
                         manifests=[REPO / "crds", REPO / "config/rbac"])
    plane.start()
    try:
        result = asyncio.run(measure(plane, measured, workdir))
    finally:
        plane.stop()
    return {"load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "results": result}


def run(args: argparse.Namespace, name: str, measure: Measure, **facts: Any) -> int:
    """`measure` the two trees on a control plane of their own (`on_plane`), print the result (and
    write it to `--out`) with `facts` (the script's settings) and the load before and after."""
    measured = on_plane(args.workdir, name, measure, trees(args))
    document = {"trees": {k: str(v) for k, v in trees(args).items()}, **facts, "rounds": args.rounds, **measured}
    return report(document, args.out)


def report(document: dict[str, Any], out: Path | None, **dumps: Any) -> int:
    """Print a script's result as JSON and write it to `out` (its `--out`) when given; the exit code 0."""
    text = json.dumps(document, indent=2, **dumps)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
    return 0


@dataclass
class RestartBed:
    """An operator among `locks` held locks (namespace `namespace`) and as many Leases (namespace
    `anchor`, for L), ready to be restarted from one tree or another (`op.source`)."""

    env: Env
    op: OperatorProcess
    namespace: str
    anchor: str


@contextlib.asynccontextmanager
async def restart_bed(plane: ControlPlane, first: Path, locks: int, logs: Path, *,
                      namespace: str = "bench-restart", extra_args: Sequence[str] = ()) -> AsyncIterator[RestartBed]:
    """The held locks a restart (#8) is measured among: an operator of tree `first` grants them."""
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        held = await ensure_namespace(client, namespace)
        anchor = await ensure_namespace(client, "bench-anchor")
        await anchors.create_leases(env, anchor, locks)
        op = OperatorProcess("kubelock", plane.kubeconfig, held, logs, source=first / "operator",
                             extra_args=tuple(extra_args))
        await op.start(within=90)
        try:
            seconds = await populate(env, held, locks, "live")
            print(f"{locks} held locks in {seconds:.1f} s", file=sys.stderr)
            yield RestartBed(env, op, held, anchor)
        finally:
            op.stop()
