"""Spellings of one resource that RFC 3986 compares as equal: refused for a new claim, with the one
spelling to use (`domain.spelling`), by the SDK, the commands and the API models; the operator
still grants a claim stored before the rule, under the lock name it always had.

The CRD's CEL rules use the same patterns; tests/integration/test_admission.py runs them against
the API server.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from kubelock.api.types import LockClaimSpec
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import main
from kubelock.domain import spelling
from kubelock.domain.resource import lock_name, normalise, validate_resource
from kubelock.domain.spelling import one_spelling, other_spelling, remove_dot_segments
from kubelock.sdk.errors import InvalidInput
from kubelock.sdk.targets import Target
from tests.support.arbitration import T0, claim, run, summary
from tests.support.spellings import ACCEPTED

# (refused spelling, the spelling to use, what the message names)
REFUSED = [
    pytest.param("github://acme.example/app/./x", "github://acme.example/app/x", "dot segment '.'", id="dot"),
    pytest.param("github://acme.example/app/y/../x", "github://acme.example/app/x", "dot segment '..'",
                 id="dot-dot"),
    pytest.param("x://a/b/..", "x://a/", "dot segment '..'", id="dot-dot-last"),
    pytest.param("x://a/.", "x://a/", "dot segment '.'", id="dot-last"),
    pytest.param("x://a/../../b?q", "x://a/b?q", "dot segment '..'", id="dot-dot-above-the-root"),
    pytest.param("github://ACME.example/app/x", "github://acme.example/app/x", "host 'ACME.example'",
                 id="host-case"),
    pytest.param("deploy://API-prod", "deploy://api-prod", "host 'API-prod'", id="host-case-any-scheme"),
    pytest.param("x://User@Host:8080/A", "x://User@host:8080/A", "host 'Host'", id="host-case-not-userinfo-path"),
    pytest.param("x://[FE80::1]/a", "x://[fe80::1]/a", "host '[FE80::1]'", id="host-case-ip-literal"),
    pytest.param("x://caf%C3%A9.EXAMPLE/a", "x://caf%C3%A9.example/a", "host 'caf%C3%A9.EXAMPLE'",
                 id="host-case-escapes-stay-upper"),
    pytest.param("x://%61cme/x", "x://acme/x", "'%61' is the unreserved character 'a'", id="escaped-host-letter"),
    pytest.param("x://%41cme/x", "x://acme/x", "'%41' is the unreserved character 'A'",
                 id="escaped-host-capital"),
    pytest.param("x://a/%42", "x://a/B", "'%42' is the unreserved character 'B'", id="escaped-path-letter"),
    pytest.param("x://a/%7e%2D", "x://a/~-", "'%7e' is the unreserved character '~'", id="escaped-tilde-dash"),
    pytest.param("x://a/%2E%2E/b", "x://a/b", "'%2E' is the unreserved character '.'", id="escaped-dot-segment"),
    pytest.param("x://caf%c3%a9", "x://caf%C3%A9", "'%c3' is '%C3'", id="lower-case-hex"),
    pytest.param("x://a/%2f", "x://a/%2F", "'%2f' is '%2F'", id="lower-case-hex-slash"),
    pytest.param("https://acme.example:443/x", "https://acme.example/x", "port ':443'", id="https-443"),
    pytest.param("HTTP://acme.example:80", "HTTP://acme.example", "port ':80'", id="http-80"),
    pytest.param("http://u:pw@[::1]:80/x", "http://u:pw@[::1]/x", "port ':80'", id="http-80-ip-literal"),
    pytest.param("x://acme.example:/x", "x://acme.example/x", "empty port", id="empty-port"),
]



@pytest.mark.parametrize(("uri", "spelled", "named"), REFUSED)
def test_a_spelling_rfc_3986_rewrites_is_refused_naming_the_part_and_the_spelling(
    uri: str, spelled: str, named: str
) -> None:
    message = other_spelling(validate_resource(uri))
    assert message is not None
    assert named in message, message
    assert message.endswith(f"so write {spelled!r}"), message
    assert f"resource {uri!r} is another spelling of {spelled!r} by RFC 3986" in message
    assert one_spelling(uri) == spelled
    assert other_spelling(spelled) is None  # the spelling to use is accepted
    assert lock_name(normalise(uri)) != lock_name(normalise(spelled))  # why it is refused


@pytest.mark.parametrize("uri", ACCEPTED)
def test_every_other_spelling_is_accepted_as_written(uri: str) -> None:
    assert other_spelling(validate_resource(uri)) is None
    assert one_spelling(uri) == uri


@pytest.mark.parametrize(("uri", "spelled", "named"), REFUSED)
def test_the_sdk_the_commands_and_the_models_refuse_it_before_sending(
    uri: str, spelled: str, named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(f"so write {spelled!r}")):
        Target.of(uri).to_claim()
    with pytest.raises(InvalidInput, match="another spelling"):
        Target.of(["x://plain", uri]).to_claim()
    with pytest.raises(ValidationError, match="another spelling"):
        LockClaimSpec(resource=uri, holder="user:a/w")
    with pytest.raises(ValidationError, match="another spelling"):
        LockClaimSpec(resources=["x://plain", uri], holder="user:a/w")
    # Releasing, renewing and reading a claim made before the rule take any spelling.
    assert Target.of(uri).uris == (uri,)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # would be NotConfigured (6) if reached
    assert main(["acquire", uri]) == ExitCode.INVALID_INPUT
    assert f"so write {spelled!r}" in capsys.readouterr().err


@pytest.mark.parametrize("uri", ACCEPTED)
def test_the_sdk_and_the_models_accept_every_other_spelling(uri: str) -> None:
    assert Target.of(uri).to_claim().uris == (uri,)
    assert LockClaimSpec(resource=uri, holder="user:a/w").resource == uri


@pytest.mark.parametrize(("uri", "spelled", "named"), REFUSED[:3] + REFUSED[5:6])
def test_the_operator_grants_a_claim_stored_before_the_rule_under_its_old_lock_name(
    uri: str, spelled: str, named: str
) -> None:
    # The API server stores no new such claim, but one admitted by an older CRD is decided as before:
    # granted (no InvalidSpec), its lock named from its own spelling.
    resource = normalise(uri)
    assert summary(run([claim("a", 5, resource=resource)], None, T0, resource=resource)) == [("create", "a", 1800)]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/b/c/./../../g", "/a/g"), ("/mid/content=5/../6", "/mid/6"), ("/..", "/"), ("/a/.", "/a/"),
     ("/a/..", "/"), ("/a//../b", "/a/b"), ("/a/b", "/a/b")],
)
def test_remove_dot_segments_is_rfc_3986_5_2_4(path: str, expected: str) -> None:
    # The first two are RFC 3986's own examples (section 5.2.4).
    assert remove_dot_segments(path) == expected


def test_the_patterns_are_re2_without_look_around_or_back_references() -> None:
    # The CRD's CEL runs them with RE2, which has neither.
    for name in ("DOT_SEGMENT_PATTERN", "HOST_CASE_PATTERN", "UNRESERVED_ESCAPE_PATTERN", "LOWER_HEX_ESCAPE_PATTERN",
                 "DEFAULT_PORT_PATTERN", "HOST_START_PATTERN", "HOST_THROUGH_PATTERN", "HOST_END_PATTERN"):
        pattern = getattr(spelling, name)
        assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), name
        assert "'" not in pattern, name  # they stand in CEL r'...' strings
