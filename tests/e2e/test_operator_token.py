"""The operator's own ServiceAccount token expires and rotates while agents hold, renew and queue.

The API server extends the token it mounts itself to a year (`--service-account-extend-token-expiration`),
so an operator installed with the chart's defaults never meets a rotation within a test. With
`serviceAccount.tokenExpirationSeconds=600` (the API's minimum) the token is projected with that
lifetime: the kubelet writes a new one at 80 % (8 minutes) and the first expires at 10 minutes. The
test waits past that expiry (about 11 minutes, hence `slow`) while a holder renews a 20 s lease and
two agents take turns on another lock, then checks that the token did rotate, that the operator kept
renewing, granting and releasing past the first token's expiry, and that the API server refused no
request for want of a valid token.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.agents import Agents, agents_namespace, poll, run
from tests.e2e.conftest import RELEASE_NAMESPACE, E2ECluster, helm_install_args
from tests.e2e.tools import Tools

LIFETIME = 600  # the least expirationSeconds a projected token may ask for
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
HOLD = f"{LIFETIME + 120}"  # seconds the holder's command runs: past the first token's expiry
CHURN = 'while true; do kubelock --json run --wait --ttl 10 work://e2e/token-churn -- sleep 2; echo "exit=$?"; done'


@pytest.fixture
def agents(tools: Tools, kubelock: str, image: str) -> Iterator[Agents]:
    with agents_namespace(tools, image, "token") as agents:
        yield agents


def operator_token(tools: Tools) -> dict[str, Any]:
    """The claims of the token the operator pod has now (iat, exp, ...)."""
    jwt = tools.kubectl("exec", "-n", RELEASE_NAMESPACE, "deploy/kubelock-operator", "--", "cat", TOKEN)
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def refused_tokens(tools: Tools) -> int:
    """Requests the API server could not authenticate so far (an expired or invalidated token)."""
    metrics = tools.kubectl("get", "--raw", "/metrics")
    found = re.findall(r'^authentication_attempts\{result="(?:error|failure)"\} (\d+)', metrics, re.MULTILINE)
    return sum(int(n) for n in found)


def successes(agents: Agents, pod: str) -> int:
    return sum(1 for output, code in agents.outputs(pod) if code == 0 and output.get("ok"))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # about 14 minutes of its own, after the session's cluster and images
def test_the_operator_works_on_across_its_own_token_rotation(cluster: E2ECluster, agents: Agents) -> None:
    tools = cluster.tools
    tools.helm(*helm_install_args(cluster, f"serviceAccount.tokenExpirationSeconds={LIFETIME}"))
    try:
        tools.kubectl("rollout", "status", "deployment/kubelock-operator", "-n", RELEASE_NAMESPACE, "--timeout=180s")
        first = operator_token(tools)
        assert first["exp"] - first["iat"] == LIFETIME, first  # not extended: a token of its own lifetime
        refused_before = refused_tokens(tools)
        holder = agents.start("holder", run(f"kubelock --json run --ttl 20 work://e2e/token-hold -- sleep {HOLD}"))
        churn = [agents.start(f"churn-{i}", CHURN) for i in range(2)]
        poll(lambda: agents.phase_of(holder, "work://e2e/token-hold") == "Held", "the holder's grant", 120)

        # Until the first token's expiry (the kubelet has rotated it 2 minutes before), then a minute
        # more: the operator re-reads the token file once a minute.
        time.sleep(max(0.0, first["exp"] - time.time()))
        at_expiry = sum(successes(agents, pod) for pod in churn)
        time.sleep(60)

        rotated = operator_token(tools)
        assert rotated["iat"] > first["iat"] and rotated["exp"] > first["exp"], (first, rotated)
        assert rotated["exp"] - rotated["iat"] == LIFETIME, rotated
        # The operator granted and released past the first token's expiry: turns went on.
        poll(lambda: sum(successes(agents, pod) for pod in churn) >= at_expiry + 3,
             "three more turns after the first token's expiry", 120)  # fmt: skip
        # The holder's lease (20 s) was renewed by the operator throughout: its command ran to its end.
        ((output, code),) = agents.wait_outputs(holder, 1, timeout=240)
        assert code == 0 and output["endedBy"] == "CommandExited" and output["released"], output
        assert refused_tokens(tools) == refused_before, "the API server refused a token meanwhile"
    finally:
        tools.helm(*helm_install_args(cluster))
