"""``python -m kubelock.testbed {run,up,down,status}``: a local cluster with the operator, for ``make run``.

run     start the control plane (CRDs, RBAC and admission policies applied), then the operator in the
        foreground; Ctrl-C stops both.
up      the same, detached; returns once ready. Output goes to <workdir>/logs/run.log.
down    stop what `up` (or `run`) started, and wait until every process of it is gone.
status  say whether it runs (exit code 0 if it does, 3 if not).
load-image ARCHIVE...
        import image archives (docker-archive tars, e.g. from `make image`) into the real node
        started with `up --node`, so that pods can use them with imagePullPolicy Never.

`--node` adds a real node (kubelet, containerd, kube-proxy; needs root and `make node-tools`) on which
pods run as containers; without it pods are scheduled onto a kwok node that only fakes them.
`--etcd-members N` runs etcd as a cluster of N members on 127.0.0.1 (1 to 7; default 1), as production
control planes run three, to see what kubelock makes of a member lost or hung (`make run ETCD_MEMBERS=3`).
`--bare` leaves kubelock out (no CRDs, roles, admission policies or operator): an empty cluster, as a
user's, to install kubelock into with `kubectl apply -f manifests/kubelock.yaml` or the chart, and to
uninstall it from without touching anything of the bed's.

Paths are relative to the current directory, which should be the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from kubelock.testbed import binaries
from kubelock.testbed.binaries import MissingBinariesError
from kubelock.testbed.controlplane import ControlPlane
from kubelock.testbed.node import import_into_running_node
from kubelock.testbed.processes import (
    ManagedProcess,
    ProcessError,
    descendants,
    free_port,
    pid_alive,
    start_process,
    wait_until,
)

log = logging.getLogger("kubelock.testbed")

MANIFESTS: tuple[str, ...] = ("crds", "config/rbac", "config/admission")
OPERATOR_MODULE = "kubelock.operator"
FAKE_NODE = "kwok-node-0"
OPERATOR_TIMEOUT = 60.0
DISCOVERY_TIMEOUT = 60.0
# The local users (static tokens of the control plane) and the role `make run` binds to each.
USER_ROLES: dict[str, tuple[str, str]] = {
    "alice": ("kubelock-agent", "takes, renews and releases locks in its own name"),
    "bob": ("kubelock-agent", "the same, to contend with alice"),
    "carol": ("kubelock-agent", "the same"),
    "viewer": ("kubelock-viewer", "reads claims and locks"),
    "lockadmin": ("kubelock-admin", "also breaks locks and reads Events"),
}
UP_TIMEOUT = 180.0
DEFAULT_WORKDIR = ".run"  # `make up` and `make down` use it
DOWN_TIMEOUT = 60.0
EXIT_NOT_RUNNING = 3  # as LSB init scripts' `status`
MAX_ETCD_MEMBERS = 7  # etcd's own advice: more members only slow every write down


class _Shutdown(BaseException):
    """Raised by the SIGTERM/SIGHUP handler of `run`, handled like Ctrl-C."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir).resolve()
    if args.command == "run":
        return run(workdir, operator=args.operator, node=args.node, bare=args.bare, etcd_members=args.etcd_members)
    if args.command == "up":
        return up(workdir, operator=args.operator, node=args.node, bare=args.bare, etcd_members=args.etcd_members)
    if args.command == "load-image":
        return load_image(workdir, args.archives)
    if args.command == "down":
        return down(workdir)
    return status(workdir)


def etcd_members(text: str) -> int:
    """`--etcd-members`: a whole number from 1 to MAX_ETCD_MEMBERS, or a clear error."""
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_ETCD_MEMBERS:
        raise argparse.ArgumentTypeError(
            f"the number of etcd members must be a whole number from 1 to {MAX_ETCD_MEMBERS} "
            f"(3 as production control planes run), not {text!r}"
        )
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubelock.testbed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("run", "start the control plane and the operator in the foreground"),
        ("up", "start them in the background"),
        ("down", "stop what `up` (or `run`) started"),
        ("status", "say whether it runs"),
        ("load-image", "import image archives into the real node"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--workdir", default=DEFAULT_WORKDIR,
                             help=f"state, logs and kubeconfig (default: {DEFAULT_WORKDIR})")
        if name == "load-image":
            command.add_argument("archives", nargs="+", type=Path, help="docker-archive or OCI tars")
        if name in ("run", "up"):
            command.add_argument(
                "--node",
                action=argparse.BooleanOptionalAction,
                default=False,
                help="also start a real node on which pods run as containers (default: no)",
            )
            command.add_argument(
                "--operator",
                action=argparse.BooleanOptionalAction,
                default=True,
                help=f"run the operator ({OPERATOR_MODULE}) too (default: yes)",
            )
            command.add_argument(
                "--etcd-members",
                type=etcd_members,
                default=1,
                metavar="N",
                help=f"etcd as a cluster of N members (1 to {MAX_ETCD_MEMBERS}; default 1)",
            )
            command.add_argument(
                "--bare",
                action="store_true",
                help="an empty cluster, as a user's: neither kubelock's CRDs, roles and admission policies "
                "nor its operator, for installing kubelock into (manifests/kubelock.yaml or the chart)",
            )
    return parser


# -- run ------------------------------------------------------------------------------------------


def run(workdir: Path, *, operator: bool, node: bool = False, bare: bool = False, etcd_members: int = 1) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    operator = operator and not bare
    try:
        _claim_pid_file(workdir)
    except ProcessError as error:
        print(error, file=sys.stderr)
        return 1
    _handle_termination()
    # The scheduler and the workload controllers, so that `helm install` + `kubectl rollout status`
    # complete (onto the kwok node, or the real one).
    # Bare: what an installation brings is not there yet, so that installing it (and uninstalling it)
    # meets nothing of the bed's own.
    manifests = [] if bare else [Path(m) for m in MANIFESTS]
    # With a real node kwok has nothing to fake (and the node-lifecycle controller runs instead).
    plane = ControlPlane(workdir, manifests=manifests, workloads=True, node=node, kwok=not node,
                         etcd_members=etcd_members)
    operator_process: ManagedProcess | None = None
    try:
        plane.start()
        if not node:  # with a real node, pods go there rather than to kwok's pretend one
            plane.create_fake_node(FAKE_NODE)
        if not bare:
            _wait_until_served(plane)
        _write_user_kubeconfigs(plane)
        _forget_discovery(plane.server)
        if operator:
            operator_process = _start_operator(plane.kubeconfig)
        _announce(plane, operator_process, bare=bare)
        # The kubectl to try it with, for `up` to print: written whole, then renamed into place, so
        # that `up`, which waits for the marker, never reads half of it.
        marker = _ready_marker(workdir)
        marker.with_suffix(".tmp").write_text(f"{plane.kubeconfig}\n{_kubectl(plane)}\n")
        marker.with_suffix(".tmp").replace(marker)
        return _supervise(plane, operator_process)
    except (KeyboardInterrupt, _Shutdown):
        print("\nstopping", flush=True)
        return 0
    except (MissingBinariesError, ProcessError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        with _uninterruptible():
            _ready_marker(workdir).unlink(missing_ok=True)
            if operator_process is not None:
                operator_process.stop()
            plane.stop()
            _pid_file(workdir).unlink(missing_ok=True)


def _wait_until_served(plane: ControlPlane) -> None:
    """Ready means `kubectl get locks` works at once. A CRD is Established a moment before the API
    server's discovery lists it (and its category `locks`), and kubectl finds resources through
    discovery; each probe uses a fresh discovery cache so that none is left holding the gap."""
    probes = plane.workdir / "discovery-probe"

    def served() -> bool:
        shutil.rmtree(probes, ignore_errors=True)
        result = plane.kubectl("get", "locks", "--all-namespaces", "--cache-dir", str(probes), check=False)
        return result.returncode == 0

    try:
        wait_until(served, what="kubectl to find the kubelock resources (discovery)", timeout=DISCOVERY_TIMEOUT)
    finally:
        shutil.rmtree(probes, ignore_errors=True)


def _forget_discovery(server: str) -> None:
    """Drop kubectl's cached discovery of this server. kubectl caches it for hours per host and port,
    and what is there now was cached while the server started (the manifests are applied with
    kubectl), or by an earlier server on the same port; with it, `kubectl get locks` would fail."""
    root = Path(os.environ.get("KUBECACHEDIR") or Path.home() / ".kube" / "cache")
    host = urllib.parse.urlsplit(server).netloc
    shutil.rmtree(root / "discovery" / re.sub(r"[^-.a-zA-Z0-9]", "_", host), ignore_errors=True)


def _write_user_kubeconfigs(plane: ControlPlane) -> None:
    """A kubeconfig per local user (a bearer token, namespace `default`) and the role each plays,
    bound cluster-wide, so that anyone can try kubelock as an agent, a viewer or a lock admin."""
    bindings = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"testbed-{user}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        for user, (role, _) in USER_ROLES.items()
    ]
    path = plane.workdir / "users" / "roles.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(bindings, sort_keys=False))
    plane.apply(path)
    for user in USER_ROLES:
        plane.token_kubeconfig(plane.users[user], user_kubeconfig(plane.workdir, user), namespace="default")


def user_kubeconfig(workdir: Path, user: str) -> Path:
    return workdir / "users" / f"{user}.kubeconfig"


def _handle_termination() -> None:
    def shutdown(signum: int, _frame: types.FrameType | None) -> None:
        raise _Shutdown(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, shutdown)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    # A second Ctrl-C must not abandon the shutdown half way (each step is bounded by SIGKILL).
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _operator_available() -> bool:
    try:
        spec = importlib.util.find_spec(OPERATOR_MODULE)
        if spec is not None and spec.submodule_search_locations is not None:  # a package needs __main__
            spec = importlib.util.find_spec(f"{OPERATOR_MODULE}.__main__")
    except ImportError:
        return False
    return spec is not None


def _start_operator(kubeconfig: Path) -> ManagedProcess | None:
    if not _operator_available():
        print(
            f"note: {OPERATOR_MODULE} cannot be run with `python -m` yet; running the control plane "
            f"without the operator",
            file=sys.stderr,
            flush=True,
        )
        return None
    # Its liveness endpoint on a free port: the default 8080 may be taken, and answering is the
    # operator's way of saying it is up.
    health = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", OPERATOR_MODULE, "--kubeconfig", str(kubeconfig), "--all-namespaces"]
    argv += ["--health-address", health]
    # Its output goes straight to our stdout/stderr (the terminal, or run.log under `up`).
    process = start_process("operator", argv, log_dir=None, cwd=Path.cwd())
    wait_until(
        lambda: _answers(f"http://{health}/healthz"),
        what="the operator's /healthz",
        timeout=OPERATOR_TIMEOUT,
        process=process,
    )
    return process


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return bool(response.status == 200)


def _kubectl(plane: ControlPlane) -> str:
    """The command line of the bed's kubectl, as cluster admin."""
    return f"{plane.bin_dir / binaries.KUBECTL} --kubeconfig {plane.kubeconfig}"


def _announce(plane: ControlPlane, operator: ManagedProcess | None, *, bare: bool = False) -> None:
    who = f"operator pid {operator.pid}" if operator else "no operator"
    members = len(plane.etcd.members)
    store = f", {members} etcd members ({', '.join(plane.etcd.client_urls)})" if members > 1 else ""
    print(
        f"ready: control plane at {plane.server} (started in {plane.startup_seconds:.1f} s){store}, {who}\n"
        f"kubeconfig: {plane.kubeconfig} (cluster admin)\n"
        f"{users_text(plane.workdir)}\n"
        f"{try_text(_kubectl(plane), bare=bare, operator=operator is not None)}\n"
        f"Ctrl-C stops everything.",
        flush=True,
    )


def try_text(kubectl: str, *, bare: bool = False, operator: bool = True) -> str:
    """The first commands to try on a bed that is ready: `run` and `up` print the same."""
    if bare:
        return (
            f"no kubelock yet (bare): install it as docs/install.md says, e.g.\n"
            f"  {kubectl} apply -f manifests/kubelock.yaml\n"
            f"the users' roles are bound already and take effect once the install brings them"
        )
    text = (
        f"try:\n"
        f"  {kubectl} apply -f examples/lockclaim.yaml\n"
        f"  {kubectl} get locks\n"
        f"  {kubectl} delete -f examples/lockclaim.yaml"
    )
    if not operator:  # the claim would stay without an answer, with nothing to say why
        text += "\nno operator runs here: claims stay unanswered until one is installed (docs/install.md)"
    return text


def users_text(workdir: Path) -> str:
    lines = [f"users (namespace default): {user_kubeconfig(workdir, '<user>')}"]
    width = max(len(u) for u in USER_ROLES)
    lines += [f"  {user:<{width}}  {role:<15}  {what}" for user, (role, what) in USER_ROLES.items()]
    return "\n".join(lines)


def _supervise(plane: ControlPlane, operator: ManagedProcess | None) -> int:
    """Waits for Ctrl-C/SIGTERM; a dying operator or component ends the run with an error. An etcd
    member of several that stops is said once and the run goes on while a quorum stands: killing one
    is how a user sees what kubelock makes of a lost member (README, `make run ETCD_MEMBERS=3`)."""
    told: set[str] = set()
    while True:
        if operator is not None and not operator.alive():
            print(f"error: the operator exited with code {operator.popen.returncode}", file=sys.stderr)
            return operator.popen.returncode or 1
        if not plane.serving:
            print(f"error: a control plane component died; see {plane.workdir / 'logs'}", file=sys.stderr)
            return 1
        stopped = set(plane.stopped_etcd_members())
        for name in sorted(stopped - told):
            total = len(plane.etcd.members)
            print(f"etcd member {name} stopped: {total - len(stopped)} of {total} members run, a quorum, so the "
                  f"control plane goes on; it stops once a majority is gone (logs in {plane.workdir / 'logs'})",
                  file=sys.stderr, flush=True)
        told = stopped
        time.sleep(1.0)


# -- up / down / status ---------------------------------------------------------------------------


def up(workdir: Path, *, operator: bool, node: bool = False, bare: bool = False, etcd_members: int = 1) -> int:
    operator = operator and not bare
    pid = _running_pid(workdir)
    if pid is not None:
        running = _run_options(pid)
        if running is not None and running != (operator, node, bare, etcd_members):
            # Saying "already running" with success would leave the caller on a bed without what it
            # asked for (a second operator beside a chart's, or no node for its pods).
            print(
                f"error: already running (pid {pid}) {_describe(*running)}, "
                f"not {_describe(operator, node, bare, etcd_members)}: "
                "stop it with `make down` (python -m kubelock.testbed down) first",
                file=sys.stderr,
            )
            return 1
        print(f"already running (pid {pid}); kubeconfig: {workdir / 'kubeconfig'}")
        return 0
    log_path = workdir / "logs" / "run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _ready_marker(workdir).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "kubelock.testbed", "run", "--workdir", str(workdir)]
    argv.append("--operator" if operator else "--no-operator")
    argv.append("--node" if node else "--no-node")
    if bare:
        argv.append("--bare")
    argv += ["--etcd-members", str(etcd_members)]
    with log_path.open("wb") as output:
        # A session of its own: the daemon survives this command and the terminal it ran in.
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    daemon = ManagedProcess(name="run", popen=child, log_path=log_path)
    try:
        wait_until(_ready_marker(workdir).exists, what="the control plane", timeout=UP_TIMEOUT, process=daemon)
    except BaseException as error:
        daemon.stop()
        if isinstance(error, ProcessError):
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise
    print(f"running (pid {child.pid}); log: {log_path}")
    print(f"kubeconfig: {workdir / 'kubeconfig'} (cluster admin)")
    print(users_text(workdir))
    lines = _ready_marker(workdir).read_text().splitlines()
    if len(lines) > 1:  # the kubectl `run` found
        print(try_text(lines[1], bare=bare, operator=operator))
    print(f"{stop_command(workdir)} stops everything.")
    return 0


def stop_command(workdir: Path) -> str:
    """How to stop the bed of `workdir`: `make down` for the Makefile's directory (where a newcomer's
    `make run` and `make up` put it, and whose shell may have no `python` with kubelock), else the module."""
    if workdir == Path(DEFAULT_WORKDIR).resolve():
        return "`make down`"
    return f"`python -m kubelock.testbed down --workdir {workdir}`"


def down(workdir: Path) -> int:
    pid = _running_pid(workdir)
    if pid is None:
        print("not running")
        return 0
    # Remember the whole tree first: once the daemon is gone its children can no longer be found.
    tree = [pid, *descendants(pid)]
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not any(map(pid_alive, tree)), what=f"pid {pid} to stop", timeout=DOWN_TIMEOUT)
    except ProcessError:
        print(f"pid {pid} did not stop in {DOWN_TIMEOUT:.0f} s; killing it", file=sys.stderr)
        for member in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        wait_until(lambda: not any(map(pid_alive, tree)), what=f"pid {pid} to die", timeout=10)
    _pid_file(workdir).unlink(missing_ok=True)
    print("stopped")
    return 0


def load_image(workdir: Path, archives: Sequence[Path]) -> int:
    try:
        for archive in archives:
            import_into_running_node(workdir / "node", archive)
            print(f"imported {archive}")
    except ProcessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def status(workdir: Path) -> int:
    pid = _running_pid(workdir)
    if pid is None:
        print("not running")
        return EXIT_NOT_RUNNING
    state = "ready" if _ready_marker(workdir).exists() else "starting"
    print(f"running (pid {pid}, {state}); kubeconfig: {workdir / 'kubeconfig'}")
    return 0


# -- pid file -------------------------------------------------------------------------------------


def _pid_file(workdir: Path) -> Path:
    return workdir / "run.pid"


def _ready_marker(workdir: Path) -> Path:
    return workdir / "ready"


def _running_pid(workdir: Path) -> int | None:
    """The pid of a live `run` for this work directory, or None (a stale pid file is ignored)."""
    try:
        pid = int(_pid_file(workdir).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return pid  # no /proc: trust the pid file
    # After a reboot or a crash the pid may belong to an unrelated process now, or to the `run` of
    # another work directory (pids are reused within minutes here), which `down` must not stop.
    if "kubelock.testbed" not in argv:
        return None
    theirs = cwd / _flag_value(argv, "--workdir", DEFAULT_WORKDIR)
    return pid if theirs.resolve() == workdir.resolve() else None


def _flag_value(argv: list[str], flag: str, default: str) -> str:
    """The value of `flag` in a command line (`--flag V` or `--flag=V`), else `default`."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return default


def _run_options(pid: int) -> tuple[bool, bool, bool, int] | None:
    """(operator, node, bare, etcd members) of the running `run`, read from its command line; None when unknown."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "kubelock.testbed" not in argv:
        return None
    args, _ = _parser().parse_known_args([a for a in argv[argv.index("kubelock.testbed") + 1 :] if a])
    if args.command != "run":
        return None
    return bool(args.operator) and not args.bare, bool(args.node), bool(args.bare), int(args.etcd_members)


def _describe(operator: bool, node: bool, bare: bool = False, etcd_members: int = 1) -> str:
    node_text = f"{'with' if node else 'without'} a node"
    if etcd_members > 1:
        node_text += f", {etcd_members} etcd members"
    if bare:
        return f"bare (no kubelock objects, no operator) and {node_text}"
    return f"{'with' if operator else 'without'} the operator and {node_text}"


def _claim_pid_file(workdir: Path) -> None:
    path = _pid_file(workdir)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            other = _running_pid(workdir)
            if other is not None and other != os.getpid():
                # A second `make run` meets the first: it is stopped by Ctrl-C in its own terminal,
                # or from here as `make up` is.
                raise ProcessError(
                    f"already running in {workdir} (pid {other}): use it as it is, or stop it first "
                    f"(Ctrl-C where it runs in the foreground, or {stop_command(workdir)})"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise ProcessError(f"cannot claim {path}")


if __name__ == "__main__":
    sys.exit(main())
