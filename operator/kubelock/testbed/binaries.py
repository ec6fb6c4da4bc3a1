"""Locating the control plane's binaries (etcd, kube-apiserver, ...), which are built, never committed."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ETCD = "etcd"
KUBE_APISERVER = "kube-apiserver"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"
KUBE_SCHEDULER = "kube-scheduler"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
KUBECTL = "kubectl"
KWOK = "kwok"
HELM = "helm"
KWOK_STAGES = "kwok-stages"

#: What every control plane needs; setup-envtest's KUBEBUILDER_ASSETS holds exactly these.
CORE_BINARIES: tuple[str, ...] = (ETCD, KUBE_APISERVER, KUBECTL)
ALL_BINARIES: tuple[str, ...] = (*CORE_BINARIES, KUBE_CONTROLLER_MANAGER, KWOK, HELM)
#: A real node's and the workloads' components (same Kubernetes build as kube-apiserver).
NODE_BINARIES: tuple[str, ...] = (KUBE_SCHEDULER, KUBELET, KUBE_PROXY)

_HINT = (
    "Run `make tools` (hack/install-binaries.sh builds them once into a cache directory and prints it), "
    "then point KUBELOCK_BIN_DIR at that directory."
)


class MissingBinariesError(FileNotFoundError):
    """The binaries are not where the environment says, or some are missing."""


def find_binaries(
    required: Iterable[str] = ALL_BINARIES,
    *,
    kwok_stages: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The directory holding the control plane's binaries.

    Looked up in order: ``KUBELOCK_BIN_DIR``, ``KUBEBUILDER_ASSETS`` (as set by setup-envtest), and
    finally the cache directory that ``hack/install-binaries.sh`` builds into, so that a plain
    ``pytest`` works after ``make tools`` without exporting anything.
    """
    env = os.environ if environ is None else environ
    wanted = tuple(required)
    for var in ("KUBELOCK_BIN_DIR", "KUBEBUILDER_ASSETS"):
        if env.get(var):
            directory = Path(env[var]).expanduser()
            if not directory.is_dir():
                raise MissingBinariesError(f"{var}={directory} is not a directory. {_HINT}")
            missing = _missing(directory, wanted, kwok_stages=kwok_stages)
            if missing:
                raise MissingBinariesError(f"{var}={directory} lacks {', '.join(missing)}. {_HINT}")
            return directory
    cached = _newest_complete_build(_cache_dir(env), wanted, kwok_stages=kwok_stages)
    if cached is None:
        raise MissingBinariesError(
            f"No control plane binaries found: neither KUBELOCK_BIN_DIR nor KUBEBUILDER_ASSETS is set "
            f"and {_cache_dir(env) / 'bin'} holds no complete build. {_HINT}"
        )
    return cached


def _missing(directory: Path, wanted: Iterable[str], *, kwok_stages: bool) -> list[str]:
    missing = [name for name in wanted if not os.access(directory / name, os.X_OK)]
    if kwok_stages and KWOK in wanted and not (directory / KWOK_STAGES).is_dir():
        missing.append(f"{KWOK_STAGES}/")
    return missing


def _cache_dir(env: Mapping[str, str]) -> Path:
    # Mirrors hack/install-binaries.sh: KUBELOCK_CACHE_DIR, else $XDG_CACHE_HOME/kubelock, else ~/.cache.
    if env.get("KUBELOCK_CACHE_DIR"):
        return Path(env["KUBELOCK_CACHE_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kubelock"


def _newest_complete_build(cache: Path, wanted: tuple[str, ...], *, kwok_stages: bool) -> Path | None:
    # One directory per version set (k8s-v1.36.3_etcd-...); after a version bump the newest is the
    # one the script built last.
    builds = sorted(
        (d for d in (cache / "bin").glob("*") if d.is_dir() and not _missing(d, wanted, kwok_stages=kwok_stages)),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    return builds[0] if builds else None
