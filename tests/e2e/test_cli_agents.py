"""Agents in real containers use the CLI as docs/SKILL.md says, against the operator installed by
the chart: a free lock is taken, a second agent is refused with the holder named, a killed holder's
lock goes to the waiting agent within seconds, a pod that exits 0 releases what it holds, a holder
whose pod is deleted keeps its lock while its command finishes, and `rlock-heartbeat` / `runlock`
answer as documented.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.agents import SLEEP, Agents, agents_namespace, poll, run
from tests.e2e.tools import REPORT, Tools

# A killed holder's pod is seen deleted by the operator's pod watch and its claim revoked; the
# waiter's grant follows at once. Seconds, not the lease's 30 minutes.
HANDOFF_SECONDS = 60  # on a loaded 2-core machine; still far from the lease's 30 minutes
# How long a holder's command works on after SIGTERM before it exits.
CLEANUP = 8


@pytest.fixture
def agents(tools: Tools, kubelock: str, image: str) -> Iterator[Agents]:
    with agents_namespace(tools, image, "cli-agents") as agents:
        yield agents


def test_second_agent_is_refused_and_a_killed_holders_lock_goes_to_the_waiter(agents: Agents) -> None:
    uri = "github://acme/app/issues/42"
    holder = agents.start("agent-a", run(f'rlock "{uri}"'), SLEEP)
    [(taken, code)] = agents.wait_outputs(holder, 1)
    assert code == 0, taken
    assert taken["ok"] is True and taken["holder"] == agents.holder(holder) and taken["fencingToken"] > 0

    refused_pod = agents.start("agent-b", run(f'rlock "{uri}"'))
    [(refused, code)] = agents.wait_outputs(refused_pod, 1)
    assert code == 1, refused
    assert refused["error"] == "HeldByAnotherHolder"
    assert refused["holder"] == agents.holder(holder)

    waiter = agents.start("agent-c", run(f'rlock --wait "{uri}"'), run(f'rlock-heartbeat "{uri}"'),
                          run(f'runlock "{uri}"'), SLEEP)  # fmt: skip
    poll(lambda: agents.phase_of(waiter, uri) == "Pending", "agent-c to queue", 60)

    killed_at = time.monotonic()
    agents.kill(holder)
    poll(lambda: agents.phase_of(waiter, uri) == "Held", "the lock to pass to agent-c", HANDOFF_SECONDS, 0.1)
    handoff = time.monotonic() - killed_at
    REPORT.append(f"lock handed to the waiter {handoff:.2f} s after the holder's pod was killed")

    (granted, code), (renewed, hb_code), (released, un_code) = agents.wait_outputs(waiter, 3)
    assert code == 0 and granted["holder"] == agents.holder(waiter), granted
    assert granted["fencingToken"] > taken["fencingToken"]
    assert hb_code == 0 and renewed["confirmed"] is True, renewed
    assert un_code == 0 and released["released"] is True, released


def test_a_pod_that_exits_0_releases_its_lock(agents: Agents) -> None:
    uri = "deploy://api-prod"
    # Takes the lock and exits without runlock: the pod's end (phase Succeeded) releases it.
    done = agents.start("agent-done", run(f'rlock "{uri}"'), "sleep 3", "exit 0")
    [(taken, code)] = agents.wait_outputs(done, 1)
    assert code == 0, taken
    waiter = agents.start("agent-next", run(f'rlock --wait "{uri}"'), SLEEP)
    poll(lambda: agents.phase(done) == "Succeeded", "agent-done to exit", 60)
    [(granted, code)] = agents.wait_outputs(waiter, 1, timeout=HANDOFF_SECONDS + 10)
    assert code == 0 and granted["holder"] == agents.holder(waiter), granted
    assert agents.phase_of(done, uri) != "Held"


def test_a_holder_stopped_gracefully_keeps_its_lock_until_its_command_has_finished(agents: Agents) -> None:
    uri = "deploy://graceful"
    # `kubelock run` is the container's main process, so the pod's SIGTERM reaches it; it passes it
    # on to the command, which takes CLEANUP seconds to finish its work under the lock.
    cleanup = f'trap "sleep {CLEANUP}; exit 0" TERM; while :; do sleep 1; done'
    holder = agents.start("agent-slow", f"exec kubelock run {uri} -- sh -c '{cleanup}'")
    poll(lambda: agents.phase_of(holder, uri) == "Held", "agent-slow to hold the lock", 60)
    waiter = agents.start("agent-next", run(f'rlock --wait "{uri}"'), SLEEP)
    poll(lambda: agents.phase_of(waiter, uri) == "Pending", "agent-next to queue", 60)

    deleted_at = time.monotonic()
    agents.tools.kubectl("delete", "pod", holder, "--namespace", agents.namespace, "--grace-period=60",
                         "--wait=false")  # fmt: skip
    poll(lambda: agents.phase_of(waiter, uri) == "Held", "the lock to pass to agent-next", 50, 0.1)
    handoff = time.monotonic() - deleted_at
    REPORT.append(f"a holder cleaning up for {CLEANUP} s after SIGTERM handed its lock on after {handoff:.2f} s")
    # Not while the holder's command was still at work (it was, for CLEANUP seconds), and not only when
    # the pod's grace ran out: when `kubelock run` released the lock, its command done.
    assert CLEANUP - 1 <= handoff < 50
    [(granted, code)] = agents.wait_outputs(waiter, 1)
    assert code == 0 and granted["holder"] == agents.holder(waiter), granted
