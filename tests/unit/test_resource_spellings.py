"""Which spellings of a resource are one lock: the normalisation, and the refusal of URIs not in NFC.

Resources compare byte for byte after `normalise` (scheme lower-cased, one trailing `/` removed), so
a URI written in Unicode NFD (`e` + a combining accent) and in NFC (`é`) would be two locks on one
thing. The operator refuses a claim not in NFC that holds nothing (a claim Held from before keeps its
lock until it ends), and the SDK and CLI refuse one before sending it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

import pytest

from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import main
from kubelock.domain.multiclaim import decide_claim
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name, normalise, not_nfc
from kubelock.sdk.errors import InvalidInput
from kubelock.sdk.targets import Target
from tests.support.arbitration import POLICY, T0, claim, holding, lock_for, only_status, run, summary, with_phase
from tests.unit.test_multiclaim import graph_of, multi, views

NFC = "github://acme/caf\u00e9/issues/1"
NFD = unicodedata.normalize("NFD", NFC)  # caf + e + U+0301


# ---- which spellings are one lock -------------------------------------------------------------

ONE_LOCK = [
    pytest.param("github://acme/app", "GitHub://acme/app", id="scheme-case"),
    pytest.param("github://acme/app", "github://acme/app/", id="one-trailing-slash"),
    pytest.param(NFC, NFC, id="nfc-itself"),
]
TWO_LOCKS = [
    pytest.param("github://acme/app", "github://ACME/app", id="host-case"),
    pytest.param("github://acme/app", "github://acme/app//", id="two-trailing-slashes"),
    pytest.param("x://a/b", "x://a%2Fb", id="percent-encoded-slash"),
    pytest.param("x://a/B", "x://a/%42", id="percent-encoded-letter"),
    pytest.param("https://h/x", "https://h:443/x", id="default-port"),
    pytest.param("x://a/b", "x://a/./b", id="dot-segment"),
    pytest.param("x://a/b", "x://a/b?", id="empty-query"),
    pytest.param("x://\uff41", "x://a", id="fullwidth-letter-nfkc"),
    pytest.param("x://\u0430pp", "x://app", id="cyrillic-look-alike"),
]


@pytest.mark.parametrize(("a", "b"), ONE_LOCK)
def test_these_spellings_are_one_lock(a: str, b: str) -> None:
    assert lock_name(normalise(a)) == lock_name(normalise(b))


@pytest.mark.parametrize(("a", "b"), TWO_LOCKS)
def test_these_spellings_are_two_locks_and_both_in_nfc(a: str, b: str) -> None:
    assert lock_name(normalise(a)) != lock_name(normalise(b))
    # Neither is refused for NFC. Those RFC 3986 rewrites (host case, escapes of unreserved characters,
    # default ports, dot segments) are refused to a new claim instead: test_resource_other_spellings.py.
    assert not_nfc(a) is None and not_nfc(b) is None


def test_the_lock_name_of_a_decomposed_spelling_is_what_it_was() -> None:
    # Not normalised into NFC: a lock held under the NFD spelling before the refusal keeps its name,
    # so the operator still finds it (its renewals, its release).
    assert normalise(NFD) == NFD
    assert lock_name(normalise(NFD)) != lock_name(normalise(NFC))


# ---- not_nfc ----------------------------------------------------------------------------------

NOT_NFC = [
    pytest.param(NFD, "from character 18, U+0065 U+0301 is U+00E9 in NFC", id="combining-acute"),
    pytest.param("x://\u1100\u1161", "from character 5, U+1100 U+1161 is U+AC00 in NFC", id="hangul-jamo"),
    pytest.param("x://\u212b", "from character 5, U+212B is U+00C5 in NFC", id="angstrom-sign"),
    pytest.param("x://a\u0327\u0301", "from character 5, U+0061 U+0327 U+0301 is U+00E1 U+0327 in NFC",
                 id="marks-composed-and-reordered"),
    pytest.param("x://\u00e7\u0301", "from character 5, U+00E7 U+0301 is U+1E09 in NFC", id="composed-further"),
]


@pytest.mark.parametrize(("uri", "detail"), NOT_NFC)
def test_not_nfc_says_where_and_what_to_write(uri: str, detail: str) -> None:
    message = not_nfc(uri)
    assert message is not None
    assert f"resource {uri!r} is not in Unicode normal form NFC: {detail}" in message
    assert "write the URI in NFC" in message
    assert not_nfc(unicodedata.normalize("NFC", uri)) is None


@pytest.mark.parametrize("uri", ["deploy://api-prod", NFC, "x://q\u0303", "x://\u0915\u093f", "x://\u1e09"])
def test_nfc_uris_pass_combining_marks_included(uri: str) -> None:
    # q + tilde has no composed form; a Devanagari vowel sign is a mark: both are NFC as they are.
    assert not_nfc(uri) is None


# ---- the operator: a claim of one resource ----------------------------------------------------


def test_a_new_claim_not_in_nfc_is_rejected_and_told_the_nfc_spelling() -> None:
    fresh = claim("a", 5, resource=NFD)
    status = only_status(run([fresh], None, T0, resource=NFD)).status
    assert (status.phase, status.reason) == (Phase.REJECTED, Reason.INVALID_SPEC)
    assert "not in Unicode normal form NFC" in status.message and "U+00E9" in status.message


def test_a_waiting_claim_not_in_nfc_is_rejected_and_holds_nothing() -> None:
    # Queued before the rule (an older operator): it ends now rather than be granted later.
    other = claim("other", 3, resource=NFD)
    waiting = with_phase(claim("w", 5, resource=NFD, wait=True), Phase.PENDING, Reason.QUEUED, holder="other",
                         position=1)
    held = holding(other, lock_for(other))
    got = summary(run([held, waiting], lock_for(other), T0, resource=NFD))
    assert ("status", "w", Phase.REJECTED, Reason.INVALID_SPEC) in got
    assert not any(a[0] == "create" for a in got)


def test_a_claim_held_from_before_keeps_its_lock_and_is_renewed() -> None:
    # Upgrading the operator must not break the locks it finds: an NFD lock held since before the
    # rule stays with its holder until released or expired.
    held_claim = claim("a", 5, resource=NFD)
    lock = lock_for(held_claim)
    held = holding(held_claim, lock)
    assert summary(run([held], lock, T0 + 1, resource=NFD)) == []
    renewed = holding(replace(held_claim, renew_request="r2"), lock, observed_renew="r1")
    assert summary(run([renewed], lock, T0 + 90, resource=NFD)) == [
        ("renew", "a", 1800), ("status", "a", Phase.HELD, Reason.GRANTED)]


def test_an_nfc_claim_is_granted_as_before() -> None:
    assert summary(run([claim("a", 5, resource=NFC)], None, T0, resource=NFC)) == [("create", "a", 1800)]


# ---- the operator: a claim of several resources -----------------------------------------------


def test_a_new_claim_of_several_with_one_not_in_nfc_is_rejected() -> None:
    c = multi("m", 5, ["x://plain", NFD])
    decision = decide_claim(c, views([c], []), now=T0, policy=POLICY, graph=graph_of([c], []))
    (status,) = [a.status for a in decision.actions if hasattr(a, "status")]
    assert (status.phase, status.reason) == (Phase.REJECTED, Reason.INVALID_SPEC)
    assert "U+0065 U+0301" in status.message


# ---- the SDK and CLI: refused before sending --------------------------------------------------


def test_the_sdk_refuses_a_new_claim_not_in_nfc_but_reads_and_releases_any_spelling() -> None:
    with pytest.raises(InvalidInput, match="not in Unicode normal form NFC"):
        Target.of(NFD).to_claim()
    with pytest.raises(InvalidInput, match="not in Unicode normal form NFC"):
        Target.of(["x://plain", NFD]).to_claim()
    assert Target.of(NFC).to_claim().resources == (NFC,)
    # release/renew/get use Target.of alone: an NFD claim made before the rule can still be released.
    assert Target.of(NFD).resources == (NFD,)


@pytest.mark.parametrize("command", [["acquire", NFD], ["acquire", "x://plain", NFD], ["run", NFD, "--", "true"]])
def test_the_commands_refuse_a_new_claim_not_in_nfc_before_looking_for_a_cluster(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # would be NotConfigured (6) if reached
    assert main(command) == ExitCode.INVALID_INPUT
    assert "not in Unicode normal form NFC" in capsys.readouterr().err
