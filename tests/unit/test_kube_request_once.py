"""A request made at most once: a delete whose answer may be lost is not tried again (a retry of a
delete that went through answers 404 and hides it), while other requests are; against a real closed
port, no answer at all."""

from __future__ import annotations

import pytest

from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.errors import Unreachable

NOWHERE = Credentials(server="https://127.0.0.1:1", namespace="default")


async def test_a_delete_made_once_is_not_tried_again_when_no_answer_comes() -> None:
    attempts: list[int] = []
    async with KubeClient(NOWHERE, retries=4, on_request=lambda _v, status, _s: attempts.append(status)) as client:
        with pytest.raises(Unreachable):
            await client.delete("/apis/kubelock.dev/v1alpha1/namespaces/default/lockclaims/x", uid="u",
                                resource_version="1", retry=False)
        assert attempts == [0]
        with pytest.raises(Unreachable):
            await client.delete("/apis/kubelock.dev/v1alpha1/namespaces/default/lockclaims/x")
        assert attempts == [0] * 6, "by default: once, and the client's four retries"
