"""URL paths of the objects kubelock reads and writes."""

from __future__ import annotations

from urllib.parse import quote

from kubelock.api.constants import CLAIM_PLURAL, GROUP, LOCK_PLURAL, POLICY_PLURAL, VERSION


def _ns(namespace: str | None) -> str:
    return f"/namespaces/{quote(namespace, safe='')}" if namespace else ""


def _name(name: str | None) -> str:
    return f"/{quote(name, safe='')}" if name else ""


def claims(namespace: str | None = None, name: str | None = None, *, status: bool = False) -> str:
    path = f"/apis/{GROUP}/{VERSION}{_ns(namespace)}/{CLAIM_PLURAL}{_name(name)}"
    return path + "/status" if status else path


def locks(namespace: str | None = None, name: str | None = None) -> str:
    return f"/apis/{GROUP}/{VERSION}{_ns(namespace)}/{LOCK_PLURAL}{_name(name)}"


def policies(namespace: str | None = None, name: str | None = None, *, status: bool = False) -> str:
    path = f"/apis/{GROUP}/{VERSION}{_ns(namespace)}/{POLICY_PLURAL}{_name(name)}"
    return path + "/status" if status else path


def pods(namespace: str | None = None, name: str | None = None) -> str:
    return f"/api/v1{_ns(namespace)}/pods{_name(name)}"


def events(namespace: str) -> str:
    return f"/api/v1{_ns(namespace)}/events"


def self_subject_review() -> str:
    return "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def self_subject_access_review() -> str:
    return "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def namespace(name: str) -> str:
    return f"/api/v1/namespaces/{quote(name, safe='')}"


def leases(namespace: str | None = None, name: str | None = None) -> str:
    return f"/apis/coordination.k8s.io/v1{_ns(namespace)}/leases{_name(name)}"


def field_selector(field: str, value: str) -> str:
    """`field=value` for a `fieldSelector`, the value escaped as the API server parses it (`\\`, `,`
    and `=` are special there; `:` and `/`, as in a resource URI, are not)."""
    escaped = value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    return f"{field}={escaped}"
