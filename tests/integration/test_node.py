"""The test bed's real node: two run side by side, each pod reaching its own API server through
the `kubernetes` Service; and a node leaves nothing behind, neither on a normal stop (Ctrl-C) nor
when its test process is SIGKILLed — no kubelet, containerd, shim or container process, no network
namespace, no mount on the host, and (after a SIGKILL, at the next node's start) no cgroup.

The teardown cases run a control plane with a real node and a running pod in a child Python
process, as `make test` would, and interrupt it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelock.testbed import ControlPlane, images, wait_until
from kubelock.testbed.node import CGROUP_PREFIX, _cgroup_hierarchies, _remove_orphaned_cgroups, node_problem
from kubelock.testbed.processes import descendants, pid_alive

pytestmark = pytest.mark.skipif(node_problem() is not None, reason=f"no real node here: {node_problem()}")

REPO = Path(__file__).resolve().parents[2]
AGENT_IMAGE = "localhost/kubelock-agent:dev"
# kubelock's own client with in-cluster credentials (the agent image has no other Kubernetes client).
LIST_NODES = (
    "import asyncio\n"
    "from kubelock.kube import config\n"
    "from kubelock.kube.client import KubeClient\n"
    "async def main():\n"
    "    async with KubeClient(config.load_in_cluster()) as kube:\n"
    "        nodes = await kube.list('/api/v1/nodes')\n"
    "    print(*[n['metadata']['name'] for n in nodes['items']])\n"
    "asyncio.run(main())\n"
)


def test_two_nodes_run_side_by_side_each_pod_reaching_its_own_api_server(tmp_path: Path) -> None:
    agent = images.app_image(images.AGENT, source=REPO, out_dir=REPO / "build" / "images", tag=AGENT_IMAGE)
    with (
        ControlPlane(tmp_path / "a", kwok=False, node=True) as first,
        ControlPlane(tmp_path / "b", kwok=False, node=True) as second,
    ):
        for plane in (first, second):
            plane.node.import_image(agent)
            plane.kubectl("create", "clusterrole", "node-lister", "--verb=list", "--resource=nodes")
            plane.kubectl("create", "clusterrolebinding", "node-lister", "--clusterrole=node-lister",
                          "--serviceaccount=default:default")  # fmt: skip
            plane.kubectl("run", "lister", f"--image={AGENT_IMAGE}", "--image-pull-policy=Never", "--restart=Never",
                          "--command", "--", "python", "-c", LIST_NODES)  # fmt: skip
        for plane in (first, second):
            wait_until(lambda p=plane: _finished(p, "lister"), what="the lister pod to finish", timeout=120)
            # In-cluster config (the Service's ClusterIP and the mounted token) reached this plane's API server.
            logs = plane.kubectl("logs", "lister").stdout
            assert logs.split() == [plane.node.name], logs


def _finished(plane: ControlPlane, pod: str) -> bool:
    phase = plane.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}").stdout
    return phase in ("Succeeded", "Failed")

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from kubelock.testbed import ControlPlane
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even if this process inherited SIGINT ignored
    # (a shell starts background commands so).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    plane = ControlPlane(Path(sys.argv[1]), kwok=False, node=True)
    with plane:
        plane.kubectl("run", "sleeper", "--image=localhost/kubelock-pause:1", "--image-pull-policy=Never")
        plane.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
        print("ready", plane.node.init_pid, plane.node._cgroup, flush=True)
        while True:
            time.sleep(1)
    """
)


def _namespaces_in_use() -> set[str]:
    found = set()
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            found.add(os.readlink(ns))
        except OSError:
            continue
    return found


def _processes_in(pid_namespace: str) -> list[int]:
    pids = []
    for ns in Path("/proc").glob("[0-9]*/ns/pid"):
        try:
            if os.readlink(ns) == pid_namespace:
                pids.append(int(ns.parent.parent.name))
        except OSError:
            continue
    return pids


@contextlib.contextmanager
def _node_in_a_child(workdir: Path) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    """(child process, the node's init pid, its cgroup); the child is SIGKILLed if still running at
    the end (its node then dies with it), so a failing test leaves nothing running either."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(workdir)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line and line[0] == "ready", f"the node did not start (exit code {child.poll()})"
        yield child, int(line[1]), line[2]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_an_interrupted_node_leaves_nothing_behind(tmp_path: Path, signum: signal.Signals) -> None:
    with _node_in_a_child(tmp_path) as (child, init_pid, cgroup):
        pid_ns = os.readlink(f"/proc/{init_pid}/ns/pid")
        net_ns = os.readlink(f"/proc/{init_pid}/ns/net")
        assert len(_processes_in(pid_ns)) >= 4  # init, containerd, kubelet, kube-proxy, shim, pause...
        child.send_signal(signum)
        child.wait(60)
    deadline = time.monotonic() + 60  # the kernel tears a namespace down asynchronously: slower when loaded
    while (_processes_in(pid_ns) or net_ns in _namespaces_in_use()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_in(pid_ns) == [], "processes of the node outlived it"
    assert net_ns not in _namespaces_in_use(), "the node's network namespace outlived it"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts
    leftovers = [h / cgroup for h in _cgroup_hierarchies() if (h / cgroup).exists()]
    if signum == signal.SIGINT:
        assert leftovers == []
    else:  # nobody ran the stop; the next node's start sweeps the groups of dead owners
        _remove_orphaned_cgroups()
        assert [p for p in leftovers if p.exists()] == []
    assert cgroup.startswith(CGROUP_PREFIX)


def _nested_processes(pid_namespace_owner: int) -> list[int]:
    """Running processes in the node's PID namespace, or below its init (the shims and their containers)."""
    inner = os.readlink(f"/proc/{pid_namespace_owner}/ns/pid")
    below = set(descendants(pid_namespace_owner))
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            pid = int(status.parent.name)
            if pid == pid_namespace_owner:
                continue
            if (pid in below or os.readlink(f"/proc/{pid}/ns/pid") == inner) and pid_alive(pid):
                found.append(pid)
        except (OSError, ValueError):
            continue
    return found


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return f"{command[:120]} (state {stat[0]}, parent {stat[1]}, pid ns {os.readlink(f'/proc/{pid}/ns/pid')})"
    except OSError as error:
        return f"gone ({error})"


def test_a_node_powered_off_loses_every_process_at_once_and_boots_again(tmp_path: Path) -> None:
    with ControlPlane(tmp_path, kwok=False, node=True) as plane:
        node = plane.node
        plane.kubectl("run", "sleeper", "--image=localhost/kubelock-pause:1", "--image-pull-policy=Never",
                      "--restart=Never")  # fmt: skip
        plane.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
        before = set(_nested_processes(node.init_pid))
        kubelet = node.process("kubelet")
        assert kubelet is not None
        assert len(before) >= 5  # containerd, kubelet, kube-proxy, a shim, the pause container...

        killed = node.power_off()

        survivors = {p: _describe(p) for p in before if pid_alive(p)}
        assert survivors == {}, "processes of the node outlived its power-off"
        assert len(killed) >= len(before) - 1  # all of them (but one that ended meanwhile)
        left = {p: _describe(p) for p in _nested_processes(node.init_pid)}
        assert left == {}, "a process of the node outlived its power-off"
        assert not kubelet.alive()
        # The bed carries on around its dead node; the API server still has the pod as it was.
        assert plane.running and node.powered_off
        assert plane.kubectl("get", "pod", "sleeper", "-o", "jsonpath={.status.phase}").stdout == "Running"

        node.boot()
        assert not node.powered_off
        wait_until(lambda: plane.kubectl("get", "node", node.name, "-o",
                                         "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout == "True",
                   what="the booted node to be Ready", timeout=120)  # fmt: skip
        # Its old container is gone: the kubelet ends the pod (restartPolicy Never) instead of trusting
        # the status it had before.
        wait_until(lambda: _finished(plane, "sleeper"), what="the old pod to end after the boot", timeout=120)
        assert (plane.workdir / "logs" / "kubelet.before-boot-1.log").exists()
