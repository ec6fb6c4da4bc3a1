"""A holder pod's end behind a frozen pod watch, against the real API server.

kopf watches the holder pods on its own aiohttp session (`operator/handlers.py`), which
`kube/keepalive.py` does not reach. When its connections go silent (`Partition.blackhole_open`: the
connections open at the moment carry nothing, new ones work), two things find a holder pod's end:
kopf itself, which gives up a watch that delivered nothing for `settings.watching.inactivity_timeout`
(70 s) and watches again from its last version, and the operator's periodic resync of holder pods
(`runtime._resync_forever`). The test isolates the resync: the pod is touched just before the freeze,
so kopf's watch is not given up before 70 s, and the freeze comes before the resync's first pass, whose
LISTs then meet the pooled connections the freeze left silent (each ends after the LIST timeout, 30 s).
Before the fix the failed pass (an ExceptionGroup out of the LISTs' TaskGroup, which
`except (ApiError, Unreachable)` does not catch) ended the resync loop for good, and only kopf's
reconnection found the pod's end, 70 s after the freeze; and while pooled connections were reused up
to 60 s idle, a retried pass could meet the next silent one (`kube/client.POOLED_IDLE_SECONDS`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from tests.support.claims import Locks, phase_of, status_of
from tests.support.monitor import HolderMonitor
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, kubeconfig_for

Cluster = Any
R = "deploy://frozen-pod"
POD_LABEL = {"kubelock.dev/lock-holder": "true"}
# Written out so that a regression in the code cannot loosen the test (`operator/runtime.py`): a
# resync LIST on a silent pooled connection ends after 30 s, the failed pass is tried again 5 s later
# (on fresh connections: none idle for 30 s is reused), and a write (the revocation, the grant) on a
# silent pooled connection ends after 10 s.
LIST_TIMEOUT_SECONDS = 30.0
RESYNC_RETRY_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0
FIRST_PASS_SECONDS = 5.0  # the resync's first pass after the start
KOPF_INACTIVITY_SECONDS = 70.0  # kopf's `settings.watching.inactivity_timeout`
SLACK = 10.0  # two shared cores


def _holder_pod(admin_api: ApiClient, ns: str, name: str, node: str) -> str:
    body = {
        "metadata": {"name": name, "labels": POD_LABEL},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "agent:latest"}]},
    }
    return str(CoreV1Api(admin_api).create_namespaced_pod(ns, body).metadata.uid)


def _started_at(log: str) -> float:
    """When the operator logged its start (its resync's first pass comes FIRST_PASS_SECONDS later)."""
    line = next(line for line in log.splitlines() if "kubelock operator watching" in line)
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
    return stamp.timestamp()


def test_a_holder_pods_end_behind_a_frozen_pod_watch_is_seen_by_the_resync(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, partition: Partition, fake_node: str,
    tmp_path: Path,
) -> None:
    config = kubeconfig_for(control_plane.kubeconfig, partition.address, tmp_path / "operator-kubeconfig")
    locks = Locks(admin_api, iso_ns)
    bound = LIST_TIMEOUT_SECONDS + RESYNC_RETRY_SECONDS + REQUEST_TIMEOUT_SECONDS + SLACK
    assert bound < KOPF_INACTIVITY_SECONDS  # kopf's own reconnection must not be what passes the test
    # Made before the start, which decides them: the freeze must come before the resync's first pass.
    uid = _holder_pod(admin_api, iso_ns, "agent-0", fake_node)
    locks.claim("mine", R, "agent-0", pod=("agent-0", uid))
    time.sleep(0.1)  # created in this order, so granted in this order
    locks.claim("next", R, "agent-1", wait=True)
    with OperatorProcess(config, tmp_path / "operator.log", namespaces=(iso_ns,)) as op, \
            HolderMonitor(admin_api, iso_ns) as holders:
        locks.wait_phase("mine", "Held")
        locks.wait_phase("next", "Pending")
        # kopf's pod watch delivers an event now: it is not given up for 70 s after it.
        CoreV1Api(admin_api).patch_namespaced_pod("agent-0", iso_ns, {"metadata": {"annotations": {"touched": "1"}}})
        time.sleep(0.5)  # the operator's writes are answered; from here it writes nothing
        partition.blackhole_open()
        frozen = time.time()
        started = _started_at(op.log_text())
        print(f"froze {frozen - started:.2f} s after the operator's start")
        if frozen > started + FIRST_PASS_SECONDS - 0.5:
            partition.heal()
            pytest.skip(f"froze {frozen - started:.1f} s after the start, past the resync's first pass: too slow")
        # The claim, lock and policy watches, and kopf's pod watch, at least.
        assert partition.silent_connections >= 4, partition.silent_connections
        CoreV1Api(admin_api).delete_namespaced_pod("agent-0", iso_ns, grace_period_seconds=0)
        locks.wait_phase("next", "Held", timeout=bound + 30)
        granted = time.time() - frozen
        log = op.log_text()
        print(f"next held {granted:.1f} s after the path froze and the holder pod was deleted "
              f"({partition.silent_connections} connections silent)")
        assert granted < bound, (granted, log[-6000:])
        assert "resync found" in log, log[-6000:]  # the resync found it, not kopf's reconnection
        revoked = locks.get("mine")
        assert phase_of(revoked) == "Revoked", revoked
        assert status_of(revoked)["reason"] == "HolderPodTerminated", revoked
    assert not holders.violations, holders.violations
