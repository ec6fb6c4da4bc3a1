"""Which container of its pod this process runs in, as far as the process itself can see.

Two containers of one pod authenticate as the same pod (the kubelet mounts the pod's token in each)
and, by default, run in pid namespaces of their own: the process mark (`kubelock.sdk.process`) cannot
tell a sibling container that is alive from this container's own earlier run that has ended, so the
pod's instance alone let both containers adopt one claim and both hold its lock. The container's name
tells them apart and survives a restart of the container, so a restarted container still takes its
own claims back.

Nothing in a container states its name: the downward API has no field for it, the host name is the
pod's, and a private cgroup namespace (the default on cgroup v2) hides the container's cgroup. What
every Linux container of a kubelet does see is the kubelet's termination-message file, bind-mounted
from `<kubelet root>/pods/<pod uid>/containers/<container name>/<random id>` (at
`terminationMessagePath`, `/dev/termination-log` by default); /proc/self/mountinfo shows that source
path (field 4, the mount's root within its file system). The random id is new at every start of the
container; the name is not. Only a mount under the pod's own uid counts (the uid comes from the
API server, not from the environment), so a process outside the pod that uses a token bound to it
(a test, a debugging session on the node) finds no name and keeps the pod's instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kubelock.sdk.process import read_text

MOUNTINFO = "/proc/self/mountinfo"
# A container's name is a DNS label (RFC 1123), which mountinfo prints without escapes.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def name_in(mountinfo: str | None, pod_uid: str) -> str | None:
    """The name of the container of pod `pod_uid` whose termination-message file is mounted here, or
    None when there is none, or more than one name (nothing then tells which is this process's)."""
    if not mountinfo or not pod_uid or "/" in pod_uid:
        return None
    marker = f"/pods/{pod_uid}/containers/"
    names: set[str] = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        root = fields[3]
        at = root.find(marker)
        if at < 0:
            continue
        parts = root[at + len(marker):].split("/")
        if len(parts) == 2 and parts[1] and _NAME.fullmatch(parts[0]):
            names.add(parts[0])
    return names.pop() if len(names) == 1 else None


def of_pod(pod_uid: str, text: Callable[[str], str | None] = read_text) -> str | None:
    """This process's container of pod `pod_uid` (see the module docstring), or None."""
    return name_in(text(MOUNTINFO), pod_uid)
