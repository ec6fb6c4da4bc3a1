"""A real node for the local control plane: kubelet, containerd (runc, CNI bridge) and kube-proxy.

Pods on it are real processes in real containers. Like a kind node, the whole node lives in
namespaces of its own, which makes it self-contained and leaves nothing behind:

* **PID namespace.** Its first process is a small reaper started by ``unshare --pid --kill-child``.
  containerd, kubelet, kube-proxy, the runtime shims and every container run inside. When the
  reaper dies — on :meth:`RealNode.stop`, or because the test process was killed (each child has a
  parent-death signal) — the kernel kills everything in the namespace.
* **Network namespace.** The node's bridge, pod addresses, kube-proxy's iptables rules and the
  kubelet's fixed ports exist only there, so any number of nodes run side by side without a clash
  and nothing is added to the host's network (no address, route, rule or port). The namespace has
  routes to its own subnets only: no packet from a pod can leave the machine. It vanishes with its
  last process. :mod:`kubelock.testbed.nodeproxy` joins it to the API server.
* **Mount namespace.** Private: container root filesystems, pod volumes and the pod network
  namespaces' mounts never appear on the host, and vanish with the node. ``/run``, ``/var/lib``
  and ``/var/log`` are fresh tmpfs mounts inside it, so containerd's shim sockets, the CNI cache and
  kubelet's ``/var/log/containers`` links stay private; state and logs otherwise live under the node's
  work directory.
* **cgroups.** Pods go under ``kubelock-<pid>-<id>`` (kubelet's ``cgroupRoot``), removed on stop;
  trees whose owning process is gone (a SIGKILLed test run) are removed by the next node's start.

Pitfalls of the project's machines, each handled where it arises: no CAP_SYS_RESOURCE (containerd's
``restrict_oom_score_adj``; kubelet's ``maxOpenFiles`` at the current hard limit), cgroup v1
(``failCgroupV1: false``, cgroupfs driver), and kubelet's habit of setting global kernel sysctls
(read-only copies with the values it expects are mounted over them, inside the node only).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubelock.testbed import binaries
from kubelock.testbed.processes import (
    ManagedProcess,
    ProcessError,
    descendants,
    pid_alive,
    start_process,
    wait_until,
)

log = logging.getLogger(__name__)

CONTAINERD = "containerd"
CTR = "ctr"
RUNC = "runc"
CNI_BIN_DIRS: tuple[str, ...] = ("/usr/lib/cni", "/opt/cni/bin")
CNI_PLUGINS: tuple[str, ...] = ("bridge", "host-local", "loopback")
CGROUP_PREFIX = "kubelock-"
POD_SUPERNET = ipaddress.IPv4Network("10.200.0.0/16")
KUBELET_PORT = 10250  # inside the node's own network namespace: no clash with anything
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"  # inside the node's mount namespace
INIT_PID_FILE = "init.pid"

START_TIMEOUT = 30.0
IMPORT_TIMEOUT = 300.0
STOP_TIMEOUT = 10.0
CGROUP_REMOVE_TIMEOUT = 10.0
POWER_OFF_TIMEOUT = 30.0
#: The node's own processes, which a power-off kills and a boot starts again. The node's proxy stays:
#: it stands for the network, not for the machine (with nothing listening behind it, it refuses).
NODE_DAEMONS: tuple[str, ...] = (CONTAINERD, "kubelet", "kube-proxy")

# kubelet insists on these kernel settings and, unless told to fail instead, writes them — globally,
# since they are not namespaced. Inside the node, files with the expected values are mounted over
# them, so kubelet finds nothing to change and the host keeps its own settings.
# (kubelet's setupKernelTunables lists them: pkg/kubelet/cm/container_manager_linux.go.)
KUBELET_SYSCTLS: dict[str, str] = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

# PID 1 of the node: reaps the orphans (the runtime shims daemonize) and exits on SIGTERM, taking the
# namespace's every process with it.
_REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("node init running", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


def node_problem(bin_dir: Path | None = None) -> str | None:
    """Why a real node cannot start here, or None when it can."""
    if sys.platform != "linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node needs root (namespaces, mounts, cgroups)"
    tools = (CONTAINERD, CTR, RUNC, "unshare", "nsenter", "ip", "iptables")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)}: run `make node-tools` (hack/install-node.sh, as root)"
    if _cni_bin_dir() is None:
        return f"no CNI plugins ({', '.join(CNI_PLUGINS)}) in {' or '.join(CNI_BIN_DIRS)}: run `make node-tools`"
    if bin_dir is not None:
        lacking = [b for b in binaries.NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
        if lacking:
            return f"{bin_dir} lacks {', '.join(lacking)}: run `make tools`"
    return None


def _cni_bin_dir() -> Path | None:
    for directory in CNI_BIN_DIRS:
        if all(os.access(Path(directory) / p, os.X_OK) for p in CNI_PLUGINS):
            return Path(directory)
    return None


@dataclass(frozen=True)
class NodeNetwork:
    """The node's addresses; they exist only inside its network namespace."""

    pod_cidr: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        """The bridge's address: the node's InternalIP, and where pods reach the API server."""
        return str(self.pod_cidr.network_address + 1)

    @classmethod
    def pick(cls) -> NodeNetwork:
        # Any /24 would do (nothing outside the namespace sees it); a random one keeps two nodes'
        # logs tellable apart.
        subnets = list(POD_SUPERNET.subnets(new_prefix=24))
        return cls(random.choice(subnets[1:-1]))


class RealNode:
    """One real node, joined to a running control plane; see the module docstring.

    ``api_port`` is the API server's port on the host's 127.0.0.1; ``kubeconfig`` must name
    ``https://127.0.0.1:<api_port>`` (the node reaches the same address inside its namespace).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path,
        kubeconfig: Path,
        ca_cert: Path,
        api_port: int,
        egress_socket: Path,
        sandbox_image: Path,
        sandbox_image_name: str,
        log_dir: Path,
    ) -> None:
        self.id = secrets.token_hex(3)
        self.name = f"kubelock-node-{self.id}"
        self.network = NodeNetwork.pick()
        self._workdir = Path(workdir).resolve()
        self._bin_dir = bin_dir
        self._kubeconfig = kubeconfig
        self._ca_cert = ca_cert
        self._api_port = api_port
        self._egress_socket = egress_socket
        self._sandbox_image = sandbox_image
        self._sandbox_image_name = sandbox_image_name
        self._log_dir = log_dir
        self._cgroup = f"{CGROUP_PREFIX}{os.getpid()}-{self.id}"
        self._processes: list[ManagedProcess] = []
        self._init: ManagedProcess | None = None
        self._init_pid: int | None = None
        self._boots = 0

    # -- public surface ---------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def init_pid(self) -> int:
        """PID (on the host) of the node's first process; its namespaces are the node's."""
        if self._init_pid is None:
            raise ProcessError("the node is not running")
        return self._init_pid

    @property
    def containerd_address(self) -> str:
        """containerd's socket as seen from the host (through the node's root)."""
        return f"/proc/{self.init_pid}/root{CONTAINERD_SOCKET}"

    def start(self) -> None:
        _remove_orphaned_cgroups()
        if any(str(self._workdir).startswith(p) for p in ("/run/", "/var/run/", "/var/lib/", "/var/log/")):
            raise ProcessError(f"the node's work directory {self._workdir} would be hidden by its private mounts")
        for sub in ("containerd", "kubelet", "cni", "pod-logs", "sysctl"):
            shutil.rmtree(self._workdir / sub, ignore_errors=True)
            (self._workdir / sub).mkdir(parents=True)
        self._make_cgroups()
        self._start_init()
        (self._workdir / INIT_PID_FILE).write_text(f"{self.init_pid}\n")
        self._setup_namespaces()
        self._start_containerd()
        self.import_image(self._sandbox_image)

    def start_kubelet(self) -> None:
        """Joins the node to the API server (kubelet, kube-proxy and the namespace's proxy).

        The caller waits for the Node to become Ready.
        """
        self._start_proxy()
        self._start_agents()

    def power_off(self) -> list[int]:
        """Kills the node as a power cut would: containerd, kubelet, kube-proxy, every runtime shim and
        every container process, all with SIGKILL and at once (no SIGTERM, no grace, no status sent).

        The node's namespaces stay (its init keeps them), so :meth:`boot` can start it again, and the
        node stays "alive" for :meth:`alive`: nothing of the test bed takes the dead daemons for a
        failure and tears it down. Returns the host PIDs killed.
        """
        daemons = [p for p in self._processes if p.name in NODE_DAEMONS]
        # `nsenter` on the host; the daemons are their children. Not killed: each exits once its child
        # has, reaping it (killed first, it would leave the daemon to the host's init, a zombie there).
        wrappers = {p.pid for p in daemons}
        found: set[int] = set()
        # Freeze first, then kill: a process stopped cannot fork a new one or see another die (a shim
        # reporting its container's exit), so the whole node ends in one instant, as a power cut does.
        while True:
            below = {pid for root in (self.init_pid, *wrappers) for pid in descendants(root)}
            new = below - found
            if not new:
                break
            for pid in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            found |= new
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in wrappers:  # nsenter stops itself when its child stops: it must go on to reap it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for process in daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=POWER_OFF_TIMEOUT)
            self._processes.remove(process)
        # Until every one has ended: a container's processes may linger a moment in the kernel's exit
        # (state D), reparented away from the node's init once their shim is gone.
        wait_until(
            lambda: not descendants(self.init_pid) and not any(pid_alive(pid) for pid in found),
            what=f"node {self.name}'s processes to end",
            timeout=POWER_OFF_TIMEOUT,
        )
        log.info("node %s powered off: %d processes killed", self.name, len(found))
        return sorted(found)

    @property
    def powered_off(self) -> bool:
        return self._init is not None and not any(p.name in NODE_DAEMONS for p in self._processes)

    def boot(self) -> None:
        """Starts a powered-off node again, as a reboot does: ``/run`` starts empty (the old containers'
        state, sockets and network namespaces gone), the disk (images, kubelet's pod directories) kept;
        containerd, kubelet and kube-proxy start. The caller waits for the Node to become Ready; the
        kubelet then finds its pods' containers gone and acts on them as after any reboot."""
        if not self.powered_off:
            raise ProcessError(f"node {self.name} is not powered off")
        script = "\n".join(
            [
                # The old mounts under /run (containers' root filesystems, pod network namespaces)
                # first, deepest first, then what /run held: a reboot's tmpfs starts empty.
                r"awk '$2 ~ \"^/run/(containerd|netns)/\" {print $2}' /proc/self/mounts | sort -r |"
                " while read -r m; do umount -l \"$m\" || true; done",
                "rm -rf /run/containerd/* /run/netns/* /var/lib/cni/* || true",
                "mkdir -p /run/containerd /run/netns /var/lib/cni",
            ]
        )
        self._shell(script, f"clearing node {self.name}'s /run", timeout=60)
        shutil.rmtree(self._workdir / "cni" / "ipam", ignore_errors=True)  # the old pods' addresses
        self._boots += 1
        for name in NODE_DAEMONS:  # the new daemons' logs would overwrite the old ones'
            old = self._log_dir / f"{name}.log"
            if old.exists():
                old.rename(self._log_dir / f"{name}.before-boot-{self._boots}.log")
        self._start_containerd()
        self._start_agents()
        log.info("node %s booted", self.name)

    def _start_proxy(self) -> None:
        proxy = start_process(
            "nodeproxy",
            [sys.executable, Path(__file__).with_name("nodeproxy.py"), f"--netns=/proc/{self.init_pid}/ns/net",
             f"--api-port={self._api_port}", f"--egress-socket={self._egress_socket}"],
            log_dir=self._log_dir,
        )  # fmt: skip
        self._processes.append(proxy)
        wait_until(
            lambda: "serving:" in proxy.tail(5), what="the node's proxy", timeout=START_TIMEOUT, process=proxy
        )

    def _start_agents(self) -> None:
        self._spawn("kubelet", [self._bin_dir / binaries.KUBELET, *self._kubelet_args()])
        self._spawn("kube-proxy", [self._bin_dir / binaries.KUBE_PROXY, f"--config={self._write_kube_proxy_config()}"])

    def process(self, name: str) -> ManagedProcess | None:
        return next((p for p in self._processes if p.name == name), None)

    def import_image(self, archive: Path) -> None:
        """Imports an image archive (docker-archive or OCI tar) into the node's containerd."""
        began = time.monotonic()
        _ctr(self.containerd_address, "images", "import", str(archive), timeout=IMPORT_TIMEOUT)
        log.info("node %s: imported %s in %.1f s", self.name, archive.name, time.monotonic() - began)

    def tag_image(self, source: str, target: str) -> None:
        """Gives an imported image another name (as `docker tag` would), e.g. the one a manifest uses."""
        self._ctr("images", "tag", "--force", _normalised(source), _normalised(target))

    def images(self) -> list[str]:
        return self._ctr("images", "list", "--quiet").split()

    def alive(self) -> bool:
        return self._init is not None and all(p.alive() for p in (self._init, *self._processes))

    def check_alive(self) -> None:
        for process in (self._init, *self._processes):
            if process is not None and not process.alive():
                raise ProcessError(
                    f"{process.name} exited with code {process.popen.returncode}\n"
                    f"--- last lines of {process.log_path} ---\n{process.tail()}"
                )

    def stop(self) -> None:
        """Stops every process of the node and removes its cgroups and state. Idempotent."""
        if self._init is not None:
            # PID 1 of the namespace: its exit kills every process there at once (containerd,
            # kubelet, shims, containers); nothing of a throw-away node needs a graceful stop.
            self._init.stop(timeout=STOP_TIMEOUT)
            self._init = None
        while self._processes:
            self._processes.pop().stop(timeout=STOP_TIMEOUT)
        self._init_pid = None
        (self._workdir / INIT_PID_FILE).unlink(missing_ok=True)
        _remove_cgroup_tree(self._cgroup)
        for sub in ("containerd", "kubelet"):  # images and snapshots: hundreds of MB
            shutil.rmtree(self._workdir / sub, ignore_errors=True)

    # -- start-up ---------------------------------------------------------------------------------

    def _start_init(self) -> None:
        self._init = start_process(
            "node-init",
            ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--uts", "--",
             sys.executable, "-c", _REAPER],
            log_dir=self._log_dir,
        )  # fmt: skip
        init = self._init
        wait_until(
            lambda: "node init running" in init.tail(5),
            what="the node's namespaces",
            timeout=START_TIMEOUT,
            process=init,
            interval=0.02,
        )
        children = Path(f"/proc/{init.pid}/task/{init.pid}/children").read_text().split()
        if len(children) != 1:
            raise ProcessError(f"unshare (pid {init.pid}) has children {children}, expected the node's init")
        self._init_pid = int(children[0])

    def _setup_namespaces(self) -> None:
        bridge = self._bridge
        gateway = f"{self.network.gateway}/{self.network.pod_cidr.prefixlen}"
        overlays = []
        for key, value in KUBELET_SYSCTLS.items():
            copy = self._workdir / "sysctl" / key.replace("/", ".")
            copy.write_text(f"{value}\n")
            overlays.append(f"mount --bind {copy} /proc/sys/{key} && mount -o remount,bind,ro /proc/sys/{key}")
        script = "\n".join(
            [
                "set -eu",
                f"hostname {self.name}",
                # Private /run, /var/lib and /var/log for the node (see the module docstring).
                "for d in /run /var/lib /var/log; do mount -t tmpfs -o mode=0755 kubelock-node $d; done",
                "mkdir -p /run/containerd /run/netns /run/lock /var/lib/cni /var/log/containers",
                *overlays,
                "ip link set lo up",
                f"ip link add {bridge} type bridge",
                f"ip addr add {gateway} dev {bridge}",
                f"ip link set {bridge} up",
                # Per network namespace: forwarding between pods, and Service traffic between pods on
                # the same bridge seen by kube-proxy's rules.
                "sysctl -q -w net.ipv4.ip_forward=1",
                "sysctl -q -w net.bridge.bridge-nf-call-iptables=1 || true",
            ]
        )
        self._shell(script, "setting up the node's namespaces", timeout=30)

    def _start_containerd(self) -> None:
        config = self._workdir / "containerd.toml"
        config.write_text(self._containerd_config())
        process = self._spawn(CONTAINERD, [shutil.which(CONTAINERD) or CONTAINERD, f"--config={config}"])
        wait_until(
            lambda: self._ctr_ok("version"),
            what="containerd to answer",
            timeout=START_TIMEOUT,
            process=process,
            interval=0.05,
        )

    # -- configuration ----------------------------------------------------------------------------

    @property
    def _bridge(self) -> str:
        return f"klbr{self.id}"  # at most 15 characters: an interface name's limit

    def _containerd_config(self) -> str:
        cni_bin = _cni_bin_dir()
        conflist = {
            "cniVersion": "1.0.0",
            "name": "kubelock",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self._bridge,
                    "isGateway": True,
                    "ipMasq": False,  # nothing is masqueraded: pods talk to the node's own addresses only
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.network.pod_cidr), "gateway": self.network.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self._workdir / "cni" / "ipam"),
                    },
                },
            ],
        }
        conf_dir = self._workdir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-kubelock.conflist").write_text(json.dumps(conflist, indent=2))
        runc = shutil.which(RUNC) or RUNC
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""\
# Written by kubelock.testbed.node for node {self.name}.
version = 2
root = "{self._workdir / 'containerd'}"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self._workdir / 'containerd' / 'opt'}"

[{cri}]
  sandbox_image = "{self._sandbox_image_name}"
  # Without CAP_SYS_RESOURCE, lowering a process's oom_score_adj fails and so does every sandbox.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{conf_dir}"
  max_conf_num = 1
"""

    def _kubelet_args(self) -> list[str]:
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "0.0.0.0",  # the node's namespace only
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self._ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self._cgroup}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "clusterDomain": "cluster.local",
            "podCIDR": str(self.network.pod_cidr),
            "podLogsDir": str(self._workdir / "pod-logs"),
            # Images come from archives, never from a registry: garbage collection would lose them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # A shared, busy machine: evict nothing for disk or memory pressure others cause.
            "evictionHard": {"memory.available": "1%", "nodefs.available": "1%", "imagefs.available": "1%"},
            # Raising RLIMIT_NOFILE above the hard limit needs CAP_SYS_RESOURCE.
            "maxOpenFiles": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
        }
        path = self._workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return [
            f"--config={path}",
            f"--kubeconfig={self._kubeconfig}",
            f"--root-dir={self._workdir / 'kubelet'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.network.gateway}",
            f"--node-labels=kubelock.dev/node=real,kubelock.dev/node-id={self.id}",
        ]

    def _write_kube_proxy_config(self) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": str(self.network.pod_cidr),
            "bindAddress": "0.0.0.0",
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Leave the conntrack table's global settings alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }
        path = self._workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- helpers ----------------------------------------------------------------------------------

    def _nsenter(self, *, pid: bool = True) -> list[str]:
        return ["nsenter", f"--target={self.init_pid}", "--mount", "--net", "--uts", *(["--pid"] if pid else []), "--"]

    def _shell(self, script: str, doing: str, *, timeout: float) -> None:
        """Run `script` with sh in the node's mount, network and UTS namespaces; its stderr in the error."""
        argv = [*self._nsenter(pid=False), "sh", "-c", script]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ProcessError(f"{doing} failed:\n{result.stderr}")

    def _spawn(self, name: str, argv: Sequence[str | Path]) -> ManagedProcess:
        process = start_process(name, [*self._nsenter(), *argv], log_dir=self._log_dir, cwd=self._workdir)
        self._processes.append(process)
        return process

    def _ctr(self, *args: str, timeout: float = 60) -> str:
        return _ctr(self.containerd_address, *args, timeout=timeout)

    def _ctr_ok(self, *args: str) -> bool:
        try:
            self._ctr(*args, timeout=5)
        except (ProcessError, subprocess.TimeoutExpired):
            return False
        return True

    def _make_cgroups(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / self._cgroup
            path.mkdir(exist_ok=True)
            # cgroup v1's cpuset: a new group has no CPUs or memory nodes until given its parent's.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((hierarchy / name).read_text())


def import_into_running_node(workdir: Path, archive: Path) -> None:
    """Imports an image archive into the node whose work directory this is, from another process."""
    try:
        pid = int((workdir / INIT_PID_FILE).read_text())
    except (FileNotFoundError, ValueError):
        raise ProcessError(f"no real node runs with work directory {workdir} (start one with `up --node`)") from None
    _ctr(f"/proc/{pid}/root{CONTAINERD_SOCKET}", "images", "import", str(archive), timeout=IMPORT_TIMEOUT)


def _ctr(address: str, *args: str, timeout: float = 60) -> str:
    argv = [shutil.which(CTR) or CTR, "--address", address, "--namespace", "k8s.io", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ProcessError(f"`ctr {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _normalised(image: str) -> str:
    """containerd's full name of an image reference (``kubelock:1`` → ``docker.io/library/kubelock:1``)."""
    name = image
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name if '/' in name else 'library/' + name}"
    return name


# -- cgroups --------------------------------------------------------------------------------------


def _cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1: one per controller set; v2: the unified one)."""
    found: list[Path] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                found.append(Path(fields[4]))
    return found


def _remove_cgroup_tree(name: str) -> None:
    """rmdir, deepest first; groups whose last process is still exiting are retried for a while."""
    deadline = time.monotonic() + CGROUP_REMOVE_TIMEOUT
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / name
        while root.exists():
            for directory in sorted(_walk_dirs(root), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if not root.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if root.exists():
            log.warning("cgroup %s could not be removed (processes still in it?)", root)


def _walk_dirs(root: Path) -> Iterator[Path]:
    yield root
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            if child.is_dir():
                yield from _walk_dirs(child)


def _remove_orphaned_cgroups() -> None:
    """Removes the cgroups of nodes whose test process died without stopping them (SIGKILL)."""
    for hierarchy in _cgroup_hierarchies():
        for root in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            owner = root.name.removeprefix(CGROUP_PREFIX).split("-", 1)[0]
            if owner.isdigit() and not pid_alive(int(owner)):
                _remove_cgroup_tree(root.name)
