"""Start-up time and idle CPU of the test bed with and without the resourcequota controller
(`ControlPlane(quotas=True)`), alternated in rounds; one JSON line per start.

    PYTHONPATH=operator python bench/quota_bed_cost.py [WORKDIR]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from kubelock.testbed import ControlPlane

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = ("crds", "config/rbac", "config/admission")
COMPONENTS = ("kube-apiserver", "kube-controller-manager")
IDLE_SECONDS = 30
ROUNDS = 3
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(workdir: Path) -> dict[str, float]:
    """User+system CPU of the bed's processes (those whose command line names `workdir`), by binary."""
    seconds: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if str(workdir) in command:
            name = Path(command.split("\0")[0]).name
            seconds[name] = seconds.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def measure(workdir: Path, quotas: bool) -> dict[str, object]:
    plane = ControlPlane(workdir, manifests=[REPO / m for m in MANIFESTS], quotas=quotas)
    plane.start()
    try:
        before = cpu_seconds(workdir)
        time.sleep(IDLE_SECONDS)
        after = cpu_seconds(workdir)
    finally:
        plane.stop()
    return {
        "quotas": quotas,
        "startup_s": round(plane.startup_seconds or 0.0, 2),
        "kcm_phase_s": round(plane.phase_seconds.get("kube-controller-manager", 0.0), 2),
        f"idle_cpu_s_{IDLE_SECONDS}s": {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in COMPONENTS},
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kubelock-quota-cost")
    for round_ in range(ROUNDS):
        for quotas in (False, True) if round_ % 2 == 0 else (True, False):
            print(json.dumps({"round": round_, **measure(root / f"quotas-{int(quotas)}", quotas)}), flush=True)


if __name__ == "__main__":
    main()
