"""The loaded mode (`--load`, `make chaos LOAD=1`): what else runs on a real node, beside every part.

- CPU burners: processes that spin at full speed, one core each, for the whole run.
- A second control plane (etcd and kube-apiserver of their own) kept busy by a churn process: clients
  that create, renew and delete Leases and a watch that follows them, at about the write rate the
  chaos scenarios put on the main control plane.

Both compete with the operator, the agents and the main API server for the same cores, so the
interleavings that load makes likely (a watch event before a write's response, a worker starved for a
second, a LIST that takes seconds) happen in every run rather than on an unlucky one.

`python -m chaos.load --kubeconfig K` runs the churn alone (the harness starts it as a child).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubelock.kube import config
from kubelock.kube import errors as kube_errors
from kubelock.kube.client import KubeClient
from kubelock.testbed.controlplane import ControlPlane
from kubelock.testbed.processes import ManagedProcess, start_process

REPO = Path(__file__).resolve().parents[1]
BURN = "while True: pass"
CHURN_CLIENTS = 40
CHURN_WRITES_PER_SECOND = 250.0
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"


@dataclass
class Load:
    """Start with `start()`, stop with `stop()`; `describe()` says what ran."""

    workdir: Path
    burners: int = 1
    churn: bool = True
    processes: list[ManagedProcess] = field(default_factory=list)
    plane: ControlPlane | None = None

    def start(self) -> None:
        logs = self.workdir / "logs"
        for index in range(self.burners):
            self.processes.append(start_process(f"cpu-burner-{index}", [sys.executable, "-c", BURN], log_dir=logs))
        if not self.churn:
            return
        self.plane = ControlPlane(self.workdir / "control-plane", controller_manager=False, kwok=False)
        self.plane.start()
        argv = [sys.executable, "-m", "chaos.load", "--kubeconfig", str(self.plane.kubeconfig)]
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}:{REPO}"}
        self.processes.append(start_process("churn", argv, log_dir=logs, env=env, cwd=REPO))

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=5)
        self.processes.clear()
        if self.plane is not None:
            self.plane.stop()
            self.plane = None

    def describe(self) -> str:
        parts = [f"{self.burners} CPU burner(s)"]
        if self.churn:
            parts.append(
                f"a second etcd + kube-apiserver churned by {CHURN_CLIENTS} clients at about "
                f"{CHURN_WRITES_PER_SECOND:.0f} Lease writes/s with a watch on them"
            )
        return ", ".join(parts)

    def check(self) -> list[str]:
        """What of the load died during the run (it must run throughout to count)."""
        return [f"{p.name} exited with {p.popen.returncode}: {p.tail(5)}" for p in self.processes if not p.alive()]


# ---- the churn process --------------------------------------------------------------------------------


async def _client_loop(kube: KubeClient, index: int, interval: float, stop_at: float) -> None:
    """Create a Lease, renew it twice, delete it; one write every `interval` seconds."""
    rng = random.Random(index)
    serial = 0
    while time.time() < stop_at:
        name = f"churn-{index:03d}-{serial}"
        serial += 1
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                "spec": {"holderIdentity": f"churn-{index}", "leaseDurationSeconds": 15}}
        with contextlib.suppress(kube_errors.ApiError, kube_errors.Unreachable):
            await kube.create(LEASES, body)
            for renewal in range(2):
                await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
                await kube.patch(f"{LEASES}/{name}", {"spec": {"leaseTransitions": renewal + 1}})
            await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
            await kube.delete(f"{LEASES}/{name}")
        await asyncio.sleep(interval * rng.uniform(0.5, 1.5))


async def _watch_loop(kube: KubeClient) -> None:
    while True:
        with contextlib.suppress(kube_errors.ApiError, kube_errors.Unreachable):
            async for _ in kube.watch(LEASES, timeout_seconds=60):
                pass
        await asyncio.sleep(0.5)


async def churn(kubeconfig: str, clients: int, rate: float, seconds: float) -> None:
    kube = KubeClient(config.load(kubeconfig), user_agent="kubelock-chaos-churn", connections=clients + 2)
    interval = clients / rate
    stop_at = time.time() + seconds
    watcher = asyncio.create_task(_watch_loop(kube))
    try:
        await asyncio.gather(*(_client_loop(kube, i, interval, stop_at) for i in range(clients)))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.load", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--clients", type=int, default=CHURN_CLIENTS)
    parser.add_argument("--rate", type=float, default=CHURN_WRITES_PER_SECOND, help="writes per second, in all")
    parser.add_argument("--seconds", type=float, default=24 * 3600.0)
    args = parser.parse_args(argv)
    asyncio.run(churn(args.kubeconfig, args.clients, args.rate, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
