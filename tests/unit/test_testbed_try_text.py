"""What `make run` and `make up` print to try: the claim commands when an operator answers them, a
word that none does without one, and the install when the bed is bare."""

from __future__ import annotations

from kubelock.testbed.__main__ import try_text


def test_with_the_operator_the_claim_commands_only() -> None:
    text = try_text("kubectl")
    assert "kubectl apply -f examples/lockclaim.yaml" in text and "no operator" not in text


def test_without_the_operator_the_unanswered_claim_is_explained() -> None:
    text = try_text("kubectl", operator=False)
    assert "kubectl get locks" in text
    assert "no operator runs here: claims stay unanswered" in text


def test_a_bare_bed_points_at_the_install() -> None:
    text = try_text("kubectl", bare=True)
    assert "kubectl apply -f manifests/kubelock.yaml" in text and "lockclaim.yaml" not in text
