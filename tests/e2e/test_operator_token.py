"""The operator's own ServiceAccount token expires and rotates while agents hold, renew and queue.

The API server extends the token it mounts itself to a year (`--service-account-extend-token-expiration`),
so an operator installed with the chart's defaults never meets a rotation within a test. With
`serviceAccount.tokenExpirationSeconds=600` (the API's minimum) the token is projected with that
lifetime: the kubelet writes a new one at 80 % (8 minutes) and the first expires at 10 minutes. The
scenario (tests/e2e/token_rotation.py) is started on a cluster of its own when the end-to-end tier
begins: a holder renews a 20 s lease and two agents take turns on another lock. This test runs last
(see conftest.py) and waits for what is left of the 11 minutes (hence `slow`), then checks that the
token did rotate, that the operator kept renewing, granting and releasing past the first token's
expiry, and that the API server refused no request for want of a valid token.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.agents import poll
from tests.e2e.token_rotation import LIFETIME, TokenRotation, operator_token, refused_tokens, successes


@pytest.mark.slow
@pytest.mark.timeout(2400)  # at most about 14 minutes of its own, when run alone
def test_the_operator_works_on_across_its_own_token_rotation(token_rotation: TokenRotation) -> None:
    agents = token_rotation.started()
    tools, first, churn = agents.tools, token_rotation.first, token_rotation.churn

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
    ((output, code),) = agents.wait_outputs(token_rotation.holder, 1, timeout=240)
    assert code == 0 and output["endedBy"] == "CommandExited" and output["released"], output
    assert refused_tokens(tools) == token_rotation.refused_before, "the API server refused a token meanwhile"
