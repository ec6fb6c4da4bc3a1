"""The bad-input corpus's flood: its claims' leases outlast the wait for all of them to be Held.

Nobody renews a flood claim. With the corpus's 30 s lease, the loaded full run granted the 1000
claims over 170 s, and each expired 30 s after its grant: none was Held when the check looked, and
the case failed although every claim had been granted (docs/reliability.md, "The full run, loaded")."""

from __future__ import annotations

from chaos.badinput import flood_ttl_seconds, flood_wait_seconds, spec

from kubelock.api.types import MAX_TTL_CEILING


def test_a_flood_claims_lease_outlasts_the_wait_for_every_grant() -> None:
    for count in (300, 1000):
        assert flood_ttl_seconds(count) > flood_wait_seconds(count) + 60  # and the slowest LIST after it
        assert flood_ttl_seconds(count) <= MAX_TTL_CEILING


def test_the_corpus_lease_is_what_a_flood_claim_overrides() -> None:
    assert spec("chaos://flood/0", holder="flood", ttlSeconds=flood_ttl_seconds(1000))["ttlSeconds"] == 280
    assert spec("chaos://bad/ok")["ttlSeconds"] == 30
