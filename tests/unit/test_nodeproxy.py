"""The node proxy's CONNECT parsing and containerd's image names (no namespaces needed)."""

from __future__ import annotations

import pytest

from kubelock.testbed.node import _normalised
from kubelock.testbed.nodeproxy import _connect_target


@pytest.mark.parametrize(
    ("head", "target"),
    [
        (b"CONNECT 10.200.3.1:10250 HTTP/1.1\r\nHost: 10.200.3.1:10250\r\n\r\n", ("10.200.3.1", 10250)),
        (b"CONNECT [fd00::1]:443 HTTP/1.1\r\n\r\n", ("fd00::1", 443)),
    ],
)
def test_connect_target(head: bytes, target: tuple[str, int]) -> None:
    assert _connect_target(head) == target


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\r\n\r\n", b"CONNECT nohost HTTP/1.1\r\n\r\n", b"CONNECT :80 x\r\n"])
def test_bad_connect_requests_are_refused(head: bytes) -> None:
    with pytest.raises(ValueError, match="CONNECT"):
        _connect_target(head)


@pytest.mark.parametrize(
    ("image", "full"),
    [
        ("kubelock:1", "docker.io/library/kubelock:1"),
        ("acme/kubelock:1", "docker.io/acme/kubelock:1"),
        ("localhost/kubelock:dev", "localhost/kubelock:dev"),
        ("ghcr.io/kubelock/kubelock:0.1.0", "ghcr.io/kubelock/kubelock:0.1.0"),
        ("registry:5000/k:1", "registry:5000/k:1"),
    ],
)
def test_image_names_as_containerd_stores_them(image: str, full: str) -> None:
    assert _normalised(image) == full
