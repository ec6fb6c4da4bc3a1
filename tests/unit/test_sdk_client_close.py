"""Closing a LockClient: a second close() does nothing (it used to leave an un-awaited coroutine
behind), and no request is needed to make and close one. A client never closed is closed at the
interpreter's exit: tests/integration/test_cli.py, where a real session exists to be left open."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import yaml

from kubelock.sdk import LockClient


def _kubeconfig(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}],
    }))
    return path


def test_a_second_close_does_nothing(tmp_path: Path) -> None:
    client = LockClient(kubeconfig=str(_kubeconfig(tmp_path / "config")), instance="w1")
    assert client.namespace == "ns"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.close()
        client.close()
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]


def test_with_closes_once(tmp_path: Path) -> None:
    with LockClient(kubeconfig=str(_kubeconfig(tmp_path / "config")), instance="w1") as client:
        pass
    client.close()  # after the with block: nothing left to close
