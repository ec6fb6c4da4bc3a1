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

Only the kubelet's own file counts: the first `/pods/<pod uid>/` of the source path is followed by
`containers/<name>/<id>` and nothing more, the id being the kubelet's 8 hexadecimal digits. A volume
of the pod (an emptyDir or a hostPath, with a `subPath` or `subPathExpr` spelling
`pods/<uid>/containers/<other>/...`) lies under `/pods/<uid>/volumes/` or elsewhere, and would
otherwise have added a second name, or another container's: with two names none is taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kubelock.sdk.process import read_text

MOUNTINFO = "/proc/self/mountinfo"
# A container's name is a DNS label (RFC 1123), which mountinfo prints without escapes; the file's
# name is the kubelet's random id of the container's start (`makeUID`: `%08x`).
_FILE = re.compile(r"containers/([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)/[0-9a-f]{8}")


def name_in(mountinfo: str | None, pod_uid: str) -> str | None:
    """The name of the container of pod `pod_uid` whose termination-message file is mounted here, or
    None when there is none, or more than one name (nothing then tells which is this process's)."""
    if not mountinfo or not pod_uid or "/" in pod_uid:
        return None
    pod_dir = f"/pods/{pod_uid}/"
    names: set[str] = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        root = fields[3]
        at = root.find(pod_dir)  # the first: a volume's path goes on past the pod's own directory
        if at < 0:
            continue
        found = _FILE.fullmatch(root, at + len(pod_dir))
        if found:
            names.add(found.group(1))
    return names.pop() if len(names) == 1 else None


def of_pod(pod_uid: str, text: Callable[[str], str | None] = read_text) -> str | None:
    """This process's container of pod `pod_uid` (see the module docstring), or None."""
    return name_in(text(MOUNTINFO), pod_uid)
