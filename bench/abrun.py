"""What the A/B scripts (handoff_ab.py, restart_ab.py) share: two operator trees given on the command
line, one control plane they are measured on in turns, and the JSON document of the result with the
machine's load before and after (these machines are noisy: a ratio is read with its load)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from harness import REPO

from kubelock.testbed import ControlPlane, find_binaries

Measure = Callable[[ControlPlane, dict[str, Path], Path], Coroutine[Any, Any, dict[str, Any]]]


def parser(doc: str | None, *, rounds: int, rounds_help: str) -> argparse.ArgumentParser:
    """The arguments every A/B script takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="tree A (its operator/ directory is run)")
    parser.add_argument("b", type=Path, help="tree B")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--out", type=Path, default=None, help="write the result here as JSON")
    parser.add_argument("--workdir", type=Path, default=None)
    return parser


def trees(args: argparse.Namespace) -> dict[str, Path]:
    return {"A": args.a.resolve(), "B": args.b.resolve()}


def run(args: argparse.Namespace, name: str, measure: Measure, **facts: Any) -> int:
    """Start a control plane, `measure` the two trees on it, print the result (and write it to
    `--out`) with `facts` (the script's settings) and the load before and after."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"kubelock-{name}-ab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    plane = ControlPlane(workdir / "control-plane", bin_dir=find_binaries(),
                         manifests=[REPO / "crds", REPO / "config/rbac"])
    plane.start()
    try:
        result = asyncio.run(measure(plane, trees(args), workdir))
    finally:
        plane.stop()
    document = {"trees": {k: str(v) for k, v in trees(args).items()}, **facts, "rounds": args.rounds,
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()], "results": result}
    text = json.dumps(document, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0
