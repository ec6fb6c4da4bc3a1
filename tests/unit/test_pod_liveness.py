"""A claim's pod, as the operator judges it from the pod's body: a pod being deleted is stopping until
its containers have stopped (phase Succeeded/Failed) or it is removed, whatever its grace period says
(a node that cannot report leaves its containers running past it; the lease decides then)."""

from __future__ import annotations

import pytest

from kubelock.domain.model import PodLiveness
from kubelock.operator.cache import pod_info
from kubelock.operator.reconciler import _liveness

UID = "0f6e3c1a-2b4d-4e8f-9a0b-1c2d3e4f5a6b"
DELETION = "2026-11-27T15:00:30Z"  # the deletion's time plus its grace, as the API server sets it


def pod(*, phase: str = "Running", deletion: str | None = None, labelled: bool = True) -> dict[str, object]:
    meta: dict[str, object] = {"name": "agent-0", "namespace": "agents", "uid": UID}
    if labelled:
        meta["labels"] = {"kubelock.dev/lock-holder": "true"}
    if deletion:
        meta["deletionTimestamp"] = deletion
    return {"metadata": meta, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (pod(), PodLiveness.ALIVE),
        (pod(labelled=False), PodLiveness.UNWATCHED),
        # Being deleted, in its grace or past it: until the kubelet reports the containers stopped
        # (or the pod is removed), they may be running. Past the grace a kubelet that is alive has
        # killed them and says so; only one that cannot report leaves the pod like this.
        (pod(deletion=DELETION), PodLiveness.STOPPING),
        (pod(deletion=DELETION, phase="Failed"), PodLiveness.TERMINATED),  # its containers stopped
        (pod(deletion=DELETION, phase="Succeeded"), PodLiveness.TERMINATED),
        (pod(phase="Succeeded"), PodLiveness.TERMINATED),
    ],
    ids=["running", "unlabelled", "deleted", "deleted-and-failed", "deleted-and-succeeded", "succeeded"],
)
def test_liveness(body: dict[str, object], expected: PodLiveness) -> None:
    assert _liveness(pod_info(body), UID) is expected


def test_another_pod_under_the_same_name_is_the_end_of_the_claims_pod() -> None:
    assert _liveness(pod_info(pod()), "another-uid") is PodLiveness.TERMINATED


@pytest.mark.parametrize("holding", [True, False])
def test_a_stopping_pod_keeps_what_it_holds_and_gets_nothing_new(holding: bool) -> None:
    expected = PodLiveness.ALIVE if holding else PodLiveness.TERMINATED
    assert PodLiveness.STOPPING.effective(holding=holding) is expected
    for other in PodLiveness:
        if other is not PodLiveness.STOPPING:
            assert other.effective(holding=holding) is other
