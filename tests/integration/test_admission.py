"""The API server itself refuses invalid LockClaims, with a message naming the field."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi

GROUP, VERSION = "kubelock.dev", "v1alpha1"


def _create(api: ApiClient, ns: str, spec: dict[str, Any], name: str = "c") -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name}, "spec": spec}
    return dict(
        CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, "lockclaims", body, field_validation="Strict"
        )
    )


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
        ({"resource": "github://x", "holder": "a", "ttlSeconds": 0}, "spec.ttlSeconds", "greater than or equal to 1"),
        ({"resource": "github://x", "holder": "a", "ttlSeconds": -5}, "spec.ttlSeconds", "greater than or equal to 1"),
        ({"resource": "github://x", "holder": "a", "ttlSeconds": "abc"}, "spec.ttlSeconds", "integer"),
        ({"resource": "github://x", "holder": "a", "ttlSeconds": 86401}, "spec.ttlSeconds", "less than or equal"),
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
        ({"resource": "github://x", "holder": "a", "permits": 0}, "spec.permits", "greater than or equal to 1"),
        ({"resource": "github://x", "holder": "a", "permits": 1001}, "spec.permits", "less than or equal to 1000"),
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


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resource": "github://other"}, "resource is immutable"),
        ({"holder": "agent-b"}, "holder is immutable"),
        ({"wait": True}, "wait is immutable"),
        ({"podRef": {"name": "p"}}, "podRef is immutable"),
        ({"mode": "Shared"}, "mode is immutable"),
        ({"permits": 2}, "permits is immutable"),
        ({"resource": None, "resources": ["github://acme/app/pr/1"]}, "resource and resources are immutable"),
    ],
    ids=["resource", "holder", "wait", "podRef", "mode", "permits", "resources"],
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
    # and says what works instead: a Rejected claim's message advises `wait: true`, which no edit can set
    assert "delete the claim (which releases what it holds) and create it anew" in str(refused.value.body)
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
    kubectl = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig)]
    result = subprocess.run([*kubectl, "-n", namespace, "apply", "-f", str(manifest)], capture_output=True, text=True)
    assert result.returncode != 0
    assert 'unknown field "spec.colour"' in result.stderr


def test_kubectl_explain_explains(control_plane) -> None:  # type: ignore[no-untyped-def]
    kubectl = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig)]
    out = subprocess.run([*kubectl, "explain", "lockclaim.spec"], capture_output=True, text=True, check=True).stdout
    for words in ("resource", "holder", "ttlSeconds", "resourceLockTimeout", "waitTimeoutSeconds", "podRef"):
        assert words in out
    status = subprocess.run(
        [*kubectl, "explain", "lockclaim.status.fencingToken"], capture_output=True, text=True, check=True
    ).stdout
    assert "strictly greater" in status
