"""Releasing or renewing several URIs that were taken one by one finds no claim of them all: the
NotFound says that several URIs name one claim taken at once, so the caller releases them one by one."""

from __future__ import annotations

from kubelock.sdk.client import _nothing_held
from kubelock.sdk.identity import Identity
from kubelock.sdk.targets import Target

ME = Identity(holder="user:alice/w1", namespace="agents")


def test_one_uri_says_only_that_nothing_is_held() -> None:
    assert str(_nothing_held(ME, Target.of("r://a")).message) == (
        "you (user:alice/w1) hold no lock on r://a in namespace agents"
    )


def test_several_uris_say_they_name_the_claim_that_took_them_together() -> None:
    message = _nothing_held(ME, Target.of(["r://b", "r://a"])).message
    assert message.startswith("you (user:alice/w1) hold no lock on r://a and r://b in namespace agents taken "
                              "together (several URIs name the one claim that took them all at once; locks "
                              "taken one by one are released and renewed one by one)")
