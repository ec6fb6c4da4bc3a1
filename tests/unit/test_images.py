"""The daemonless image writer: docker-archive layout, digests and deterministic layers."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from kubelock.testbed.images import OPERATOR, ImageConfig, layer, read_docker_archive, write_docker_archive, write_layer


def _tree(root: Path) -> Path:
    (root / "opt" / "app" / "bin").mkdir(parents=True)
    (root / "opt" / "app" / "bin" / "run").write_text("#!/bin/sh\necho hi\n")
    (root / "opt" / "app" / "bin" / "run").chmod(0o755)
    os.link(root / "opt" / "app" / "bin" / "run", root / "opt" / "app" / "bin" / "run2")
    (root / "opt" / "app" / "link").symlink_to("bin/run")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "other").write_text("not in the layer\n")
    return root


def test_a_layer_holds_the_members_with_their_parents_sorted_and_dated(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    lay = write_layer(tmp_path / "layer.tar", root, ["opt/app", "etc/passwd"])
    with tarfile.open(lay.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "opt" in names and "etc" in names  # parents, so the layer stands on its own
    assert "etc/other" not in names
    by_name = {m.name: m for m in members}
    assert by_name["opt/app/link"].issym() and by_name["opt/app/link"].linkname == "bin/run"
    assert by_name["opt/app/bin/run"].mode & 0o777 == 0o755
    assert by_name["opt/app/bin/run2"].islnk()  # a hard link stays one
    assert {m.mtime for m in members} == {1700000000}
    assert lay.digest == "sha256:" + hashlib.sha256(lay.path.read_bytes()).hexdigest()


def test_the_same_tree_gives_the_same_layer_digest(tmp_path: Path) -> None:
    first = write_layer(tmp_path / "a.tar", _tree(tmp_path / "a"), ["opt", "etc/passwd"])
    second = write_layer(tmp_path / "b.tar", _tree(tmp_path / "b"), ["opt", "etc/passwd"])
    assert first.digest == second.digest


def test_docker_archive_names_the_image_its_config_and_layers(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    base = write_layer(tmp_path / "base.tar", root, ["etc/passwd"])
    app = write_layer(tmp_path / "app.tar", root, ["opt/app"])
    out = write_docker_archive(tmp_path / "image.tar", tag="localhost/app:1", layers=[base, app],
                               config=OPERATOR.config)  # fmt: skip
    manifest, config = read_docker_archive(out)
    assert manifest["RepoTags"] == ["localhost/app:1"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [base.digest, app.digest]}
    assert config["config"]["Entrypoint"] == ["python", "-m", "kubelock.operator"]
    assert config["config"]["User"] == "10001:10001"
    assert config["os"] == "linux"
    with tarfile.open(out) as tar:
        for name, expected in zip(manifest["Layers"], (base, app), strict=True):
            handle = tar.extractfile(name)
            assert handle is not None
            assert layer_digest(handle.read()) == expected.digest
        config_handle = tar.extractfile(manifest["Config"])
        assert config_handle is not None
        assert manifest["Config"] == hashlib.sha256(config_handle.read()).hexdigest() + ".json"


def test_image_config_omits_what_is_not_set() -> None:
    assert ImageConfig(entrypoint=["/pause"]).as_json() == {
        "Entrypoint": ["/pause"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    }


def layer_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_layer_digest_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"abc")
    assert layer(path).digest == layer_digest(b"abc")
