"""Container images without a container engine: the operator, the agent and the node's pause image.

``python -m kubelock.testbed.images`` (``make image`` on a machine without Docker) writes
docker-archive tars that ``ctr images import``, ``docker load`` and ``kind load image-archive`` all
read. Nothing is pulled from a registry:

* the **base layer** is a Debian bookworm root file system with ``python3`` and ``python3-venv``,
  made by ``mmdebstrap`` from Debian's packages (the same apt sources as the host), cached under
  ``~/.cache/kubelock/images`` by its package list;
* the **application layer** is ``/opt/kubelock``: a virtual environment made *inside* that root
  file system (``chroot``) with Debian's Python, into which wheels built on the host are installed
  (``.[operator]`` for the operator, ``.`` for the agent), byte-compiled, plus the ``kubelock`` user
  (uid 10001). No compiler or other build tool is ever installed in the image;
* the **pause image** of the node's pod sandboxes is one static binary from a few lines of C.

Why a small tar writer rather than buildah or umoci: an image is a tar of layer tars plus two
small JSON documents, and Python's ``tarfile`` writes them deterministically (sorted entries, fixed
times, numeric owners); buildah would bring a storage driver and its own configuration, umoci an
OCI layout to convert. The Dockerfile builds the same two layers' contents (Debian's Python, the
same virtual environment, user and entrypoint) where a Docker engine exists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE_DATE_EPOCH = 1700000000  # fixed file times: the same inputs give the same layer digest
SUITE = "bookworm"
BASE_PACKAGES: tuple[str, ...] = ("python3", "python3-venv")
# Documentation, manual pages and translations are of no use in a container.
DPKG_EXCLUDES: tuple[str, ...] = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
VENV = "/opt/kubelock"
UID = GID = 10001
APP_SOURCES: tuple[str, ...] = ("pyproject.toml", "README.md", "operator")

PAUSE_C = r"""
/* The pod sandbox's process: holds the pod's namespaces, reaps zombies, exits on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction s = {0}, r = {0};
  s.sa_handler = stop; sigaction(SIGINT, &s, NULL); sigaction(SIGTERM, &s, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
"""


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image configuration."""

    entrypoint: Sequence[str]
    cmd: Sequence[str] = ()
    user: str = ""
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    exposed_ports: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        config: dict[str, Any] = {"Entrypoint": list(self.entrypoint), "Env": list(self.env)}
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.user:
            config["User"] = self.user
        if self.exposed_ports:
            config["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.labels:
            config["Labels"] = dict(self.labels)
        return config


@dataclass(frozen=True)
class Layer:
    """An uncompressed layer tar; its digest is the image's ``diff_id``."""

    path: Path
    digest: str  # sha256:<hex>


def layer(path: Path) -> Layer:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return Layer(path, f"sha256:{digest.hexdigest()}")


def write_layer(out: Path, root: Path, members: Iterable[str]) -> Layer:
    """A layer holding ``members`` (paths relative to ``root``, directories recursively).

    Entries are sorted, owned by their numeric ids, dated SOURCE_DATE_EPOCH; parent directories of
    a member are included so that the layer is complete on its own.
    """
    names: set[str] = set()
    for member in members:
        top = Path(member.strip("/"))
        for parent in list(top.parents)[:-1]:
            names.add(str(parent))
        names.add(str(top))
        base = root / top
        if base.is_dir() and not base.is_symlink():
            for dirpath, dirnames, filenames in os.walk(base):
                for entry in (*dirnames, *filenames):
                    names.add(str((Path(dirpath) / entry).relative_to(root)))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            info = tar.gettarinfo(str(root / name), arcname=name)
            info.mtime = SOURCE_DATE_EPOCH
            info.uname = info.gname = ""
            if info.isreg():
                with (root / name).open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return layer(out)


def write_docker_archive(out: Path, *, tag: str, layers: Sequence[Layer], config: ImageConfig) -> Path:
    """A ``docker save``-style archive: manifest.json, the configuration and one tar per layer."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(SOURCE_DATE_EPOCH))
    image = {
        "architecture": _goarch(),
        "os": "linux",
        "created": created,
        "config": config.as_json(),
        "rootfs": {"type": "layers", "diff_ids": [lay.digest for lay in layers]},
        "history": [{"created": created, "created_by": "kubelock.testbed.images"} for _ in layers],
    }
    config_bytes = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    layer_names = [f"{lay.digest.removeprefix('sha256:')}/layer.tar" for lay in layers]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]
    tmp = _partial(out)
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, config_name, config_bytes)
        for name, lay in zip(layer_names, layers, strict=True):
            info = tarfile.TarInfo(name)
            info.size = lay.path.stat().st_size
            info.mtime = SOURCE_DATE_EPOCH
            with lay.path.open("rb") as handle:
                tar.addfile(info, handle)
        _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    tmp.replace(out)
    return out


def _partial(out: Path) -> Path:
    # Unique per process: clones on one machine share the cache and may build the same file at once;
    # the finished file is moved into place in one step.
    return out.with_name(f".{out.name}.{os.getpid()}.partial")


def read_docker_archive(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest entry, image configuration) of a single-image archive."""
    with tarfile.open(path) as tar:
        manifest = json.load(_member(tar, "manifest.json"))[0]
        config = json.load(_member(tar, manifest["Config"]))
    return manifest, config


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    handle = tar.extractfile(name)
    if handle is None:
        raise ValueError(f"{name} is not a file in the archive")
    return handle  # type: ignore[return-value]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = SOURCE_DATE_EPOCH
    tar.addfile(info, io.BytesIO(data))


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# -- the images -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    # Beside the control plane's binaries (hack/install-binaries.sh).
    if os.environ.get("KUBELOCK_CACHE_DIR"):
        return Path(os.environ["KUBELOCK_CACHE_DIR"]) / "images"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubelock" / "images"


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def pause_image(tag: str) -> Path:
    """The pod sandbox image: a static ``/pause`` (cached by its source)."""
    out = cache_dir() / f"pause-{_key(PAUSE_C, tag)}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        source = Path(tmp) / "pause.c"
        source.write_text(PAUSE_C)
        cc = os.environ.get("CC", "cc")
        _run([cc, "-static", "-Os", "-s", "-o", str(root / "pause"), str(source)])
        lay = write_layer(Path(tmp) / "layer.tar", root, ["pause"])
        write_docker_archive(out, tag=tag, layers=[lay], config=ImageConfig(entrypoint=["/pause"], user="65535:65535"))
    return out


def base_layer() -> Layer:
    """Debian bookworm with Python, from Debian's packages by mmdebstrap (cached by its inputs)."""
    sources = DEBIAN_SOURCES.read_text() if DEBIAN_SOURCES.exists() else ""
    out = cache_dir() / f"base-{SUITE}-{_key(SUITE, *BASE_PACKAGES, *DPKG_EXCLUDES, sources)}.tar"
    if out.exists():
        return layer(out)
    if not shutil.which("mmdebstrap"):
        raise SystemExit("mmdebstrap is missing: run `make node-tools` (hack/install-node.sh), or build with Docker")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(out)
    argv = [
        "mmdebstrap", "--quiet", "--format=tar", "--variant=essential", f"--include={','.join(BASE_PACKAGES)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
        # No apt lists or caches in the image.
        "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/* \"$1\"/var/log/*",
        SUITE, str(partial),
    ]  # fmt: skip
    if sources:
        argv.append(str(DEBIAN_SOURCES))
    _run(argv, env={**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)})
    partial.replace(out)
    return layer(out)


@dataclass(frozen=True)
class AppImage:
    """One of the two Python images: what is installed, and how it starts."""

    name: str
    requirement: str  # pip requirement relative to the source tree: "." or ".[operator]"
    config: ImageConfig


LABELS = {
    "org.opencontainers.image.title": "kubelock",
    "org.opencontainers.image.description": (
        "Exclusive, fenced, deadlock-aware locks for concurrent agents on Kubernetes"
    ),
    "org.opencontainers.image.licenses": "Apache-2.0",
}
APP_ENV = (
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
OPERATOR = AppImage(
    "kubelock",
    ".[operator]",
    ImageConfig(
        entrypoint=["python", "-m", "kubelock.operator"],
        cmd=["--health-address=0.0.0.0:8080", "--metrics-port=9090", "--metrics-address=0.0.0.0"],
        user=f"{UID}:{GID}",
        env=APP_ENV,
        exposed_ports=["8080/tcp", "9090/tcp"],
        labels=LABELS,
    ),
)
# The SDK and the CLI (kubelock, rlock, rlock-heartbeat, runlock) for agents' containers.
AGENT = AppImage(
    "kubelock-agent",
    ".",
    ImageConfig(entrypoint=["kubelock"], cmd=["--help"], user=f"{UID}:{GID}", env=APP_ENV, labels=LABELS),
)


def app_image(image: AppImage, *, source: Path, out_dir: Path, tag: str) -> Path:
    """Builds (or reuses, when its inputs are unchanged) one application image."""
    base = base_layer()
    key = _key(base.digest, image.requirement, tag, json.dumps(image.config.as_json()), _tree_digest(source))
    out = out_dir / f"{image.name}.tar"
    stamp = out.with_suffix(".key")
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{image.name}-") as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        _run(["tar", "-xf", str(base.path), "-C", str(root), "--numeric-owner"])
        wheels = root / "tmp" / "wheels"
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), image.requirement],
             cwd=source)  # fmt: skip
        wheel = next(wheels.glob("kubelock-*.whl")).name
        extra = image.requirement.removeprefix(".")
        _chroot(root, "python3", "-m", "venv", VENV)
        _chroot(root, f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-cache-dir",
                "--find-links", "/tmp/wheels", f"/tmp/wheels/{wheel}{extra}")  # fmt: skip
        _chroot(root, f"{VENV}/bin/python", "-m", "compileall", "-q", f"{VENV}/lib")
        shutil.rmtree(wheels)
        with (root / "etc" / "passwd").open("a") as passwd:
            passwd.write(f"kubelock:x:{UID}:{GID}::/nonexistent:/usr/sbin/nologin\n")
        with (root / "etc" / "group").open("a") as group:
            group.write(f"kubelock:x:{GID}:\n")
        app = write_layer(work / "app.tar", root, [VENV.lstrip("/"), "etc/passwd", "etc/group"])
        write_docker_archive(out, tag=tag, layers=[base, app], config=image.config)
    stamp.write_text(key)
    return out


def _tree_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for name in APP_SOURCES:
        path = source / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc" or ".egg-info" in str(file):
                continue
            digest.update(str(file.relative_to(source)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _chroot(root: Path, *argv: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    _run(["chroot", str(root), *argv], env=env)


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    result = subprocess.run(list(argv), env=None if env is None else dict(env), cwd=cwd, capture_output=True,
                            text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stderr[-4000:]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubelock.testbed.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path.cwd(), help="the repository (default: .)")
    parser.add_argument("--out", type=Path, default=Path("build/images"), help="where the archives go")
    parser.add_argument("--tag", default="localhost/kubelock:dev", help="the operator image's name")
    parser.add_argument("--agent-tag", default="localhost/kubelock-agent:dev", help="the agent image's name")
    parser.add_argument("--no-agent", action="store_true", help="build the operator image only")
    args = parser.parse_args(argv)
    builds = [(OPERATOR, args.tag)] + ([] if args.no_agent else [(AGENT, args.agent_tag)])
    for image, tag in builds:
        began = time.monotonic()
        out = app_image(image, source=args.source.resolve(), out_dir=args.out, tag=tag)
        print(f"{tag}: {out} ({out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
