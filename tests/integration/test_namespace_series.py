"""A deleted namespace's metric series leave the operator's `/metrics`; another namespace's stay, and
a namespace made again under the same name counts from zero."""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path

from kubernetes.client import ApiClient, ApiException, CoreV1Api, V1Namespace, V1ObjectMeta

from tests.integration.test_observability import scrape, value
from tests.support.claims import Locks, wait_until
from tests.support.operator import OperatorProcess

PREFIX = "klns-"


def _series_of(port: int, namespace: str) -> dict[str, float]:
    return {name: v for (name, labels), v in scrape(port).items() if ("namespace", namespace) in labels}


def _gone(core: CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _create(core: CoreV1Api, name: str) -> None:
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))


def test_a_deleted_namespace_loses_its_series(control_plane, admin_api: ApiClient, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    core = CoreV1Api(admin_api)
    short, stays = f"{PREFIX}ci-{secrets.token_hex(3)}", f"{PREFIX}team-{secrets.token_hex(3)}"
    for name in (short, stays):
        _create(core, name)
    # A pattern, not exact namespaces: an operator whose namespaces come and go is the one that sheds
    # their series (exact ones have a fixed set).
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(f"{PREFIX}*",), metrics=True)
    op.start()
    try:
        for name in (short, stays):
            locks = Locks(admin_api, name)
            locks.claim("a", "deploy://one", "agent-a")
            locks.wait_phase("a", "Held")
            locks.claim("b", "deploy://one", "agent-b")
            locks.wait_phase("b", "Rejected")
        wait_until(lambda: value(scrape(op.metrics_port), "kubelock_rejections_total", namespace=short) == 1
                   and value(scrape(op.metrics_port), "kubelock_rejections_total", namespace=stays) == 1,
                   "both namespaces' grants and rejections counted", timeout=60)
        kept = _series_of(op.metrics_port, stays)
        assert kept["kubelock_grants_total"] == 1 and kept["kubelock_rejections_total"] == 1
        assert _series_of(op.metrics_port, short)

        core.delete_namespace(short)
        wait_until(lambda: _gone(core, short), f"namespace {short} gone", timeout=180)
        wait_until(lambda: not _series_of(op.metrics_port, short), f"the series of {short} dropped", timeout=60)
        # The other namespace's are as they were (its _created timestamps too).
        assert _series_of(op.metrics_port, stays) == kept

        # Made again under the same name, it counts from zero.
        _create(core, short)
        locks = Locks(admin_api, short)
        locks.claim("again", "deploy://one", "agent-a")
        locks.wait_phase("again", "Held")
        wait_until(lambda: value(scrape(op.metrics_port), "kubelock_grants_total", namespace=short) == 1,
                   f"the grant in {short} made again counted", timeout=60)
        time.sleep(1)
        assert value(scrape(op.metrics_port), "kubelock_grants_total", namespace=short) == 1
        assert "kubelock_rejections_total" not in _series_of(op.metrics_port, short)
        assert op.alive, op.log_text()[-3000:]
    finally:
        op.stop()
        for name in (short, stays):
            with contextlib.suppress(ApiException):
                core.delete_namespace(name)
