"""What a start lists before the imports (`kubelock.operator.start.listings`): the small LISTs the
first decisions wait for (the LockPolicies, and with the early path the unanswered claims) ahead of
the priming's, in every scope."""

from __future__ import annotations

from kubelock.kube import paths
from kubelock.operator.settings import parse
from kubelock.operator.start import UNANSWERED_QUERY, listings


def test_the_small_lists_come_first_and_the_unanswered_claims_only_with_the_early_path() -> None:
    assert listings(parse(["-n", "a", "-n", "b"])) == [
        paths.policies("a"), (paths.claims("a"), UNANSWERED_QUERY),
        paths.policies("b"), (paths.claims("b"), UNANSWERED_QUERY),
        paths.locks("a"), paths.claims("a"), paths.locks("b"), paths.claims("b"),
    ]
    without = listings(parse(["-n", "a", "--no-early-grants"]))
    assert without == [paths.policies("a"), paths.locks("a"), paths.claims("a")]
