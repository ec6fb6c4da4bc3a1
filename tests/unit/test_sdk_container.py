"""Which container of its pod a process runs in, from /proc/self/mountinfo (`kubelock.sdk.container`)."""

from __future__ import annotations

from kubelock.sdk import container

UID = "3f2a1b4c-1111-2222-3333-444455556666"

# What a container of a containerd node shows (abridged): its root, the pod's /etc/hosts, its
# termination-message file, the service account token.
MOUNTINFO = f"""\
1630 1510 0:312 / / ro,relatime master:515 - overlay overlay rw,lowerdir=/var/lib/containerd/snapshots/12/fs
1640 1630 259:1 /var/lib/kubelet/pods/{UID}/etc-hosts /etc/hosts rw,relatime - ext4 /dev/root rw
1641 1630 259:1 /var/lib/kubelet/pods/{UID}/containers/left/5d1a2c9e /dev/termination-log rw - ext4 /dev/root rw
1642 1630 0:300 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw
"""


def test_the_termination_message_mount_names_the_container() -> None:
    assert container.name_in(MOUNTINFO, UID) == "left"


def test_a_kubelet_root_on_its_own_file_system_is_found_too() -> None:
    line = f"1641 1630 259:2 /pods/{UID}/containers/agent-1/0077aa3f /dev/termination-log rw - xfs /dev/sdb rw\n"
    assert container.name_in(line, UID) == "agent-1"


def test_another_pods_container_or_none_is_no_name() -> None:
    assert container.name_in(MOUNTINFO, "99999999-1111-2222-3333-444455556666") is None
    assert container.name_in(MOUNTINFO.replace("/containers/left/5d1a2c9e", "/volumes/x"), UID) is None
    assert container.name_in("", UID) is None
    assert container.name_in(None, UID) is None
    assert container.name_in(MOUNTINFO, "") is None


def test_two_names_or_a_malformed_one_tell_nothing() -> None:
    right = f"/var/lib/kubelet/pods/{UID}/containers/right/ab12cd34"
    both = MOUNTINFO + f"1650 1630 259:1 {right} /x rw - ext4 /dev/root rw\n"
    assert container.name_in(both, UID) is None
    assert container.name_in(MOUNTINFO.replace("/left/", "/Left_1/"), UID) is None
    assert container.name_in(MOUNTINFO.replace("/left/5d1a2c9e", "/left"), UID) is None


# A volume of the pod whose path spells another container's file, as `subPathExpr:
# pods/$(POD_UID)/containers/right/ab12cd34` on an emptyDir would make it, then one spelling the whole
# kubelet path.
EMPTY_DIR = f"/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir"
SUBPATH = f"{EMPTY_DIR}/scratch/pods/{UID}/containers/right/ab12cd34"
HOSTPATH = f"{EMPTY_DIR}/x/var/lib/kubelet/pods/{UID}/containers/right/ab12cd34"


def test_a_volume_spelling_another_containers_file_adds_no_name() -> None:
    for root in (SUBPATH, HOSTPATH):
        line = f"1660 1630 259:1 {root} /data rw - ext4 /dev/root rw\n"
        assert container.name_in(MOUNTINFO + line, UID) == "left", root  # not ambiguous: the volume is none
        assert container.name_in(line, UID) is None, root  # nor another container's name alone


def test_only_the_kubelets_file_id_counts() -> None:
    # The kubelet names the file with 8 hexadecimal digits; anything else under containers/<name>/ is
    # not its termination-message file (a directory a volume made there, a longer path).
    for other in ("notanid", "5d1a2c9", "5d1a2c9e0", "5D1A2C9E", "5d1a2c9e/more"):
        assert container.name_in(MOUNTINFO.replace("5d1a2c9e", other), UID) is None, other


def test_a_terminationmessagepath_elsewhere_names_the_container_the_same() -> None:
    moved = MOUNTINFO.replace(" /dev/termination-log ", " /tmp/my\\040message ")
    assert container.name_in(moved, UID) == "left"


def test_of_pod_reads_mountinfo() -> None:
    seen: list[str] = []

    def text(path: str) -> str | None:
        seen.append(path)
        return MOUNTINFO

    assert container.of_pod(UID, text) == "left"
    assert seen == ["/proc/self/mountinfo"]
