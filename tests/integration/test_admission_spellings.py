"""The API server refuses a resource URI that RFC 3986 would spell otherwise (a dot segment, host case,
an escaped unreserved character, lower-case hex, a default or empty port), naming the field, the
part and, where its rule can build it, the spelling to use; every other documented spelling is
admitted; and a claim stored before the rules still works: renewed, changed, released.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, ApiException, ApiextensionsV1Api, CustomObjectsApi

from tests.support.claims import MIN_WAIT_SECONDS, Locks, status_of, wait_until
from tests.support.commands import kubectl
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess
from tests.support.spellings import ACCEPTED

GROUP, VERSION = "kubelock.dev", "v1alpha1"
CRD_NAME = "lockclaims.kubelock.dev"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "kubelock.dev_lockclaims.yaml"
PREFIX = "kls-"

# (spelling, words the refusal must say: the part it found and, where the rule builds it, the spelling)
REFUSED = [
    pytest.param("github://acme.example/app/./x", ["has a dot segment", "write the URI without them"], id="dot"),
    pytest.param("github://acme.example/app/y/../x", ["has a dot segment", "RFC 3986 removes"], id="dot-dot"),
    pytest.param("x://a/b/..", ["has a dot segment"], id="dot-dot-last"),
    pytest.param("github://ACME.example/app/x",
                 ["upper-case letters in its host ACME.example", "write github://acme.example/app/x"], id="host-case"),
    pytest.param("deploy://API-prod", ["host API-prod", "write deploy://api-prod"], id="host-case-any-scheme"),
    pytest.param("x://User@Host:8080/A", ["host Host:", "write x://User@host:8080/A"], id="host-not-userinfo"),
    pytest.param("x://[FE80::1]/a", ["host [FE80::1]", "write x://[fe80::1]/a"], id="host-ip-literal"),
    pytest.param("x://caf%C3%A9.EXAMPLE/a", ["host caf%C3%A9.EXAMPLE", "hex digits of a %-escape stay upper-case"],
                 id="host-case-with-escapes"),
    pytest.param("x://%61cme/x", ["has %61, the escape of an unreserved character"], id="escaped-host-letter"),
    pytest.param("x://a/%42", ["has %42, the escape of an unreserved character", "write the character"],
                 id="escaped-path-letter"),
    pytest.param("x://caf%c3%a9", ["the escape %c3 with lower-case hex digits", "write %C3"], id="lower-case-hex"),
    pytest.param("https://acme.example:443/x", ["default port or an empty one (:443)", "write https://acme.example/x"],
                 id="https-443"),
    pytest.param("HTTP://acme.example:80", ["(:80)", "write HTTP://acme.example"], id="http-80"),
    pytest.param("x://acme.example:/x", ["(:)", "write x://acme.example/x"], id="empty-port"),
]



def _claim(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name}, "spec": spec}


def _create(api: ApiClient, ns: str, spec: dict[str, Any], name: str = "c", dry_run: bool = False) -> dict[str, Any]:
    return dict(CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "lockclaims", _claim(name, spec), field_validation="Strict",
        **({"dry_run": "All"} if dry_run else {}),
    ))


def _refused(api: ApiClient, ns: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        _create(api, ns, spec)
    assert refused.value.status == 422, refused.value.body
    return str(refused.value.body)


@pytest.mark.parametrize(("uri", "words"), REFUSED)
def test_a_spelling_rfc_3986_rewrites_is_refused_naming_field_part_and_spelling(
    admin_api: ApiClient, namespace: str, uri: str, words: list[str]
) -> None:
    message = _refused(admin_api, namespace, {"resource": uri, "holder": "a"})
    print(f"{uri}: {message}")
    assert "spec.resource" in message and f"resource {uri} " in message, message
    assert "another lock on the same resource" in message, message
    for word in words:
        assert word in message, message
    several = _refused(admin_api, namespace, {"resources": ["x://plain", uri], "holder": "a"})
    assert "spec.resources" in several and f"resource {uri} " in several, several
    for word in words:
        assert word in several, several


def test_every_other_documented_spelling_is_admitted(admin_api: ApiClient, namespace: str) -> None:
    for index, uri in enumerate(ACCEPTED):
        created = _create(admin_api, namespace, {"resource": uri, "holder": "a"}, f"one-{index}")
        assert created["spec"]["resource"] == uri
    for start in range(0, len(ACCEPTED), 16):
        chunk = ACCEPTED[start:start + 16]
        created = _create(admin_api, namespace, {"resources": chunk, "holder": "a"}, f"several-{start}")
        assert created["spec"]["resources"] == chunk


def test_kubectl_apply_says_which_spelling_to_use(control_plane, namespace: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = tmp_path / "host.yaml"
    manifest.write_text(
        "apiVersion: kubelock.dev/v1alpha1\nkind: LockClaim\nmetadata: {name: host}\n"
        "spec: {resource: 'github://ACME.example/app/x', holder: agent-a}\n"
    )
    result = kubectl(control_plane, "-n", namespace, "apply", "-f", str(manifest), check=False)
    print(result.stderr)
    assert result.returncode != 0
    assert "spec.resource" in result.stderr and "write github://acme.example/app/x" in result.stderr, result.stderr


# ---- a claim stored before the rules ----------------------------------------------------------


def _without_spelling_rules(crd: dict[str, Any]) -> dict[str, Any]:
    """The claim CRD as it was before the spelling rules."""
    old = copy.deepcopy(crd)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            rules = node.get("x-kubernetes-validations")
            if isinstance(rules, list):
                kept = [r for r in rules if "RFC 3986" not in r.get("messageExpression", "")]
                node["x-kubernetes-validations"] = kept
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(old)
    assert old != crd
    return old


def _apply_crd(admin_api: ApiClient, body: dict[str, Any]) -> None:
    api = ApiextensionsV1Api(admin_api)
    current = api.read_custom_resource_definition(CRD_NAME)
    replacement = copy.deepcopy(body)
    replacement["metadata"]["resourceVersion"] = current.metadata.resource_version
    api.replace_custom_resource_definition(CRD_NAME, replacement)


def _admits(admin_api: ApiClient, ns: str, uri: str) -> bool:
    try:
        _create(admin_api, ns, {"resource": uri, "holder": "probe"}, "probe", dry_run=True)
    except ApiException as error:
        if error.status != 422:
            raise
        return False
    return True


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",)) as op:
        yield op


def test_a_claim_stored_before_the_rules_is_granted_renewed_changed_and_released(
    admin_api: ApiClient, operator: OperatorProcess
) -> None:
    """The API server re-checks an unchanged value against a rule added after it was stored only where
    it cannot match old to new (validation ratcheting): the rules stand where it can, so the holder's
    renewals, the operator's status writes and the removal of its finalizer all go through."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    one, several = "github://acme.example/app/./x", ["x://plain", "github://ACME.example/app/y"]
    with temporary_namespace(admin_api, PREFIX) as ns:
        try:
            _apply_crd(admin_api, _without_spelling_rules(crd))
            wait_until(lambda: _admits(admin_api, ns, one), "the CRD without the spelling rules in force")
            _create(admin_api, ns, {"resource": one, "holder": "user:a/w", "ttlSeconds": 120}, "one")
            _create(admin_api, ns, {"resources": several, "holder": "user:a/w", "ttlSeconds": 120}, "several")
        finally:
            _apply_crd(admin_api, crd)
        wait_until(lambda: not _admits(admin_api, ns, one), "the CRD with the spelling rules in force")
        locks = Locks(admin_api, ns)
        for name in ("one", "several"):
            held = locks.wait_phase(name, "Held", timeout=MIN_WAIT_SECONDS)
            renewed_at = status_of(held)["renewedAt"]
            time.sleep(1.1)  # renewedAt is to the second
            locks.renew(name)  # a metadata write: the whole object is validated again
            locks.wait_for(name, lambda b, r=renewed_at: status_of(b).get("renewedAt", r) != r, what="renewed")
            CustomObjectsApi(admin_api).patch_namespaced_custom_object(
                GROUP, VERSION, ns, "lockclaims", name, {"spec": {"ttlSeconds": 60}})
            print(f"{name}: held, renewed, ttlSeconds changed: {status_of(locks.get(name)).get('message')}")
        (lock,) = [lk for lk in locks.locks() if lk["spec"].get("resource", "").endswith("/app/./x")] or [None]
        assert lock is not None, locks.locks()  # named from its own spelling, as before
        for name in ("one", "several"):
            locks.delete(name)  # the operator removes its finalizer: another write of the whole object
        wait_until(lambda: not locks.claims(), "the claims stored before the rules to be released and gone")
        wait_until(lambda: not locks.locks(), "their locks to be removed")
