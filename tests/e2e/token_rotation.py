"""The operator's token-rotation scenario, started early and checked last (tests/e2e/test_operator_token.py).

The scenario waits past the first expiry of the operator's projected ServiceAccount token: about 11
minutes, most of them idle. So it is set up on a cluster of its own (another test-bed node, or
another kind cluster) when the end-to-end tier begins, the other end-to-end tests run meanwhile, and
the token test, ordered last, checks it with only what is left of the wait.

A cluster of its own, not the other tests' cluster: they upgrade, restart and uninstall the release
(which would replace the operator pod whose token is followed), a second release beside theirs would
share its claims with their cluster-wide operator (which would go on granting if this one stopped),
and their agents' pods, killed with `--force`, make the API server refuse the tokens of deleted pods,
which the scenario's count of refused tokens must not see.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.agents import Agents, poll, run
from tests.e2e.tools import RELEASE_NAMESPACE, Tools

LIFETIME = 600  # the least expirationSeconds a projected token may ask for
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
HOLD = f"{LIFETIME + 120}"  # seconds the holder's command runs: past the first token's expiry
CHURN = 'while true; do kubelock --json run --wait --ttl 10 work://e2e/token-churn -- sleep 2; echo "exit=$?"; done'
HOLD_URI = "work://e2e/token-hold"


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


@dataclass
class TokenRotation:
    """The scenario once started: the operator's first token, the API server's count of refused
    tokens then, and the agents' pods. A failure to start is kept for the token test to raise,
    rather than failing whichever test happened to start the scenario."""

    agents: Agents | None = None
    first: dict[str, Any] = field(default_factory=dict)
    refused_before: int = 0
    holder: str = ""
    churn: list[str] = field(default_factory=list)
    failure: BaseException | None = None

    def start(self, agents: Agents, install: list[str]) -> None:
        """`install`: helm's arguments installing the chart with the token's lifetime set to LIFETIME."""
        tools = agents.tools
        tools.helm(*install)
        tools.kubectl("rollout", "status", "deployment/kubelock-operator", "-n", RELEASE_NAMESPACE, "--timeout=180s")
        self.first = operator_token(tools)
        assert self.first["exp"] - self.first["iat"] == LIFETIME, self.first  # not extended: its own lifetime
        self.refused_before = refused_tokens(tools)
        self.holder = agents.start("holder", run(f"kubelock --json run --ttl 20 {HOLD_URI} -- sleep {HOLD}"))
        self.churn = [agents.start(f"churn-{i}", CHURN) for i in range(2)]
        self.agents = agents
        poll(lambda: agents.phase_of(self.holder, HOLD_URI) == "Held", "the holder's grant", 120)

    def started(self) -> Agents:
        """The agents of a scenario that started; raises what stopped it otherwise."""
        if self.failure is not None:
            raise AssertionError(f"the token-rotation scenario did not start: {self.failure!r}") from self.failure
        assert self.agents is not None, "the token-rotation scenario was never started"
        return self.agents
