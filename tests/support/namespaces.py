"""Namespaces for tests that run their own operator (named so that only that operator watches them)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from kubernetes.client import ApiClient, ApiException, CoreV1Api, V1Namespace, V1ObjectMeta


def new_namespace(admin_api: ApiClient, prefix: str) -> str:
    name = f"{prefix}{secrets.token_hex(4)}"
    CoreV1Api(admin_api).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))
    return name


@contextlib.contextmanager
def temporary_namespace(admin_api: ApiClient, prefix: str) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (without waiting for it to go)."""
    name = new_namespace(admin_api, prefix)
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            CoreV1Api(admin_api).delete_namespace(name)
