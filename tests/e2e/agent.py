"""The agent the end-to-end test runs in three replicas: it works on shared items one at a time,
each under a kubelock lock taken with the SDK, and logs one JSON line per step.

In the pod the SDK needs no configuration: the holder is the pod's identity and instance
(pod:<namespace>/<pod>/<uid prefix>, from its ServiceAccount token), the claim names the pod so that
the pod's death releases its locks, and the namespace is POD_NAMESPACE.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from kubelock.sdk import LockClient, LockError

ITEMS = [f"work://e2e/item-{i}" for i in range(int(os.environ.get("ITEMS", "3")))]
HOLD_SECONDS = float(os.environ.get("HOLD_SECONDS", "2"))
TTL_SECONDS = int(os.environ.get("TTL_SECONDS", "30"))
POD = os.environ.get("POD_NAME", "local")
#: Which of a pod's processes logs (its KUBELOCK_INSTANCE, when several share the pod).
PROCESS = os.environ.get("KUBELOCK_INSTANCE", "")
#: Seconds between "tick" lines while an item is worked on; 0: none. A process killed while it works
#: logs no "end": its last tick tells how long it certainly worked.
TICK_SECONDS = float(os.environ.get("TICK_SECONDS", "0"))


def log(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "pod": POD, "process": PROCESS, "time": time.time(), **fields}) + "\n"
    # One write(2) per line: the processes of a pod share its stdout, and print() writes the line and
    # its newline apart, so two processes' lines could run together.
    os.write(1, line.encode())


def work(client: LockClient, uri: str) -> None:
    with client.lock(uri, ttl=TTL_SECONDS, wait=True, timeout=120) as lease:
        # "start" is logged after the grant and "end" before the release, so two agents' intervals
        # on one item overlap only if they really held the lock at the same time.
        log("start", item=uri, token=lease.fencing_token)
        deadline = time.monotonic() + HOLD_SECONDS
        tick = time.monotonic() + TICK_SECONDS
        while time.monotonic() < deadline:
            if lease.lost.is_set():
                log("lost", item=uri, token=lease.fencing_token)
                return
            if TICK_SECONDS and time.monotonic() >= tick:
                log("tick", item=uri, token=lease.fencing_token)
                tick += TICK_SECONDS
            time.sleep(0.05)
        log("end", item=uri, token=lease.fencing_token)


def main() -> None:
    with LockClient() as client:
        log("ready", holder=client.identity().holder)
        while True:
            uri = random.choice(ITEMS)
            try:
                work(client, uri)
            except LockError as error:
                log("error", item=uri, error=f"{type(error).__name__}: {error}")
                time.sleep(1)


if __name__ == "__main__":
    main()
