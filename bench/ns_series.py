"""What short-lived namespaces leave in the operator's `/metrics` and memory.

One control plane; each operator tree given runs in turn (alternated, `--rounds` times) over the same
workload: `--namespaces` namespaces are created, each gets two granted claims and a rejected
try-lock, the claims are released and the namespace is deleted. Before and after (every namespace
gone, then `--settle` seconds) the `/metrics` answer is measured (bytes, sample lines, lines with a
`namespace` label) with the operator's RSS. One JSON line per round on stdout.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/ns_series.py \
        --operator /tmp/old/operator --operator operator --namespaces 300 --workdir /tmp/nss
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes
import options
from kubernetes.client import CoreV1Api, V1Namespace, V1ObjectMeta

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubelock.testbed import ControlPlane  # noqa: E402
from tests.support.claims import Locks  # noqa: E402
from tests.support.operator import free_port  # noqa: E402

MANIFESTS = ("crds", "config/rbac", "config/admission")


def scrape(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        raw = response.read()
    lines = [line for line in raw.decode().splitlines() if line and not line.startswith("#")]
    return {"bytes": len(raw), "samples": len(lines), "namespaced": sum('namespace="' in line for line in lines)}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def one_namespace(api: kubernetes.client.ApiClient, name: str) -> None:
    core = CoreV1Api(api)
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))
    locks = Locks(api, name)
    locks.claim("a", "deploy://one", "agent-a")
    locks.claim("b", "deploy://two", "agent-b")
    locks.wait_phases(["a", "b"], "Held", timeout=120)
    locks.claim("c", "deploy://one", "agent-c")
    locks.wait_phase("c", "Rejected", timeout=120)
    for claim in ("a", "b"):
        locks.delete(claim)
    core.delete_namespace(name)


def gone(api: kubernetes.client.ApiClient, prefix: str) -> bool:
    names = (n.metadata.name if n.metadata else None for n in CoreV1Api(api).list_namespace().items)
    return not any(name is not None and name.startswith(prefix) for name in names)


def round_of(plane: ControlPlane, tree: Path, tag: str, count: int, settle: float, workdir: Path) -> dict[str, object]:
    port, health = free_port(), free_port()
    log = (workdir / f"{tag}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubelock.operator", "--kubeconfig", str(plane.kubeconfig), "--metrics-port",
         str(port), "--health-address", f"127.0.0.1:{health}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=workdir,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                before = scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        time.sleep(5)
        before, rss_before = scrape(port), rss_kib(proc.pid)
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        prefix = f"nss-{tag}-"
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: one_namespace(api, f"{prefix}{i}"), range(count)))
        worked = time.monotonic() - started
        peak = scrape(port)
        deadline = time.monotonic() + 600
        while not gone(api, prefix):
            if time.monotonic() > deadline:
                raise RuntimeError("namespaces not gone after 600 s")
            time.sleep(2)
        time.sleep(settle)
        after, rss_after = scrape(port), rss_kib(proc.pid)
        return {"operator": str(tree), "tag": tag, "namespaces": count, "work_seconds": round(worked, 1),
                "before": before, "at_end_of_work": peak, "after": after, "rss_kib_before": rss_before,
                "rss_kib_after": rss_after, "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    parser = options.parser(__doc__)
    parser.add_argument("--operator", action="append", required=True, type=Path, help="an operator tree (repeat)")
    parser.add_argument("--namespaces", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(args.workdir / "plane", manifests=[REPO / m for m in MANIFESTS])
    plane.start()
    try:
        for r in range(args.rounds):
            for i, tree in enumerate(args.operator):
                row = round_of(plane, tree.resolve(), f"r{r}o{i}", args.namespaces, args.settle, args.workdir)
                print(json.dumps(row), flush=True)
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
