"""Two containers of one pod are two holders, and a restarted container is still its own.

Both containers of a pod authenticate as the pod and, by default, each has its own pid namespace, so
the process mark on a claim (`kubelock.sdk.process`) cannot tell one from the other. With the pod's
instance alone both containers met on one claim: the second adopted the first's claim and fencing
token, and both held the lock at once. The instance now names the container
(`<uid prefix>.<container name>`, `kubelock.sdk.container`); these tests run the CLI in real
containers of the test-bed node (or kind), where that name is what the kubelet's mounts show.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest

from tests.e2e.agents import SLEEP, Agents, Obj, agent_pod, agents_namespace, poll, run
from tests.e2e.tools import Tools


@pytest.fixture
def agents(tools: Tools, kubelock: str, image: str) -> Iterator[Agents]:
    with agents_namespace(tools, image, "containers") as agents:
        yield agents


def two_container_pod(agents: Agents, name: str, script: str) -> Obj:
    """An agent pod whose two containers, `left` and `right`, run the same script."""
    pod = agent_pod(agents.namespace, name, agents.image, script)
    left = pod["spec"]["containers"][0]
    right = copy.deepcopy(left)
    left["name"], right["name"] = "left", "right"
    pod["spec"]["containers"] = [left, right]
    return pod


def test_two_containers_of_one_pod_do_not_both_hold_one_lock(agents: Agents) -> None:
    uri = "deploy://shared-by-two-containers"
    pod = agents.start_pod(two_container_pod(agents, "pair", "\n".join([run(f'rlock "{uri}"'), SLEEP])))
    [(left, left_code)] = agents.wait_outputs(pod, 1, container="left")
    [(right, right_code)] = agents.wait_outputs(pod, 1, container="right")
    # Exactly one of them holds it; the other is refused with the holder named: one lock, two holders.
    assert sorted([left_code, right_code]) == [0, 1], (left, right)
    taken, refused = (left, right) if left_code == 0 else (right, left)
    winner = "left" if left_code == 0 else "right"
    assert taken["holder"] == agents.holder(pod, winner), taken
    assert refused["error"] == "HeldByAnotherHolder" and refused["holder"] == agents.holder(pod, winner), refused
    claims = [c for c in agents.claims() if c["spec"]["resource"] == uri]
    assert sorted(c["spec"]["holder"] for c in claims) == sorted(agents.holder(pod, c) for c in ("left", "right"))


def test_a_restarted_container_takes_its_own_claim_back(agents: Agents) -> None:
    uri = "deploy://kept-across-a-restart"
    # The first run takes the lock and fails; the kubelet restarts the container (a new pid namespace,
    # a new termination-message file), whose second run asks again and must get the same claim back.
    script = "\n".join([
        "if [ -e /state/ran ]; then",
        run(f'rlock "{uri}"'), SLEEP,
        "fi",
        "touch /state/ran",
        run(f'rlock "{uri}"'),
        "exit 3",
    ])  # fmt: skip
    pod = agent_pod(agents.namespace, "again", agents.image, script)
    pod["spec"]["restartPolicy"] = "OnFailure"
    pod["spec"]["volumes"] = [{"name": "state", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "state", "mountPath": "/state"}]
    name = agents.start_pod(pod)
    [(first, first_code)] = agents.wait_outputs(name, 1, 120, previous=True)
    poll(lambda: (o := agents.outputs(name)) and o[0][0].get("fencingToken") is not None and o,
         "the restarted container's rlock", 120)  # fmt: skip
    [(second, second_code)] = agents.outputs(name)
    assert first_code == 0 and first["holder"] == agents.holder(name), first
    assert second_code == 0 and second["holder"] == first["holder"], second
    assert second["fencingToken"] == first["fencingToken"], (first, second)
    [claim] = [c for c in agents.claims() if c["spec"]["resource"] == uri]
    assert claim["status"]["phase"] == "Held"


def test_volumes_spelling_the_other_containers_file_do_not_merge_the_two(agents: Agents) -> None:
    """Each container mounts an emptyDir whose `subPathExpr` spells the other container's
    termination-message file (`pods/<uid>/containers/<other>/<8 hex>`): /proc/self/mountinfo then shows
    a second pod-and-container path beside the kubelet's own. Taken as a name, it made the name
    ambiguous in both, both fell back to the pod's instance and both held the lock again; only the
    kubelet's file (right under the pod's directory) names the container."""
    uri = "deploy://spelled-by-a-volume"
    pod = two_container_pod(agents, "spelled", "\n".join([run(f'rlock "{uri}"'), SLEEP]))
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    for container, other in zip(pod["spec"]["containers"], ("right", "left"), strict=True):
        container["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch",
                                      "subPathExpr": f"pods/$(POD_UID)/containers/{other}/0000beef"}]
    name = agents.start_pod(pod)
    [(left, left_code)] = agents.wait_outputs(name, 1, container="left")
    [(right, right_code)] = agents.wait_outputs(name, 1, container="right")
    assert sorted([left_code, right_code]) == [0, 1], (left, right)
    winner = "left" if left_code == 0 else "right"
    taken, refused = (left, right) if left_code == 0 else (right, left)
    assert taken["holder"] == agents.holder(name, winner), taken
    assert refused["error"] == "HeldByAnotherHolder", refused
