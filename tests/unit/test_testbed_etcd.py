"""The test bed's etcd members as configured, without starting them: one member keeps the bed's
historical name and data directory; several form one cluster on 127.0.0.1 with ports and data
directories of their own; a quota reaches every member."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelock.testbed.etcd import EtcdCluster


def flags(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv[1:])


def test_one_member_is_the_beds_usual_etcd(tmp_path: Path) -> None:
    cluster = EtcdCluster(Path("/bin/etcd"), tmp_path / "etcd", tmp_path / "logs")
    [member] = cluster.members
    options = flags(member.argv)
    assert member.name == "default" and member.data_dir == tmp_path / "etcd"
    assert options["initial-cluster"] == f"default={member.peer_url}"
    assert "quota-backend-bytes" not in options
    assert cluster.client_urls == [member.client_url]


def test_three_members_form_one_cluster_with_ports_and_data_of_their_own(tmp_path: Path) -> None:
    cluster = EtcdCluster(Path("/bin/etcd"), tmp_path / "etcd", tmp_path / "logs", members=3, quota_bytes=16 << 20)
    names = [m.name for m in cluster.members]
    assert names == ["etcd-0", "etcd-1", "etcd-2"]
    urls = [m.client_url for m in cluster.members] + [m.peer_url for m in cluster.members]
    assert len(set(urls)) == 6 and all(url.startswith("http://127.0.0.1:") for url in urls)
    assert len({m.data_dir for m in cluster.members}) == 3
    assert all(m.data_dir.parent == tmp_path / "etcd" for m in cluster.members)
    expected = ",".join(f"{m.name}={m.peer_url}" for m in cluster.members)
    for member in cluster.members:
        options = flags(member.argv)
        assert options["name"] == member.name
        assert options["initial-cluster"] == expected
        assert options["listen-client-urls"] == member.client_url
        assert options["quota-backend-bytes"] == str(16 << 20)
    assert cluster.client_urls == [m.client_url for m in cluster.members]
    with pytest.raises(KeyError, match="etcd-3"):
        cluster.member("etcd-3")


def test_a_cluster_needs_a_member(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one member"):
        EtcdCluster(Path("/bin/etcd"), tmp_path / "etcd", tmp_path / "logs", members=0)
