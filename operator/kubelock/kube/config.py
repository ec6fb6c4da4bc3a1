"""Where the API server is and how to authenticate, from a kubeconfig or from inside a pod.

The official `kubernetes` client does the reading (kubeconfig contexts, exec plugins, in-cluster
token files); kubelock only takes the resulting server, CA and credentials.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None  # re-read on every request (projected tokens rotate)
    insecure: bool = False
    namespace: str = "default"

    def bearer(self) -> str | None:
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").exists()


def load(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> Credentials:
    """Credentials from `kubeconfig` (or $KUBECONFIG / ~/.kube/config), else the pod's ServiceAccount."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    cfg = k8s_client.Configuration()
    explicit = kubeconfig or os.environ.get("KUBECONFIG")
    if not explicit and in_cluster():
        k8s_config.load_incluster_config(client_configuration=cfg)
        namespace = (SA_DIR / "namespace").read_text().strip()
        return Credentials(
            server=cfg.host,
            ca_file=cfg.ssl_ca_cert,
            token_file=str(SA_DIR / "token"),
            namespace=namespace,
        )
    path = str(explicit) if explicit else os.path.expanduser("~/.kube/config")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no kubeconfig at {path} and not running in a pod; pass --kubeconfig or set KUBECONFIG"
        )
    k8s_config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    _, active = k8s_config.list_kube_config_contexts(config_file=path)
    namespace = (active or {}).get("context", {}).get("namespace") or "default"
    if context:
        contexts, _ = k8s_config.list_kube_config_contexts(config_file=path)
        for ctx in contexts:
            if ctx["name"] == context:
                namespace = ctx["context"].get("namespace") or "default"
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    token = auth.split(" ", 1)[1] if auth and " " in auth else auth
    return Credentials(
        server=cfg.host,
        ca_file=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        token=token,
        insecure=not cfg.verify_ssl,
        namespace=namespace,
    )
