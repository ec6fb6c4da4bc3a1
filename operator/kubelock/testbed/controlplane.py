"""A real, local Kubernetes control plane for tests and ``make run``, in the style of envtest.

etcd → kube-apiserver → manifests (CRDs, RBAC, admission policies) → kube-controller-manager (garbage
collection, namespace deletion, service accounts) → kwok (fake nodes that run pods through their
phases). Everything listens on 127.0.0.1 on ports chosen at start, and lives in one work directory.

With ``workloads=True`` kube-scheduler and the controllers a Deployment and a Service need run too
(Deployments become ReplicaSets and pods, pods are scheduled, Services get endpoints), so
``helm install`` and ``kubectl rollout status`` complete. With ``quotas=True`` the resourcequota
controller runs too, so that a ResourceQuota is counted (its ``status.used``) and admission enforces
it. With ``node_lifecycle=True`` kwok renews its nodes' Leases and the node-lifecycle, taint-eviction and
pod garbage collector controllers run, so that a kwok node lost for good (:meth:`ControlPlane.lose_fake_node`)
goes NotReady, is tainted and has its pods evicted as in a cluster. With ``node=True`` (implies workloads) a
real node joins: kubelet, containerd and kube-proxy in namespaces of their own
(:mod:`kubelock.testbed.node`), on which pods run as containers::

    pki/             CA, serving and admin certificates, service-account key pair
    auth/tokens.csv  static bearer tokens of the test users
    etcd/            etcd's data (deleted on stop: the cluster is ephemeral)
    logs/<name>.log  each component's output
    kubeconfig       admin kubeconfig (client certificate of a system:masters member)
    users/<u>.kubeconfig
    node/            the real node's state (containerd, kubelet, CNI; see kubelock.testbed.node)
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import logging
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubelock.testbed import binaries, certs
from kubelock.testbed.etcd import EtcdCluster
from kubelock.testbed.node import RealNode, node_problem
from kubelock.testbed.processes import (
    ManagedProcess,
    ProcessError,
    free_port,
    start_process,
    wait_until,
)

log = logging.getLogger(__name__)

DEFAULT_USERS: tuple[str, ...] = ("alice", "bob", "carol", "viewer", "lockadmin")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_LABELS: Mapping[str, str] = {"type": "kwok"}
# Only what tests rely on: ownerReference cleanup, namespace deletion, the `default` ServiceAccount
# and legacy token Secrets, and the aggregation of roles into admin/edit/view. Fewer controllers means
# a faster start and quieter logs.
CONTROLLERS: tuple[str, ...] = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
)
# What a Deployment behind a Service needs to become Ready pods with endpoints, a PodDisruptionBudget
# to get a status, and a pod to find the cluster's CA (kube-root-ca.crt) for its ServiceAccount token.
WORKLOAD_CONTROLLERS: tuple[str, ...] = (
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "endpoints-controller",
    "disruption-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
)
# What makes a ResourceQuota bind: the controller fills in the quota's status (admission refuses every
# create a quota covers until it has), recounts it when objects are deleted, and keeps an informer on
# every quotable resource to do so. Off by default: those informers are watches the bed's other users
# do not need.
QUOTA_CONTROLLERS: tuple[str, ...] = ("resourcequota-controller",)
# Not node-lifecycle-controller beside kwok: kwok's nodes renew no Lease (by default), so it would mark their pods
# not Ready. The one thing those nodes need from it, lifting the not-ready taint, the bed does itself.
# A real node's kubelet renews its Lease, and a node lost (its kubelet stopped) must go the way it goes
# in a cluster: NotReady after the grace (50 s), tainted, its pods evicted after their tolerations.
REAL_NODE_CONTROLLERS: tuple[str, ...] = ("node-lifecycle-controller", "taint-eviction-controller")
# With ``node_lifecycle=True`` kwok renews a Lease for each of its nodes, as a kubelet does, so that
# those controllers can run beside kwok too; a node of its own kwok (``create_fake_node(name,
# own_kwok=True)``) is lost for good when that kwok is killed (``lose_fake_node``): no Lease renewal,
# no pod status from then on, as when a machine dies. (kwok keeps renewing a node whose annotation is
# removed, so unmanaging it is no way to lose it.) The pod garbage collector removes the pods of a
# deleted node.
KWOK_NODE_LEASE_SECONDS = 40  # the kubelet's default
KWOK_LIFECYCLE_CONTROLLERS: tuple[str, ...] = (*REAL_NODE_CONTROLLERS, "pod-garbage-collector-controller")
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
PAUSE_IMAGE = "localhost/kubelock-pause:1"

APISERVER_TIMEOUT = 90.0
CRD_TIMEOUT = 30.0
CONTROLLER_MANAGER_TIMEOUT = 60.0
NODE_TIMEOUT = 30.0
NODE_READY_TIMEOUT = 120.0
KUBECTL_TIMEOUT = 120.0


def fake_node_manifest(name: str) -> dict[str, Any]:
    """A Node that kwok (started by :class:`ControlPlane`) manages; pods set ``spec.nodeName`` to it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                **KWOK_NODE_LABELS,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
    }


def node_is_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """Expands files and directories (their ``*.yaml``, sorted); missing directories are skipped."""
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            # A kustomization.yaml is not a resource kubectl can apply.
            files += sorted(p for p in path.glob("*.yaml") if p.name != "kustomization.yaml")
        else:
            log.warning("manifest path %s does not exist; skipped", path)
    return files


def kwok_stage_files(stages_dir: Path) -> list[Path]:
    """The Stage documents among the files: the copied upstream directory also holds test data."""
    return [path for path in sorted(stages_dir.glob("*.yaml")) if _is_stage(path)]


def _is_stage(path: Path) -> bool:
    with path.open() as handle:
        return any(isinstance(doc, dict) and doc.get("kind") == "Stage" for doc in yaml.safe_load_all(handle))


class ControlPlane:
    """etcd, kube-apiserver and (optionally) kube-controller-manager and kwok, as child processes.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Children are stopped in
    reverse order on :meth:`stop`, at interpreter exit, on SIGTERM/SIGHUP (when nobody else handles
    them) and, through the kernel's parent-death signal, when this process is killed outright.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        manifests: Sequence[Path] = (),
        controller_manager: bool = True,
        kwok: bool = True,
        users: Sequence[str] = DEFAULT_USERS,
        workloads: bool = False,
        node: bool = False,
        quotas: bool = False,
        node_lifecycle: bool = False,
        node_monitor_grace_seconds: int | None = None,
        profiling: bool = False,
        etcd_members: int = 1,
        etcd_quota_bytes: int | None = None,
    ) -> None:
        self._workdir = Path(workdir).resolve()
        # Several members (on 127.0.0.1, one data directory each) for tests of a leader lost, a quorum
        # lost, a member hung; a quota for a full etcd (NOSPACE). One member, no quota, by default.
        if etcd_members < 1:
            raise ValueError(f"etcd_members must be at least 1, not {etcd_members}")
        self._etcd_members = etcd_members
        self._etcd_quota_bytes = etcd_quota_bytes
        self._etcd: EtcdCluster | None = None
        # kube-apiserver's /debug/pprof (for the bench's CPU profiles; off otherwise, as in most clusters).
        self._profiling = profiling
        self._bin_dir = bin_dir
        self._manifests = tuple(Path(m) for m in manifests)
        self._with_controller_manager = controller_manager
        self._with_kwok = kwok
        self._with_node = node
        self._with_workloads = workloads or node
        self._with_quotas = quotas
        # kwok's nodes renewing Leases, watched by the node-lifecycle controllers (see
        # KWOK_LIFECYCLE_CONTROLLERS); the grace before a silent node is NotReady defaults to the
        # controller manager's (50 s).
        self._with_node_lifecycle = node_lifecycle
        self._node_monitor_grace_seconds = node_monitor_grace_seconds
        if (self._with_workloads or quotas or node_lifecycle) and not controller_manager:
            raise ValueError("workloads, quotas, node lifecycle and a real node need the controller manager")
        if node_lifecycle and not kwok:
            raise ValueError("node_lifecycle is for kwok's nodes (a real node brings its own controllers)")
        self._node: RealNode | None = None
        self._user_names = tuple(users)
        self._tokens: dict[str, str] = {}
        self._processes: list[ManagedProcess] = []
        self._server: str | None = None
        self._pki: certs.Pki | None = None
        self._http: _AdminHttp | None = None
        self.startup_seconds: float | None = None
        #: Seconds each start-up phase took, in order.
        self.phase_seconds: dict[str, float] = {}

    # -- public surface ---------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = binaries.find_binaries(self._required_binaries())
        return self._bin_dir

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate, group system:masters); written by :meth:`start`."""
        return self._workdir / "kubeconfig"

    @property
    def server(self) -> str:
        """The apiserver's URL, ``https://127.0.0.1:<port>``."""
        if self._server is None:
            raise ProcessError("the control plane has not been started")
        return self._server

    @property
    def etcd(self) -> EtcdCluster:
        """The etcd members, to stop, kill, pause, restart or ask about (see :mod:`kubelock.testbed.etcd`)."""
        if self._etcd is None:
            raise ProcessError("the control plane has not been started")
        return self._etcd

    @property
    def node(self) -> RealNode:
        """The real node (``node=True``), once started."""
        if self._node is None:
            raise ProcessError("this control plane has no running real node (ControlPlane(node=True))")
        return self._node

    @property
    def running(self) -> bool:
        node_alive = self._node is None or self._node.alive()
        return bool(self._processes) and all(p.alive() for p in self._processes) and node_alive

    @property
    def serving(self) -> bool:
        """Whether the plane still serves: every process alive but etcd members, of which a quorum
        runs. Unlike :attr:`running`, one member of three lost leaves it serving, as a production
        control plane goes on (a hung member counts as running: its process is there)."""
        if not self._processes or not (self._node is None or self._node.alive()):
            return False
        members = {m.name for m in self.etcd.members}
        others = [p for p in self._processes if p.name.split(".", 1)[0] not in members]
        return all(p.alive() for p in others) and len(self.stopped_etcd_members()) < (len(members) + 1) / 2

    def stopped_etcd_members(self) -> list[str]:
        """The names of the etcd members whose process is not running (killed, or exited)."""
        return [m.name for m in self.etcd.members if not m.running]

    @property
    def users(self) -> Mapping[str, str]:
        """Static users and their bearer tokens (fresh random ones at every start)."""
        return types.MappingProxyType(self._tokens)

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig that authenticates as one of the static users (see :data:`DEFAULT_USERS`)."""
        if not self._tokens:
            raise ProcessError("the control plane has not been started")
        try:
            token = self._tokens[user]
        except KeyError:
            raise KeyError(f"unknown static user {user!r}; known: {', '.join(self._tokens)}") from None
        return self.token_kubeconfig(token, self._workdir / "users" / f"{user}.kubeconfig")

    def token_kubeconfig(self, token: str, path: Path, namespace: str | None = None) -> Path:
        """Writes a kubeconfig for any bearer token (a static user's, a ServiceAccount's, ...)."""
        _write_kubeconfig(path, self.server, self._require_pki(), {"token": token}, namespace=namespace)
        return path

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs the bin dir's kubectl as admin and returns its captured output."""
        argv = [str(self.bin_dir / binaries.KUBECTL), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT, check=False)
        if check and result.returncode != 0:
            raise ProcessError(f"`kubectl {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, *paths: Path) -> None:
        """Server-side applies manifest files or directories, then waits for every CRD to be Established."""
        files = manifest_files(paths)
        if not files:
            return
        file_args = [arg for f in files for arg in ("-f", str(f))]
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=kubelock-testbed", *file_args)
        wait_until(self._crds_established, what="every CRD to be Established", timeout=CRD_TIMEOUT)

    def create_fake_node(
        self, name: str = "kwok-node-0", *, timeout: float = NODE_TIMEOUT, own_kwok: bool = False
    ) -> str:
        """Creates a kwok-managed Node (if missing) and waits until kwok reports it Ready.

        ``own_kwok``: a kwok process of its own manages the node (and its pods), so that
        :meth:`lose_fake_node` can take it away alone."""
        if not self._with_kwok:
            raise ProcessError("this control plane runs without kwok; nothing would manage the node")
        http = self._require_http()
        if own_kwok:
            self._start_kwok(f"kwok-{name}", [f"--manage-single-node={name}"])
        if http.get(f"/api/v1/nodes/{name}") is None:
            manifest = fake_node_manifest(name)
            if own_kwok:  # not for the shared kwok's selector
                manifest["metadata"]["annotations"][KWOK_NODE_ANNOTATION] = "own"
            http.post("/api/v1/nodes", manifest)

        def ready() -> bool:
            node = http.get(f"/api/v1/nodes/{name}")
            return node is not None and node_is_ready(node)

        kwok = self._process(f"kwok-{name}" if own_kwok else "kwok")
        wait_until(ready, what=f"node {name} to become Ready", timeout=timeout, process=kwok)
        # The API server taints every new Node not-ready (TaintNodesByCondition); the scheduler would
        # never place a pod on it. Unless node_lifecycle, nothing here runs the node-lifecycle-controller
        # that lifts it (with it, lifting it first is harmless).
        self._lift_not_ready_taint(name)
        return name

    def lose_fake_node(self, name: str) -> None:
        """Kills the kwok of a node made with ``own_kwok=True``: the node and its pods are lost for
        good (the Node object stays, as after a machine's death)."""
        process = self._process(f"kwok-{name}")
        if process is None:
            raise ProcessError(f"node {name} has no kwok of its own (create_fake_node(own_kwok=True))")
        process.popen.kill()
        process.popen.wait()
        self._processes.remove(process)  # ended on purpose: the plane still runs

    def start(self) -> None:
        if self._processes:
            raise ProcessError("the control plane is already running")
        _live_planes.append(self)
        _install_signal_handlers()
        began = time.monotonic()
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info(
            "control plane ready at %s in %.1f s (%s)",
            self._server,
            self.startup_seconds,
            ", ".join(f"{k} {v:.1f} s" for k, v in self.phase_seconds.items()),
        )

    def stop(self) -> None:
        """Stops the children in reverse order and deletes etcd's data. Idempotent."""
        with _signals_deferred():
            if self._node is not None:
                self._node.stop()
                self._node = None
            while self._processes:
                process = self._processes.pop()
                code = process.stop()
                log.debug("%s stopped (exit code %s)", process.name, code)
            shutil.rmtree(self._workdir / "etcd", ignore_errors=True)
            self._http = None
            if self in _live_planes:
                _live_planes.remove(self)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start-up phases --------------------------------------------------------------------------

    def _start_all(self) -> None:
        self._phase("certificates", self._prepare_workdir)
        self._phase("etcd", self._start_etcd)
        self._phase("kube-apiserver", self._start_apiserver)
        self._phase("manifests", lambda: self.apply(*self._manifests))
        if self._with_controller_manager:
            self._start_controller_manager()
        if self._with_kwok:
            self._start_kwok()
        if self._with_workloads:
            self._start_scheduler()
        if self._with_node:
            # containerd starts and loads the pause image while the controller manager comes up.
            self._phase("node runtime", self._start_node_runtime)
        if self._with_controller_manager:
            # kwok starts meanwhile: it has nothing to do before a test creates a node.
            self._phase("kube-controller-manager", self._wait_controller_manager)
        if self._with_node:
            self._phase("node", self._join_node)
        self._check_alive()

    def _phase(self, name: str, action: Callable[[], None]) -> None:
        began = time.monotonic()
        action()
        self.phase_seconds[name] = time.monotonic() - began
        log.info("control plane: %s done in %.1f s", name, self.phase_seconds[name])

    def _prepare_workdir(self) -> None:
        shutil.rmtree(self._workdir / "etcd", ignore_errors=True)  # a previous run's cluster
        (self._workdir / "logs").mkdir(parents=True, exist_ok=True)
        self._pki = certs.write_pki(self._workdir / "pki")
        self._tokens = {user: secrets.token_urlsafe(24) for user in self._user_names}
        auth = self._workdir / "auth"
        auth.mkdir(exist_ok=True)
        # Format: token,user,uid,"group,...". Users get no rights beyond what tests bind to them.
        lines = [f'{token},{user},{user},"system:authenticated"' for user, token in self._tokens.items()]
        certs.write_private(auth / "tokens.csv", ("\n".join(lines) + "\n").encode())

    def _start_etcd(self) -> None:
        self._etcd = EtcdCluster(
            self.bin_dir / binaries.ETCD,
            self._workdir / "etcd",
            self._workdir / "logs",
            members=self._etcd_members,
            quota_bytes=self._etcd_quota_bytes,
            spawn=self._spawn_etcd,
        )
        self._etcd.start()

    def _start_apiserver(self) -> None:
        pki = self._require_pki()
        port = free_port()
        self._server = f"https://127.0.0.1:{port}"
        process = self._spawn("kube-apiserver", self._apiserver_args(pki, port))
        _write_kubeconfig(
            self.kubeconfig,
            self._server,
            pki,
            {
                "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
                "client-key-data": _b64(pki.admin_key.read_bytes()),
            },
        )
        self._http = _AdminHttp(self._server, pki)
        http = self._http
        wait_until(
            lambda: http.status("/readyz") == 200,
            what="kube-apiserver /readyz",
            timeout=APISERVER_TIMEOUT,
            process=process,
        )

    def _apiserver_args(self, pki: certs.Pki, port: int) -> list[str | Path]:
        return [
            self.bin_dir / binaries.KUBE_APISERVER,
            f"--etcd-servers={','.join(self.etcd.client_urls)}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self._workdir / 'pki'}",  # never the default /var/run/kubernetes
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={self._workdir / 'auth' / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            *self._service_account_admission(),
            # The `kubernetes` Service's endpoints may not hold a loopback address; reconciling them
            # only fills the log with errors, and nothing in the bed uses that Service.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--profiling={str(self._profiling).lower()}",
            *self._node_apiserver_args(pki),
        ]

    def _service_account_admission(self) -> list[str]:
        if self._with_node:
            # Pods on a real node need the plugin: it mounts their ServiceAccount token.
            return []
        # The admission plugin would reject pods until the controller has created the namespace's
        # `default` ServiceAccount: a race in every fresh test namespace.
        return ["--disable-admission-plugins=ServiceAccount"]

    def _node_apiserver_args(self, pki: certs.Pki) -> list[str]:
        if not self._with_node:
            return []
        egress = self._workdir / "egress-selector.yaml"
        egress.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.k8s.io/v1beta1",
                    "kind": "EgressSelectorConfiguration",
                    "egressSelections": [
                        {
                            "name": "cluster",
                            "connection": {
                                "proxyProtocol": "HTTPConnect",
                                "transport": {"uds": {"udsName": str(self._egress_socket)}},
                            },
                        }
                    ],
                }
            )
        )
        return [
            # Connections to kubelets, pods and services go through the node's proxy, which dials
            # them inside the node's network namespace (kubelock.testbed.nodeproxy).
            f"--egress-selector-config-file={egress}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki.admin_cert}",
            f"--kubelet-client-key={pki.admin_key}",
        ]

    @property
    def _egress_socket(self) -> Path:
        path = self._workdir / "node-egress.sock"
        if len(str(path)) > 100:  # a Unix socket's path holds at most 107 bytes
            raise ProcessError(f"work directory {self._workdir} is too long for the node's Unix socket")
        return path

    def _start_controller_manager(self) -> None:
        pki = self._require_pki()
        self._spawn(
            "kube-controller-manager",
            [
                self.bin_dir / binaries.KUBE_CONTROLLER_MANAGER,
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(self._controllers())}",
                "--leader-elect=false",
                "--secure-port=0",  # no health endpoint needed; its default listens on 0.0.0.0:10257
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                *(
                    [f"--node-monitor-grace-period={self._node_monitor_grace_seconds}s"]
                    if self._node_monitor_grace_seconds is not None
                    else []
                ),
            ],
        )

    def _controllers(self) -> tuple[str, ...]:
        return (
            CONTROLLERS
            + (WORKLOAD_CONTROLLERS if self._with_workloads else ())
            + (QUOTA_CONTROLLERS if self._with_quotas else ())
            + (REAL_NODE_CONTROLLERS if self._with_node and not self._with_kwok else ())
            + (self._lifecycle_controllers() if self._with_node_lifecycle else ())
        )

    def _lifecycle_controllers(self) -> tuple[str, ...]:
        # Those the workloads already run (the pod garbage collector) are named once.
        already = CONTROLLERS + (WORKLOAD_CONTROLLERS if self._with_workloads else ())
        return tuple(c for c in KWOK_LIFECYCLE_CONTROLLERS if c not in already)

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                self.bin_dir / binaries.KUBE_SCHEDULER,
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self._workdir / 'pki' / 'kube-scheduler'}",
            ],
        )

    def _start_node_runtime(self) -> None:
        # Imported here: `python -m kubelock.testbed.images` must not find it imported by the package.
        from kubelock.testbed import images

        problem = node_problem(self.bin_dir)
        if problem:
            raise ProcessError(f"cannot start a real node: {problem}")
        pki = self._require_pki()
        self._node = RealNode(
            self._workdir / "node",
            bin_dir=self.bin_dir,
            kubeconfig=self.kubeconfig,
            ca_cert=pki.ca_cert,
            api_port=int(self.server.rsplit(":", 1)[1]),
            egress_socket=self._egress_socket,
            sandbox_image=images.pause_image(PAUSE_IMAGE),
            sandbox_image_name=PAUSE_IMAGE,
            log_dir=self._workdir / "logs",
        )
        self._node.start()

    def _join_node(self) -> None:
        node = self.node
        node.start_kubelet()
        http = self._require_http()

        def ready() -> bool:
            node.check_alive()
            found = http.get(f"/api/v1/nodes/{node.name}")
            return found is not None and node_is_ready(found)

        wait_until(ready, what=f"node {node.name} to become Ready", timeout=NODE_READY_TIMEOUT,
                   process=node.process("kubelet"))  # fmt: skip
        self._lift_not_ready_taint(node.name)
        self._publish_apiserver_endpoint(node.network.gateway)

    def _lift_not_ready_taint(self, name: str) -> None:
        """Removes the taint kubelet registers its node with (node-lifecycle-controller's job)."""
        http = self._require_http()
        taints = (http.get(f"/api/v1/nodes/{name}") or {}).get("spec", {}).get("taints") or []
        remaining = [t for t in taints if t.get("key") != NOT_READY_TAINT]
        if remaining != taints:
            http.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": remaining or None}})

    def _publish_apiserver_endpoint(self, address: str) -> None:
        """Points the `kubernetes` Service at the node's proxy, which forwards to the API server.

        The API server would publish its own --advertise-address, but it listens on 127.0.0.1 only,
        which no pod can reach; the node's proxy listens on the same port inside the node.
        """
        port = int(self.server.rsplit(":", 1)[1])
        http = self._require_http()
        http.post(
            "/api/v1/namespaces/default/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port}]}],
            },
        )
        http.post(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {
                        "kubernetes.io/service-name": "kubernetes",
                        "endpointslice.kubernetes.io/managed-by": "kubelock-testbed",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        )

    def _wait_controller_manager(self) -> None:
        # The serviceaccount controller creates `default` in every namespace: seeing it proves the
        # controller manager is connected and running its controllers.
        http = self._require_http()
        wait_until(
            lambda: http.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            what="kube-controller-manager to create the default ServiceAccount",
            timeout=CONTROLLER_MANAGER_TIMEOUT,
            process=self._process("kube-controller-manager"),
        )

    def _start_kwok(self, name: str = "kwok", manage: Sequence[str] = ()) -> None:
        stages = kwok_stage_files(self.bin_dir / binaries.KWOK_STAGES)
        if not stages:
            raise ProcessError(f"no kwok Stage files in {self.bin_dir / binaries.KWOK_STAGES}")
        self._spawn(
            name,
            [
                self.bin_dir / binaries.KWOK,
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                *(manage or [f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"]),
                "--cidr=10.244.0.0/16",  # pod IPs, kept apart from the service range
                *([f"--node-lease-duration-seconds={KWOK_NODE_LEASE_SECONDS}"] if self._with_node_lifecycle else []),
                # Without --server-address (and --node-port) kwok opens no listener at all.
                *[arg for stage in stages for arg in ("-c", str(stage))],
            ],
        )

    # -- helpers ----------------------------------------------------------------------------------

    def exited(self) -> list[str]:
        """Each of the plane's processes that has exited: its name, exit code and last log lines."""
        return [
            f"{process.name} exited with code {process.popen.returncode}\n"
            f"--- last lines of {process.log_path} ---\n{process.tail()}"
            for process in self._processes
            if not process.alive()
        ]

    def _check_alive(self) -> None:
        # kwok, for one, exits a moment after start on a bad configuration, with nothing waited on.
        exited = self.exited()
        if exited:
            raise ProcessError(f"{exited[0]}\n(during start-up)")

    def _required_binaries(self) -> list[str]:
        wanted = list(binaries.CORE_BINARIES)
        if self._with_workloads:
            wanted.append(binaries.KUBE_SCHEDULER)
        if self._with_node:
            wanted += [binaries.KUBELET, binaries.KUBE_PROXY]
        if self._with_controller_manager:
            wanted.append(binaries.KUBE_CONTROLLER_MANAGER)
        if self._with_kwok:
            wanted.append(binaries.KWOK)
        return wanted

    def _spawn(self, name: str, argv: Sequence[str | Path]) -> ManagedProcess:
        process = start_process(name, argv, log_dir=self._workdir / "logs", cwd=self._workdir)
        self._processes.append(process)
        return process

    def _spawn_etcd(self, name: str, argv: Sequence[str | Path]) -> ManagedProcess:
        # A restarted member (etcd-0.1 after etcd-0) replaces its dead predecessor among the processes.
        member = name.split(".", 1)[0]
        self._processes = [p for p in self._processes if p.alive() or p.name.split(".", 1)[0] != member]
        return self._spawn(name, argv)

    def _process(self, name: str) -> ManagedProcess | None:
        return next((p for p in self._processes if p.name == name), None)

    def _require_pki(self) -> certs.Pki:
        if self._pki is None:
            raise ProcessError("the control plane has not been started")
        return self._pki

    def _require_http(self) -> _AdminHttp:
        if self._http is None:
            raise ProcessError("the control plane is not running")
        return self._http

    def _crds_established(self) -> bool:
        listing = self._require_http().get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        crds = (listing or {}).get("items", [])
        return all(
            any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in crd.get("status", {}).get("conditions", [])
            )
            for crd in crds
        )


class _AdminHttp:
    """Just enough of an HTTPS client for readiness checks, as admin; keeps kubernetes out of here."""

    def __init__(self, server: str, pki: certs.Pki) -> None:
        self._server = server
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        # No proxies: an HTTPS_PROXY in the environment must not capture 127.0.0.1.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def status(self, path: str) -> int:
        return self._send("GET", path)[0]

    def get(self, path: str) -> Any:
        """The decoded object, or None if it does not exist."""
        code, body = self._send("GET", path)
        if code == 404:
            return None
        _raise_for(code, "GET", path, body)
        return json.loads(body)

    def post(self, path: str, obj: Mapping[str, Any]) -> Any:
        code, body = self._send("POST", path, json.dumps(obj).encode())
        _raise_for(code, "POST", path, body)
        return json.loads(body)

    def patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        """A JSON merge patch."""
        code, body = self._send("PATCH", path, json.dumps(patch).encode(), "application/merge-patch+json")
        _raise_for(code, "PATCH", path, body)
        return json.loads(body)

    def _send(
        self, method: str, path: str, data: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self._server + path, data=data, method=method)
        request.add_header("Content-Type", content_type)
        try:
            with self._opener.open(request, timeout=10) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _raise_for(code: int, method: str, path: str, body: bytes) -> None:
    if code >= 300:
        raise ProcessError(f"{method} {path} answered {code}: {body.decode(errors='replace')[:500]}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_kubeconfig(
    path: Path, server: str, pki: certs.Pki, user: Mapping[str, str], *, namespace: str | None = None
) -> None:
    # Certificates are embedded so the file can be copied anywhere (for example into a CI artifact).
    context: dict[str, str] = {"cluster": "kubelock-testbed", "user": "user"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubelock-testbed",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert.read_bytes())},
            }
        ],
        "users": [{"name": "user", "user": dict(user)}],
        "contexts": [{"name": "kubelock-testbed", "context": context}],
        "current-context": "kubelock-testbed",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    certs.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


# -- process-wide cleanup -------------------------------------------------------------------------
# Planes still running at interpreter exit or on a fatal signal are stopped, so that children never
# outlive their parent even when nobody calls stop().

_live_planes: list[ControlPlane] = []
_FATAL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_all() -> None:
    for plane in reversed(list(_live_planes)):
        plane.stop()


atexit.register(_stop_all)


def _install_signal_handlers() -> None:
    # Only where nobody else handles them: an application's own handler (kubelock.testbed's `run`,
    # for instance) is responsible for stopping its planes.
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _FATAL_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _stop_all_and_die)


def _stop_all_and_die(signum: int, frame: types.FrameType | None) -> None:
    _stop_all()
    # Die of the same signal, as the default disposition would have: the exit status stays truthful.
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds back Ctrl-C and SIGTERM until the block ends, so a shutdown is never left half done.

    Done with Python-level handlers rather than a signal mask: in a process with threads the kernel
    may deliver the signal to a thread that does not block it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    # A handler installed outside Python (getsignal() is None) could not be put back: leave it be.
    previous = {s: h for s in _DEFERRED_SIGNALS if (h := signal.getsignal(s)) is not None}
    for signum in previous:
        signal.signal(signum, lambda number, _frame: pending.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for received in pending:
            signal.raise_signal(received)
