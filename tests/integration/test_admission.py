"""The API server itself refuses invalid LockClaims, with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi

from tests.support.commands import kubectl

GROUP, VERSION = "kubelock.dev", "v1alpha1"


def _create(api: ApiClient, ns: str, spec: dict[str, Any], name: str = "c") -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name}, "spec": spec}
    return dict(
        CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, "lockclaims", body, field_validation="Strict"
        )
    )


TTL_WORDS = "ttlSeconds must be between 1 and 86400: a lease in seconds"
PERMITS_WORDS = "permits must be between 1 and 1000: the permits of the resource's capacity this claim takes"
# The schema's own minimum/maximum answer, which names no way out (integer fields have rules instead).
GENERIC_BOUNDS = ("should be less than or equal to", "should be greater than or equal to")


def _refused(api: ApiClient, ns: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        _create(api, ns, spec)
    assert refused.value.status in (400, 422), refused.value.body
    return str(refused.value.body)


def test_a_valid_claim_is_accepted_with_defaults(admin_api: ApiClient, namespace: str) -> None:
    created = _create(admin_api, namespace, {"resource": "github://acme/app/issues/42", "holder": "agent-a"})
    assert created["spec"]["wait"] is False  # defaulted by the schema
    assert (created["spec"]["mode"], created["spec"]["permits"]) == ("Exclusive", 1)
    several = _create(admin_api, namespace, {"resources": ["github://a/1", "GITHUB://a/1/"], "holder": "a"}, "d")
    assert several["spec"]["resources"] == ["github://a/1", "GITHUB://a/1/"]  # equal only once normalised


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"resource": "no-scheme", "holder": "a"}, "spec.resource",
         "must be a URI scheme://rest such as github://acme/app/issues/42"),
        ({"resource": "github://has space", "holder": "a"}, "spec.resource", "whitespace"),
        ({"resource": "github://tab\there", "holder": "a"}, "spec.resource", "control characters"),
        ({"resource": "1git://x", "holder": "a"}, "spec.resource", "scheme"),
        ({"resource": "github://" + "x" * 1016, "holder": "a"}, "spec.resource", "more than 1024 bytes"),
        ({"resource": "github://" + "é" * 508, "holder": "a"}, "spec.resource", "at most 1024 bytes (UTF-8)"),
        ({"resource": "github://x", "holder": "ü" * 127}, "spec.holder", "at most 253 bytes (UTF-8)"),
        ({"resource": "github://x", "holder": ""}, "spec.holder", "at least 1"),
        ({"resource": "github://x", "holder": "a b"}, "spec.holder",
         "e.g. user:alice/laptop, without whitespace"),  # the body's JSON spells < and > as \u003c, \u003e
        ({"resource": "github://x", "holder": "a", "ttlSeconds": 0}, "spec.ttlSeconds", TTL_WORDS),
        ({"resource": "github://x", "holder": "a", "ttlSeconds": -5}, "spec.ttlSeconds", TTL_WORDS),
        ({"resource": "github://x", "holder": "a", "ttlSeconds": "abc"}, "spec.ttlSeconds", "integer"),
        ({"resource": "github://x", "holder": "a", "ttlSeconds": 86401}, "spec.ttlSeconds", TTL_WORDS),
        ({"resource": "github://x", "holder": "a", "wait": True, "waitTimeoutSeconds": 0}, "spec.waitTimeoutSeconds",
         "waitTimeoutSeconds must be between 1 and 86400: the longest wait in seconds; leave it out"),
        ({"resource": "github://x", "holder": "a", "wait": True, "waitTimeoutSeconds": 86401},
         "spec.waitTimeoutSeconds", "waitTimeoutSeconds must be between 1 and 86400"),
        ({"resource": "github://x", "holder": "a", "priority": 1001}, "spec.priority",
         "priority must be between -1000 and 1000: higher is served first"),
        ({"resource": "github://x", "holder": "a", "priority": -1001}, "spec.priority",
         "priority must be between -1000 and 1000"),
        ({"resource": "github://x", "holder": "a", "waitTimeoutSeconds": 5}, "waitTimeoutSeconds", "wait: true"),
        ({"resource": "github://x", "holder": "a", "wait": "yes"}, "spec.wait", "boolean"),
        ({"resource": "github://x", "holder": "a", "bogus": 1}, "spec.bogus", "unknown field"),
        ({"holder": "a"}, "spec", "set exactly one of resource (one URI) and resources"),
        ({"resource": "github://x", "resources": ["github://y"], "holder": "a"}, "spec",
         "set exactly one of resource (one URI) and resources"),
        ({"resources": [], "holder": "a"}, "spec.resources", "at least 1 item"),
        ({"resources": ["github://x", "github://x"], "holder": "a"}, "spec.resources",
         "resources must not name a resource twice"),
        ({"resources": ["github://x", "nope"], "holder": "a"}, "spec.resources[1]", "must be a URI"),
        ({"resources": [f"github://{i}" for i in range(17)], "holder": "a"}, "spec.resources", "at most 16 items"),
        ({"resource": "github://x", "holder": "a", "mode": "Read"}, "spec.mode", "supported values"),
        ({"resource": "github://x", "holder": "a", "permits": 0}, "spec.permits", PERMITS_WORDS),
        ({"resource": "github://x", "holder": "a", "permits": 1001}, "spec.permits", PERMITS_WORDS),
        ({"resource": "github://x", "holder": "a", "mode": "Shared", "permits": 2}, "spec.permits",
         "a Shared claim takes no permits"),
        ({"resource": "github://x", "holder": "a", "podRef": {"name": "Bad_Name"}}, "spec.podRef.name", "should match"),
    ],
    ids=[
        "no-scheme",
        "space",
        "tab",
        "bad-scheme",
        "1025-bytes-of-ascii",
        "1024-characters-in-1025-bytes",
        "holder-254-bytes",
        "empty-holder",
        "holder-space",
        "ttl-0",
        "ttl-neg",
        "ttl-string",
        "ttl-too-big",
        "timeout-0",
        "timeout-too-big",
        "priority-too-high",
        "priority-too-low",
        "timeout-without-wait",
        "wait-string",
        "unknown-field",
        "missing-resource",
        "resource-and-resources",
        "empty-resources",
        "duplicate-resources",
        "bad-uri-in-resources",
        "17-resources",
        "unknown-mode",
        "permits-0",
        "permits-1001",
        "shared-with-permits",
        "bad-pod-name",
    ],
)
def test_invalid_claims_are_refused_naming_the_field(
    admin_api: ApiClient, namespace: str, spec: dict[str, Any], field: str, words: str
) -> None:
    message = _refused(admin_api, namespace, spec)
    assert field in message, message
    assert words in message, message
    assert not any(generic in message for generic in GENERIC_BOUNDS), message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resource": "github://other"}, "resource is immutable"),
        ({"holder": "agent-b"}, "holder is immutable"),
        ({"wait": True}, "wait is immutable"),
        ({"podRef": {"name": "p"}}, "podRef is immutable"),
        ({"mode": "Shared"}, "mode is immutable"),
        ({"permits": 2}, "permits is immutable"),
        ({"priority": -1}, "priority is immutable"),
        ({"onBusy": "Requeue"}, "onBusy is immutable"),
        ({"resource": None, "resources": ["github://acme/app/pr/1"]}, "resource and resources are immutable"),
    ],
    ids=["resource", "holder", "wait", "podRef", "mode", "permits", "priority", "onBusy", "resources"],
)
def test_identity_fields_are_immutable(
    admin_api: ApiClient, namespace: str, change: dict[str, Any], field: str
) -> None:
    _create(admin_api, namespace, {"resource": "github://acme/app/pr/1", "holder": "agent-a"})
    api = CustomObjectsApi(admin_api)
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "lockclaims", "c", {"spec": change})
    assert refused.value.status == 422
    assert field in str(refused.value.body)
    # and says what works instead, and the command that does it: a Rejected claim's message advises
    # `wait: true`, which no edit can set
    assert "only ttlSeconds may change: to ask for something else, delete the claim and create it anew with the " \
        "new spec (kubectl replace --force -f FILE does both" in str(refused.value.body)
    # ttlSeconds may change (a holder may ask for a longer lease at its next renewal).
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "lockclaims", "c", {"spec": {"ttlSeconds": 60}})


def test_the_wait_timeout_is_immutable(admin_api: ApiClient, namespace: str) -> None:
    _create(admin_api, namespace, {"resource": "github://acme/app/pr/1", "holder": "agent-a", "wait": True,
                                   "waitTimeoutSeconds": 600})
    api = CustomObjectsApi(admin_api)
    for patch in ({"spec": {"waitTimeoutSeconds": 2}}, {"spec": {"waitTimeoutSeconds": None}}):
        with pytest.raises(ApiException) as refused:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "lockclaims", "c", patch)
        assert refused.value.status == 422, patch
        assert "waitTimeoutSeconds is immutable" in str(refused.value.body), patch


def test_kubectl_apply_says_what_is_wrong(control_plane, namespace: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: kubelock.dev/v1alpha1\nkind: LockClaim\nmetadata: {name: bad}\n"
        "spec: {resource: 'not a uri', holder: agent-a, ttlSeconds: 0, colour: blue}\n"
    )
    result = kubectl(control_plane, "-n", namespace, "apply", "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.colour"' in result.stderr


def test_kubectl_explain_explains(control_plane) -> None:  # type: ignore[no-untyped-def]
    out = kubectl(control_plane, "explain", "lockclaim.spec").stdout
    for words in ("resource", "holder", "ttlSeconds", "resourceLockTimeout", "waitTimeoutSeconds", "podRef"):
        assert words in out
    status = kubectl(control_plane, "explain", "lockclaim.status.fencingToken").stdout
    assert "strictly greater" in status


def test_the_command_an_immutable_field_names_makes_the_claim_anew(  # type: ignore[no-untyped-def]
    control_plane, namespace: str, tmp_path
) -> None:
    """The refusal of an edit names `kubectl replace --force -f FILE`: run as written on the edited
    file, it replaces the claim (a new object, with the new spec), where `kubectl apply` was refused."""
    manifest = tmp_path / "claim.yaml"
    manifest.write_text("apiVersion: kubelock.dev/v1alpha1\nkind: LockClaim\nmetadata: {name: c}\n"
                        "spec: {resource: 'github://acme/app/pr/1', holder: agent-a}\n")
    kubectl(control_plane, "-n", namespace, "create", "-f", str(manifest))
    before = kubectl(control_plane, "-n", namespace, "get", "lockclaim", "c", "-o", "jsonpath={.metadata.uid}").stdout
    manifest.write_text(manifest.read_text().replace("holder: agent-a", "holder: agent-a, wait: true"))
    edit = kubectl(control_plane, "-n", namespace, "apply", "-f", str(manifest), check=False)
    assert edit.returncode != 0
    assert "kubectl replace --force -f FILE" in edit.stderr, edit.stderr
    kubectl(control_plane, "-n", namespace, "replace", "--force", "-f", str(manifest))
    after = kubectl(control_plane, "-n", namespace, "get", "lockclaim", "c",
                    "-o", "jsonpath={.metadata.uid} {.spec.wait}").stdout.split()
    assert after[0] != before and after[1] == "true", (before, after)
