"""The revision clock: when the API server committed a write, read from etcd's revisions, not from when
the monitor happened to hear of it.

The monitor stamps each change with the moment its watch event arrived. On a busy machine that is the
commit plus the watch's delivery plus however long the harness's own event loop was starved, so a lock
deleted in time could be stamped seconds late and counted against the operator. Every write has a
resourceVersion (one etcd revision orders every write of the cluster), so it is enough to know, for a
few revisions, when they were committed: a child process (`python -m chaos.clock`) writes one
ConfigMap every `INTERVAL` seconds and records, for each write, the revision it got, the moment just
before it was sent and the moment its answer arrived. A revision R between two ticks' revisions was
committed after the earlier tick was sent and before the later tick's answer arrived
(`chaos.history.commit_window`). The process is small and does nothing else, so a starved moment
only widens a window; it never moves one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kubelock.api import objects
from kubelock.kube import config
from kubelock.kube import errors as kube_errors
from kubelock.kube.client import KubeClient

INTERVAL = 0.1  # seconds between ticks: a window is about two write latencies plus this
NAMESPACE = "default"  # outside every scenario's namespace: nothing the operators or the monitor watch
NAME = "kubelock-chaos-clock"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


async def tick(kubeconfig: str, out: Path, interval: float, seconds: float) -> None:
    kube = KubeClient(config.load(kubeconfig), retries=0, user_agent="kubelock-chaos-clock")
    stop_at = time.time() + seconds
    serial = 0
    try:
        with out.open("a", encoding="utf-8") as handle:
            while time.time() < stop_at:
                serial += 1
                sent = time.time()
                try:
                    if serial == 1:
                        with contextlib.suppress(kube_errors.ApiError):
                            await kube.delete(f"{PATH}/{NAME}")
                        body = await kube.create(PATH, _body(serial))
                    else:
                        body = await kube.replace(f"{PATH}/{NAME}", _body(serial))
                except (kube_errors.ApiError, kube_errors.Unreachable):
                    serial = 0  # recreate it (an etcd restart may have lost it, a conflict may have hit)
                    await asyncio.sleep(interval)
                    continue
                received = time.time()
                version = objects.resource_version(body)
                if version:
                    # One line at a time, flushed: the harness reads the file while this runs and skips
                    # a torn last line.
                    handle.write(json.dumps({"type": "tick", "version": int(version), "sent": sent,
                                             "received": received}) + "\n")
                    handle.flush()
                await asyncio.sleep(interval)
    finally:
        await kube.close()


def _body(serial: int) -> dict[str, object]:
    # The content changes with every tick: a write that changes nothing gets no new revision.
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": NAMESPACE},
            "data": {"tick": str(serial)}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.clock", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    parser.add_argument("--seconds", type=float, default=24 * 3600.0)
    args = parser.parse_args(argv)
    asyncio.run(tick(args.kubeconfig, Path(args.out), args.interval, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
