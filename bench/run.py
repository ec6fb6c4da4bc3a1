"""`make bench` (`python bench/run.py [--quick]`): kubelock against the physical floor, in one run.

Starts a fresh local control plane (etcd, kube-apiserver, kube-controller-manager, kwok), the
kubelock operator and the naive kopf comparator as subprocesses, runs the blocks of blocks.py and
writes bench/results/latest.json and latest.md. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from blocks import FULL, QUICK, Plan, Runner
from harness import REPO, Env, RequestTally, new_client
from report import Document, render_markdown

from kubelock.kube import config
from kubelock.testbed import ControlPlane, find_binaries

log = logging.getLogger("bench")
MANIFESTS = ("crds", "config/rbac")
# kubelock's ValidatingAdmissionPolicies, which every install applies (chart, manifests/, testbed).
ADMISSION = "config/admission"
NODE = "bench-kwok-node"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0"),
                        help="the short run (QUICK=1): fewer rounds and samples, 1 000 / 2 000 live locks")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where latest.json/md go")
    parser.add_argument("--workdir", type=Path, default=None, help="control plane and logs (default: a temp dir)")
    parser.add_argument("--only", type=int, action="append", default=[], help="run only these metric ids")
    parser.add_argument("--patience", type=float, default=1.0,
                        help="multiply every block's time limit and the run's budget (a loaded machine: a block "
                        "cut short by its limit leaves its later figures, and the next blocks' start, behind)")
    parser.add_argument("--operator", type=Path, default=None,
                        help="run the kubelock operator from this source tree (its `operator/` directory) "
                        "instead of this checkout's: two versions measured by the same harness")
    parser.add_argument("--operator-b", type=Path, default=None,
                        help="a second operator tree: #4 and #8 measure it too (flavour kubelock-b), "
                             "alternating with the first in the same run")
    parser.add_argument("--profiling", action="store_true",
                        help="kube-apiserver with /debug/pprof on (for a CPU profile taken from outside)")
    parser.add_argument("--admission", action=argparse.BooleanOptionalAction, default=True,
                        help="apply kubelock's admission policies (config/admission/) as every install does "
                        "(the default); --no-admission measures without them, as runs before 2026-11-27 did")
    return parser.parse_args(argv)


def machine(plane: ControlPlane, plan: Plan, version: dict[str, Any]) -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )
    etcd = subprocess.run([str(plane.bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=False)
    memory = next(
        (int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal")),
        0,
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if plan.quick else "full",
        "budget_s": plan.budget,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": memory,
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "kubernetes": version.get("gitVersion", "?"),
        "etcd": etcd.stdout.split("\n")[0].replace("etcd Version: ", "") if etcd.returncode == 0 else "?",
        "kopf": importlib.metadata.version("kopf"),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "client_loop": "uvloop" if _uvloop() else "asyncio",
        "commit": _commit(),
        "operator_source": str(harness.OPERATOR_SOURCE[0]),
        **({"operator_source_b": str(harness.OPERATOR_SOURCE_B[0])} if harness.OPERATOR_SOURCE_B[0] else {}),
    }


def _commit() -> str:
    """The commit measured, marked dirty when the operator's code or the CRDs differ from it."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "operator", "crds", "config")
    return f"{head}-dirty" if dirty else head


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def bench(plane: ControlPlane, plan: Plan, only: Sequence[int], log_dir: Path, deadline: float) -> Document:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, NODE, plan.quick)
        version = await client.get("/version")
        runner = Runner(env, plan, plane.kubeconfig, log_dir)
        runner.doc.machine = machine(plane, plan, version)
        return await runner.run(only, deadline)


def run_loop(coro: Coroutine[Any, Any, Document]) -> Document:
    if _uvloop():
        import uvloop

        document: Document = uvloop.run(coro)
        return document
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubelock.testbed").setLevel(logging.WARNING)
    plan = QUICK if args.quick else FULL
    if args.patience != 1.0:
        plan = dataclasses.replace(
            plan, block_limits={k: v * args.patience for k, v in plan.block_limits.items()},
            budget=plan.budget * args.patience,
        )
    if args.operator is not None:
        harness.OPERATOR_SOURCE[0] = args.operator.resolve()
    if args.operator_b is not None:
        harness.OPERATOR_SOURCE_B[0] = args.operator_b.resolve()
    harness.compile_operators()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-bench-"))
    began = time.monotonic()
    plane = ControlPlane(
        workdir / "control-plane", bin_dir=find_binaries(),
        manifests=[REPO / m for m in (*MANIFESTS, *([ADMISSION] if args.admission else []))],
        profiling=args.profiling,
    )
    plane.start()
    log.info("control plane up in %.1f s at %s; logs in %s", plane.startup_seconds or 0, plane.server, workdir)
    try:
        plane.create_fake_node(NODE)
        doc = run_loop(bench(plane, plan, args.only, workdir / "logs", began + plan.budget))
    finally:
        plane.stop()
    doc.machine["admission_policies"] = args.admission
    doc.machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc.machine["duration_s"] = round(time.monotonic() - began, 1)
    data = doc.to_json()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    (args.out / "latest.md").write_text(render_markdown(data))
    print(render_markdown(data))
    log.info("wrote %s and latest.md in %.0f s", args.out / "latest.json", time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
