"""A holder keeps its lock, and its command, through the moments after an API server restart when
kubelock's paths are not served yet ("404 page not found" until the CRD informer has synced).

The real window is a few seconds at most and comes when it likes, so the holder talks to the real API
server through a proxy that answers kubelock's paths with the API server's own unserved 404 for as
long as the test says (tests/support/unserving.py), opened over one renewal. Such a 404 names no
claim: the renewal it refuses is a failed renewal (the lease's guard decides, as for an unreachable
API server), never a claim found deleted, which would have killed the command.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.kube import errors as kube_errors
from kubelock.sdk.renewal import default_renew_deadline, renew_interval
from kubelock.testbed import ControlPlane, wait_until
from tests.support.access import bind, wait_allowed
from tests.support.claims import MIN_WAIT_SECONDS, Locks, phase_of
from tests.support.commands import argv_of, default_signals, environment, finish
from tests.support.operator import OperatorProcess
from tests.support.partition import kubeconfig_for
from tests.support.unserving import UnservingProxy, unserved_answer

URI = "deploy://unserved-window"
INSTANCE = "w1"
TTL = 60  # renewals every TTL*2/3/3 = 13.3 s; lost 40 s after the last accepted one
WAIT = max(MIN_WAIT_SECONDS, 60.0)


@pytest.fixture
def proxy(control_plane: Any) -> Iterator[UnservingProxy]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's certificates and static users")
    pki = control_plane._require_pki()
    answer = unserved_answer(control_plane.server, pki.ca_cert, pki.admin_cert, pki.admin_key)
    # The real API server's answer for a path it does not serve: a 404 naming no object.
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        parsed = None
    refused = kube_errors.from_response(answer.status, parsed, answer.body.decode())
    assert isinstance(refused, kube_errors.Unserved), answer
    unserving = UnservingProxy(control_plane.server, ca=pki.ca_cert, serving_cert=pki.serving_cert,
                               serving_key=pki.serving_key, answer=answer).start()
    try:
        yield unserving
    finally:
        unserving.stop()


def test_kubelock_run_keeps_its_lock_and_command_through_an_unserved_window(
    control_plane: ControlPlane, admin_api: ApiClient, namespace: str, tmp_path: Path, proxy: UnservingProxy
) -> None:
    bind(admin_api, namespace, "kubelock-agent", "alice")
    wait_allowed(admin_api, "alice", namespace, "create", "lockclaims")
    locks = Locks(admin_api, namespace)
    name = claim_name(f"user:alice/{INSTANCE}", normalise(URI))
    claim_path = f"/lockclaims/{name}"
    interval = renew_interval(TTL, default_renew_deadline(TTL))
    config = kubeconfig_for(control_plane.user_kubeconfig("alice"), proxy.url, tmp_path / "via-proxy")
    env = environment(config, namespace, INSTANCE)
    done_file = tmp_path / "done"
    child = ["sh", "-c", f'while [ ! -e "{done_file}" ]; do sleep 0.2; done']
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)):
        process = subprocess.Popen([*argv_of("kubelock"), "run", URI, "--ttl", str(TTL), "-o", "json", "--", *child],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=default_signals)
        try:
            locks.wait_phase(name, "Held", WAIT)

            def renewals(*, unserved: bool, after: float = 0.0) -> list[Any]:
                return [s for s in proxy.requests("PATCH", claim_path) if s.unserved == unserved and s.at > after]

            # Open the window right after a renewal went through, so that the next one falls in it.
            wait_until(lambda: bool(renewals(unserved=False)) or process.poll() is not None,
                       what="a first renewal through the proxy", timeout=interval + WAIT)
            assert process.poll() is None, finish(process)
            proxy.unserve(interval + WAIT)
            wait_until(lambda: bool(renewals(unserved=True)) or process.poll() is not None,
                       what="a renewal answered 404 page not found", timeout=interval + WAIT)
            # The client retries the refused renewal for a second or two: keep refusing those too,
            # then serve again, long before the lease's renew deadline (40 s after the last renewal).
            proxy.close_in(4)
            wait_until(lambda: not proxy.unserving(), what="the window to end", timeout=WAIT)
            closed = time.monotonic()
            assert process.poll() is None, ("the command ended in the window", finish(process))
            wait_until(
                lambda: any(s.status == 200 for s in renewals(unserved=False, after=closed))
                or process.poll() is not None,
                what="a renewal accepted once the path is served again", timeout=interval + WAIT,
            )
            assert process.poll() is None, ("the command ended after the window", finish(process))
            assert phase_of(locks.get(name)) == "Held"
            done_file.touch()
            done = finish(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert done.code == ExitCode.OK, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["ok"] is True and result["endedBy"] == "CommandExited" and result["exitCode"] == 0, result
    assert result["released"] is True, result
    refused = renewals(unserved=True)
    assert refused, "no renewal met the window"
