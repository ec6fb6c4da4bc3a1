"""Resource URIs and holders: validation, normalisation and the object names derived from them."""

from __future__ import annotations

import re

import pytest

from kubelock.domain.resource import (
    MAX_HOLDER_LENGTH,
    MAX_RESOURCE_LENGTH,
    InvalidResource,
    claim_name,
    lock_name,
    normalise,
    validate_holder,
    validate_resource,
)

# The brief's rule for object names, and Kubernetes' own (labels separated by dots).
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
K8S_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def assert_dns_subdomain(name: str) -> None:
    assert 1 <= len(name) <= 253, name
    assert NAME_RE.fullmatch(name), name
    assert K8S_SUBDOMAIN_RE.fullmatch(name), name


# ---- validate_resource -----------------------------------------------------------------------

VALID_RESOURCES = [
    pytest.param("github://acme/app/issues/42", id="github-issue"),
    pytest.param("deploy://api-prod", id="deploy"),
    pytest.param("a://x", id="shortest"),
    pytest.param("GITHUB://Acme/App", id="upper-case-scheme"),
    pytest.param("svn+ssh://host/repo", id="scheme-with-plus"),
    pytest.param("x-y.z://rest", id="scheme-with-dash-and-dot"),
    pytest.param("a1://x", id="scheme-with-digit"),
    pytest.param("a://x/", id="trailing-slash"),
    pytest.param("a://x?y=1&z=%20#frag", id="query-and-fragment"),
    pytest.param("a://日本語/ünïcödé", id="unicode-rest"),
    pytest.param("a://b://c", id="second-separator-in-rest"),
    pytest.param("a://" + "x" * (MAX_RESOURCE_LENGTH - 4), id="exactly-1024"),
    pytest.param("a://" + "é" * 510, id="exactly-1024-bytes-of-two-byte-characters"),
]


@pytest.mark.parametrize("uri", VALID_RESOURCES)
def test_validate_resource_accepts(uri: str) -> None:
    assert validate_resource(uri) == uri
    assert validate_resource(uri) is uri  # returned unchanged, not normalised


INVALID_RESOURCES = [
    pytest.param("", "empty", id="empty"),
    pytest.param("github/acme/app", "://", id="no-separator"),
    pytest.param("github:/acme", "://", id="single-slash"),
    pytest.param("://x", "scheme", id="empty-scheme"),
    pytest.param("1abc://x", "scheme '1abc'", id="scheme-starts-with-digit"),
    pytest.param("a_b://x", "scheme 'a_b'", id="scheme-with-underscore"),
    pytest.param("-a://x", "scheme", id="scheme-starts-with-dash"),
    pytest.param("é://x", "scheme", id="scheme-non-ascii-letter"),
    pytest.param(" a://x", "scheme", id="leading-space"),
    pytest.param("a://", "nothing after", id="empty-rest"),
    pytest.param("a://x y", "SPACE (U+0020)", id="space"),
    pytest.param("a://x ", "U+0020", id="trailing-space"),
    pytest.param("a://x\ty", "U+0009", id="tab"),
    pytest.param("a://x\ny", "U+000A", id="newline"),
    pytest.param("a://x\n", "U+000A", id="trailing-newline"),
    pytest.param("a://x\ry", "U+000D", id="carriage-return"),
    pytest.param("a://x\x00y", "U+0000", id="nul"),
    pytest.param("a://x\x7fy", "U+007F", id="del"),
    pytest.param("a://x\u00a0y", "NO-BREAK SPACE", id="no-break-space"),
    pytest.param("a://x\u200by", "ZERO WIDTH SPACE (U+200B)", id="zero-width-space"),
    pytest.param("a://x\u202ey", "RIGHT-TO-LEFT OVERRIDE (U+202E)", id="right-to-left-override"),
    pytest.param("a://x\u2028y", "U+2028", id="line-separator"),
    pytest.param("a://x\ufeffy", "U+FEFF", id="byte-order-mark"),
    pytest.param("a://x\ue000y", "U+E000", id="private-use"),
    pytest.param("a://" + "x" * (MAX_RESOURCE_LENGTH - 3), "1025 bytes long in UTF-8", id="1025-bytes"),
    pytest.param("a://" + "é" * 511, "1026 bytes long in UTF-8", id="515-characters-but-1026-bytes"),
    pytest.param("a://" + "x" * 5000, "at most 1024", id="very-long"),
]


@pytest.mark.parametrize(("uri", "fragment"), INVALID_RESOURCES)
def test_validate_resource_rejects_with_a_message_naming_the_problem(uri: str, fragment: str) -> None:
    with pytest.raises(InvalidResource) as info:
        validate_resource(uri)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)  # so pydantic reports it as a field error


def test_forbidden_character_message_gives_its_position() -> None:
    with pytest.raises(InvalidResource, match=r"character 6 is ZERO WIDTH SPACE \(U\+200B\)"):
        validate_resource("a://x\u200by")


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param(None, "NoneType", id="none"),
        pytest.param(42, "int", id="int"),
        pytest.param(b"a://x", "bytes", id="bytes"),
        pytest.param(["a://x"], "list", id="list"),
    ],
)
def test_validate_resource_rejects_non_strings(value: object, type_name: str) -> None:
    with pytest.raises(InvalidResource, match=f"resource must be a string, not {type_name}"):
        validate_resource(value)


# ---- validate_holder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param("agent-a", id="pod-name"),
        pytest.param("a", id="one-char"),
        pytest.param("system:serviceaccount:ns:bot", id="user-name"),
        pytest.param("Agent_A.1", id="mixed-case-and-punctuation"),
        pytest.param("агент", id="unicode"),
        pytest.param("h" * MAX_HOLDER_LENGTH, id="exactly-253"),
    ],
)
def test_validate_holder_accepts(holder: str) -> None:
    assert validate_holder(holder) == holder


@pytest.mark.parametrize(
    ("holder", "fragment"),
    [
        pytest.param("", "1 to 253 bytes long in UTF-8, not 0", id="empty"),
        pytest.param("ü" * 127, "1 to 253 bytes long in UTF-8, not 254", id="127-characters-but-254-bytes"),
        pytest.param("h" * (MAX_HOLDER_LENGTH + 1), "not 254", id="254-chars"),
        pytest.param("agent a", "U+0020", id="space"),
        pytest.param("agent\ta", "U+0009", id="tab"),
        pytest.param("agent\n", "U+000A", id="newline"),
        pytest.param("agent\x00", "U+0000", id="nul"),
        pytest.param("agent\u200b", "U+200B", id="zero-width-space"),
        pytest.param("\u202eagent", "U+202E", id="right-to-left-override"),
    ],
)
def test_validate_holder_rejects(holder: str, fragment: str) -> None:
    with pytest.raises(InvalidResource, match="holder") as info:
        validate_holder(holder)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [None, 7, b"agent"], ids=["none", "int", "bytes"])
def test_validate_holder_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidResource, match="holder must be a string"):
        validate_holder(value)


# ---- normalise -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("GITHUB://a/b/", "github://a/b", id="scheme-lowered-and-slash-removed"),
        pytest.param("github://a/b", "github://a/b", id="already-normal"),
        pytest.param("GitHub://a/b", "github://a/b", id="mixed-case-scheme"),
        pytest.param("github://a/b//", "github://a/b/", id="only-one-trailing-slash-removed"),
        pytest.param("github://A/B", "github://A/B", id="rest-keeps-case"),
        pytest.param("HTTP://Host/Path/", "http://Host/Path", id="rest-keeps-case-scheme-lowered"),
        pytest.param("a://x/./y/../z", "a://x/./y/../z", id="no-path-resolution"),
        pytest.param("a://%41", "a://%41", id="no-percent-decoding"),
        pytest.param("a://Ä/", "a://Ä", id="unicode-rest-unchanged"),
        pytest.param("a://x/?", "a://x/?", id="slash-not-last"),
        pytest.param("a:///", "a:///", id="lone-slash-kept-so-the-rest-is-not-empty"),
        pytest.param("A:///", "a:///", id="lone-slash-kept-scheme-lowered"),
    ],
)
def test_normalise(uri: str, expected: str) -> None:
    assert normalise(uri) == expected


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        pytest.param("GITHUB://a/b/", "github://a/b", True, id="case-and-slash"),
        pytest.param("deploy://api-prod/", "Deploy://api-prod", True, id="both-rules"),
        pytest.param("github://a/B", "github://a/b", False, id="rest-case-sensitive"),
        pytest.param("github://a/b//", "github://a/b", False, id="two-slashes-differ"),
        pytest.param("github://a/b", "github://a/b ", False, id="no-trimming"),
        pytest.param("a://caf\u00e9", "a://cafe\u0301", False, id="no-unicode-normalisation"),
    ],
)
def test_conflict_means_equal_normalised_resources(left: str, right: str, equal: bool) -> None:
    assert (normalise(left) == normalise(right)) is equal


@pytest.mark.parametrize("uri", VALID_RESOURCES)
def test_normal_form_is_a_valid_resource(uri: str) -> None:
    once = normalise(uri)
    assert validate_resource(once) == once
    assert normalise(once.upper()).split("://")[0] == once.split("://")[0]  # scheme already lower-case


# ---- lock_name and claim_name ----------------------------------------------------------------

NAME_INPUTS = [
    pytest.param("github://acme/app/issues/42", id="plain"),
    pytest.param("a://x", id="short"),
    pytest.param("a://日本語", id="unicode-only-rest"),
    pytest.param("a://🔒🔒🔒", id="emoji-only-rest"),
    pytest.param("a://---", id="dashes-only-rest"),
    pytest.param("a://...///___", id="punctuation-only-rest"),
    pytest.param("a://İK", id="unicode-lowering-to-ascii"),
    pytest.param("x-y.z://A.B", id="dots-in-uri"),
    pytest.param("a://" + "x" * (MAX_RESOURCE_LENGTH - 4), id="1024-chars"),
    pytest.param("a://" + "-x" * 500, id="long-alternating"),
    pytest.param("日本語", id="no-ascii-at-all"),
]


@pytest.mark.parametrize("resource", NAME_INPUTS)
def test_lock_name_is_a_deterministic_dns_subdomain(resource: str) -> None:
    name = lock_name(resource)
    assert_dns_subdomain(name)
    assert lock_name(resource) == name


def test_lock_name_is_readable() -> None:
    assert lock_name("github://acme/app/issues/42").startswith("github-acme-app-issues-42-")
    assert lock_name("日本語").startswith("lock-")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("a://x_y", "a://x-y", id="underscore-vs-dash"),
        pytest.param("a://X", "a://x", id="case"),
        pytest.param("a://x/y", "a://x.y", id="slash-vs-dot"),
        pytest.param("a://日本", "a://中国", id="unicode-only"),
        pytest.param("a://" + "x" * 60 + "1", "a://" + "x" * 60 + "2", id="differ-after-slug-limit"),
        pytest.param("github://a/b", "github://a/b/", id="trailing-slash-unnormalised"),
    ],
)
def test_lock_names_differ_when_slugs_collide(first: str, second: str) -> None:
    assert lock_name(first) != lock_name(second)


@pytest.mark.parametrize("holder", ["agent-a", "Agent_A", "агент", "h" * MAX_HOLDER_LENGTH, "a.b.c"])
@pytest.mark.parametrize("resource", NAME_INPUTS)
def test_claim_name_is_a_deterministic_dns_subdomain(holder: str, resource: str) -> None:
    name = claim_name(holder, resource)
    assert_dns_subdomain(name)
    assert claim_name(holder, resource) == name


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("agent-a", "a://x_y"), ("agent-a", "a://x-y"), id="resource-slugs-collide"),
        pytest.param(("agent_a", "a://x"), ("agent-a", "a://x"), id="holder-slugs-collide"),
        pytest.param(("Agent", "a://x"), ("agent", "a://x"), id="holder-case"),
        pytest.param(("агент", "a://x"), ("代理", "a://x"), id="unicode-holders"),
        pytest.param(("a", "b://c"), ("a-b", "c://c"), id="boundary-shift"),
    ],
)
def test_claim_names_differ_when_slugs_collide(first: tuple[str, str], second: tuple[str, str]) -> None:
    assert claim_name(*first) != claim_name(*second)


def test_claim_name_is_per_holder_and_per_resource() -> None:
    names = {claim_name(h, r) for h in ("agent-a", "agent-b") for r in ("a://x", "a://y")}
    assert len(names) == 4
