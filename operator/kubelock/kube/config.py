"""Where the API server is and how to authenticate: a kubeconfig reader of kubelock's own.

Why not the official `kubernetes` client: it is 126 MB installed, and it reduces a kubeconfig to fixed
credentials, so exec plugins ran once and rotated token files were read once. This module reads what
client-go reads (contexts, clusters, users; CA, client certificate and key as files or data; `token`,
`tokenFile`; exec plugins speaking client.authentication.k8s.io/v1 or v1beta1; basic auth;
insecure-skip-tls-verify; tls-server-name; impersonation with `as`, `as-uid`, `as-groups` and
`as-user-extra`; KUBECONFIG with several files, the first to name an entry winning) and, inside a pod,
the ServiceAccount's files. Credentials are refreshed in
`kubelock.kube.auth`, as client-go refreshes them.

Not supported, with an error naming the field: `auth-provider` (legacy in-tree plugins; use an exec
plugin such as kubelogin or gke-gcloud-auth-plugin) and `proxy-url`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class ConfigError(ValueError):
    """A kubeconfig that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ExecConfig:
    """An exec credential plugin (kubeconfig `users[].user.exec`)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    interactive_mode: str = "IfAvailable"  # Never, IfAvailable or Always
    install_hint: str = ""
    cluster_info: Mapping[str, Any] | None = None  # sent to the plugin when provideClusterInfo is true


# The characters an HTTP header name may hold (RFC 9110 `tchar`); client-go percent-encodes every
# other byte of a user-extra key, and so must we, or the API server reads another key.
_TOKEN_CHARS = frozenset(b"!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# What no header value may hold: a CR or LF would end the header and begin another (aiohttp refuses
# to send them, with a ValueError deep in the request), the other controls are refused by servers.
HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Impersonation:
    """Whom the requests act as (kubeconfig `as`, `as-uid`, `as-groups`, `as-user-extra`, or the
    commands' --as, --as-uid and --as-group, as kubectl). The API server checks that the credentials
    may impersonate them, and then authorizes each request, admission included, as that user."""

    user: str
    uid: str | None = None
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        """Refuse values that cannot go into a header (a line break would be taken for a header
        injection and end every request in a ValueError), so the caller learns which value is wrong."""
        values = [("user", self.user), ("uid", self.uid or "")]
        values += [("group", group) for group in self.groups]
        for key, extras in self.extra:
            values += [("user-extra key", key)] + [(f"user-extra {key!r}", value) for value in extras]
        for what, value in values:
            if HEADER_UNSAFE.search(value):
                raise ValueError(f"the impersonated {what} {value!r} contains a control character (a line break, "
                                 "tab or escape), which cannot be sent in a request header")

    def headers(self) -> list[tuple[str, str]]:
        pairs = [("Impersonate-User", self.user)]
        if self.uid:
            pairs.append(("Impersonate-Uid", self.uid))
        pairs += [("Impersonate-Group", group) for group in self.groups]
        for key, values in self.extra:
            escaped = "".join(chr(b) if b in _TOKEN_CHARS else f"%{b:02X}" for b in key.encode())
            pairs += [(f"Impersonate-Extra-{escaped}", value) for value in values]
        return pairs


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None  # re-read at least every minute and after a 401 (projected tokens rotate)
    exec: ExecConfig | None = None
    username: str | None = None
    password: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    namespace: str = "default"
    in_cluster: bool = False
    impersonate: Impersonation | None = None
    # Files written for `*-data` fields: private to this process (mode 0600), removed at exit.
    _temporary: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def bearer(self) -> str | None:
        """The static or file token as it is now (exec plugins: see kubelock.kube.auth)."""
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return self.token

    def ssl_context(self, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert, key = cert_file or self.cert_file, key_file or self.key_file
        if cert and key:
            ctx.load_cert_chain(cert, key)
        return ctx


def in_cluster(env: Mapping[str, str] | None = None, sa_dir: Path = SA_DIR) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and (sa_dir / "token").exists()


def load(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    sa_dir: Path = SA_DIR,
) -> Credentials:
    """Credentials from `kubeconfig` (else $KUBECONFIG, else ~/.kube/config), or inside a pod (no
    kubeconfig given) from its ServiceAccount."""
    env = os.environ if env is None else env
    explicit = str(kubeconfig) if kubeconfig else env.get("KUBECONFIG")
    if not explicit and in_cluster(env, sa_dir):
        return load_in_cluster(env, sa_dir)
    paths = [p for p in (explicit or "").split(os.pathsep) if p] or [os.path.expanduser("~/.kube/config")]
    existing = [p for p in paths if os.path.exists(p)]
    if not existing:
        raise FileNotFoundError(
            f"no kubeconfig at {', '.join(paths)} and not running in a pod; pass --kubeconfig or set KUBECONFIG"
        )
    return from_documents([(p, _read_yaml(p)) for p in existing], context)


def load_in_cluster(env: Mapping[str, str] | None = None, sa_dir: Path = SA_DIR) -> Credentials:
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("not in a pod: KUBERNETES_SERVICE_HOST is not set")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    namespace_file = sa_dir / "namespace"
    ca = sa_dir / "ca.crt"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token_file=str(sa_dir / "token"),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
        in_cluster=True,
    )


def _read_yaml(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read kubeconfig {path}: {error}") from None
    except RecursionError:
        raise ConfigError(f"cannot read kubeconfig {path}: its YAML is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    return data


def _named(documents: Sequence[tuple[str, Mapping[str, Any]]], section: str, key: str) -> dict[str, tuple[str, Any]]:
    """Entries of `section` by name, with the file that defined them; the first file wins (as kubectl)."""
    found: dict[str, tuple[str, Any]] = {}
    for path, doc in documents:
        for entry in doc.get(section) or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                value = entry.get(key) or {}
                if not isinstance(value, dict):
                    raise ConfigError(f"kubeconfig {path}: the {key} of {section} entry {entry['name']!r} must be a "
                                      f"mapping, not {type(value).__name__}")
                found.setdefault(entry["name"], (path, value))
    return found


def from_documents(documents: Sequence[tuple[str, Mapping[str, Any]]], context: str | None = None) -> Credentials:
    """Credentials from parsed kubeconfig documents (`[(path, document)]`, in KUBECONFIG order)."""
    where = ", ".join(p for p, _ in documents)
    current = context or next((d["current-context"] for _, d in documents if d.get("current-context")), None)
    if not current:
        raise ConfigError(f"kubeconfig {where} has no current-context; pass --context")
    contexts = _named(documents, "contexts", "context")
    if current not in contexts:
        # Name the ones it has: a mistyped --context (or a current-context left behind by a deleted
        # cluster) is then fixed without reading the file.
        known = ", ".join(repr(name) for name in sorted(contexts)) or "none"
        raise ConfigError(f"kubeconfig {where} has no context {current!r} (its contexts: {known}); "
                          "pass --context with one of them")
    ctx = contexts[current][1]
    clusters = _named(documents, "clusters", "cluster")
    users = _named(documents, "users", "user")
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in clusters:
        raise ConfigError(f"context {current!r} names cluster {cluster_name!r}, which kubeconfig {where} lacks")
    cluster_path, cluster = clusters[cluster_name]
    user_path, user = users.get(user_name, (cluster_path, {})) if user_name else (cluster_path, {})
    if user_name and user_name not in users:
        raise ConfigError(f"context {current!r} names user {user_name!r}, which kubeconfig {where} lacks")
    return _credentials(cluster_path, cluster, user_path, user, ctx.get("namespace") or "default")


def _credentials(
    cluster_path: str, cluster: Mapping[str, Any], user_path: str, user: Mapping[str, Any], namespace: str
) -> Credentials:
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"kubeconfig {cluster_path}: the cluster has no server")
    for unsupported in ("proxy-url",):
        if cluster.get(unsupported):
            raise ConfigError(f"kubeconfig {cluster_path}: cluster field {unsupported} is not supported by kubelock")
    if user.get("auth-provider"):
        name = (user.get("auth-provider") or {}).get("name", "?")
        raise ConfigError(
            f"kubeconfig {user_path}: auth-provider {name!r} is not supported; use an exec credential plugin "
            "(for example kubelogin, gke-gcloud-auth-plugin or aws eks get-token)"
        )
    # Read as kubectl reads them: a field of the wrong type refuses the kubeconfig. Above all a quoted
    # `insecure-skip-tls-verify: "false"`, a non-empty string, must not turn verification off.
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"kubeconfig {cluster_path}: insecure-skip-tls-verify must be true or false (a YAML "
                          f"boolean, unquoted), not {insecure!r}")
    for path, section, names in ((cluster_path, cluster, ("certificate-authority", "certificate-authority-data",
                                                          "tls-server-name")),
                                 (user_path, user, ("token", "tokenFile", "username", "password", "client-certificate",
                                                    "client-certificate-data", "client-key", "client-key-data"))):
        for name in names:
            if section.get(name) is not None and not isinstance(section.get(name), str):
                raise ConfigError(f"kubeconfig {path}: {name} must be a string, not {section.get(name)!r}")
    if user.get("token") and not user["token"].strip():
        # Sent as it is, a blank token is no credential: the API server would serve it as system:anonymous.
        raise ConfigError(f"kubeconfig {user_path}: token is blank (only whitespace): no token to send")
    temporary: list[str] = []
    ca = _file_or_data(cluster_path, cluster, "certificate-authority", temporary)
    cert = _file_or_data(user_path, user, "client-certificate", temporary)
    key = _file_or_data(user_path, user, "client-key", temporary)
    token_file = user.get("tokenFile")
    exec_config = _exec(user_path, user.get("exec"), cluster) if user.get("exec") else None
    impersonate = _impersonation(user_path, user)
    return Credentials(
        server=server.rstrip("/"),
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        token=user.get("token") or None,
        token_file=_resolve(user_path, token_file) if token_file else None,
        exec=exec_config,
        username=user.get("username") or None,
        password=user.get("password") or None,
        insecure=insecure,
        tls_server_name=cluster.get("tls-server-name") or None,
        namespace=namespace,
        impersonate=impersonate,
        _temporary=tuple(temporary),
    )


def _impersonation(path: str, user: Mapping[str, Any]) -> Impersonation | None:
    """The user entry's `as`, `as-uid`, `as-groups` and `as-user-extra`, checked as kubectl does: a
    uid, groups or extra without a user to act as is refused, not ignored."""
    name, uid, groups, extra = user.get("as"), user.get("as-uid"), user.get("as-groups"), user.get("as-user-extra")
    if not name:
        if uid or groups or extra:
            raise ConfigError(f"kubeconfig {path}: as-uid, as-groups or as-user-extra are given without as "
                              "(the user to act as)")
        return None
    if not isinstance(name, str):
        raise ConfigError(f"kubeconfig {path}: as must be a user name (a string)")
    if uid is not None and not isinstance(uid, str):
        raise ConfigError(f"kubeconfig {path}: as-uid must be a string")
    if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) and g for g in groups)):
        raise ConfigError(f"kubeconfig {path}: as-groups must be a list of group names")
    if extra is not None and not (
        isinstance(extra, dict)
        and all(isinstance(k, str) and k and isinstance(v, list) and all(isinstance(x, str) for x in v)
                for k, v in extra.items())
    ):
        raise ConfigError(f"kubeconfig {path}: as-user-extra must map names to lists of strings")
    try:
        return Impersonation(
            user=name,
            uid=uid or None,
            groups=tuple(groups or ()),
            extra=tuple((k, tuple(v)) for k, v in sorted((extra or {}).items())),
        )
    except ValueError as error:
        raise ConfigError(f"kubeconfig {path}: {error}") from None


def _resolve(kubeconfig_path: str, path: str) -> str:
    """Relative paths in a kubeconfig are relative to the file's own directory."""
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.join(os.path.dirname(os.path.abspath(kubeconfig_path)),
                                                               expanded)


def _file_or_data(path: str, section: Mapping[str, Any], name: str, temporary: list[str]) -> str | None:
    data = section.get(f"{name}-data")
    if data:
        try:
            raw = base64.b64decode(data, validate=True)
        except (ValueError, TypeError):
            raise ConfigError(f"kubeconfig {path}: {name}-data is not valid base64") from None
        return private_file(raw, name, temporary)
    value = section.get(name)
    return _resolve(path, value) if value else None


def private_file(content: bytes, name: str, temporary: list[str] | None = None) -> str:
    """`content` in a file only this user can read (ssl loads certificates and keys from files only)."""
    fd, file_path = tempfile.mkstemp(prefix=f"kubelock-{name}-")
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    _remove_at_exit(file_path)
    if temporary is not None:
        temporary.append(file_path)
    return file_path


def _remove_at_exit(path: str) -> None:
    def remove() -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    atexit.register(remove)


def _exec(path: str, raw: Any, cluster: Mapping[str, Any]) -> ExecConfig:
    if not isinstance(raw, dict) or not raw.get("command"):
        raise ConfigError(f"kubeconfig {path}: user.exec needs a command")
    api_version = raw.get("apiVersion") or EXEC_API_VERSIONS[0]
    if api_version not in EXEC_API_VERSIONS:
        raise ConfigError(
            f"kubeconfig {path}: exec apiVersion {api_version!r} is not supported; use one of "
            + ", ".join(EXEC_API_VERSIONS)
        )
    command = str(raw["command"])
    if os.sep in command:  # a bare name is looked up on PATH; a path is relative to the kubeconfig
        command = _resolve(path, command)
    env = tuple((str(e.get("name")), str(e.get("value", ""))) for e in raw.get("env") or [] if isinstance(e, dict))
    cluster_info = None
    if raw.get("provideClusterInfo"):
        cluster_info = {
            k: v
            for k, v in (
                ("server", cluster.get("server")),
                ("certificate-authority-data", cluster.get("certificate-authority-data")),
                ("insecure-skip-tls-verify", cluster.get("insecure-skip-tls-verify")),
                ("tls-server-name", cluster.get("tls-server-name")),
            )
            if v
        }
    return ExecConfig(
        command=command,
        args=tuple(str(a) for a in raw.get("args") or []),
        env=env,
        api_version=api_version,
        interactive_mode=str(raw.get("interactiveMode") or "IfAvailable"),
        install_hint=str(raw.get("installHint") or ""),
        cluster_info=cluster_info,
    )
