"""Credentials as they are now, refreshed the way client-go refreshes them.

- A token file (a pod's projected ServiceAccount token, kubeconfig `tokenFile`) is re-read at least
  once a minute, as client-go's cached file token source does: the kubelet rotates it. An empty (or
  blank) token file is no credential: sent as it is, the request would carry no Authorization header
  and the API server would serve it as `system:anonymous`. So it is refused (`CredentialError`, naming
  the file), and so is one that cannot be read. At a scheduled re-read the last good token is kept
  instead (client-go does the same), and the file is read again `FILE_RETRY_SECONDS` later: the kubelet
  writes a projected token atomically, so a failed read is a moment of a rotation or an operator's
  mistake, and the token in hand is still valid until it expires. After a 401 the token in hand is
  known to be refused, so a file that offers no new one is an error, not a reason to send it again.
- An exec plugin is run again once 80% of its credential's lifetime (`expirationTimestamp`) has
  passed, so a fresh credential is in hand before the old one expires; a credential without an
  expiry is kept until the API server refuses it.
- After a 401 the credential is refreshed (file re-read, plugin re-run) and the request is retried
  once (see `KubeClient`).

One `Authenticator` serves one event loop; concurrent requests share a single refresh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubelock.domain.timefmt import parse_rfc3339
from kubelock.kube.config import HEADER_UNSAFE, Credentials, ExecConfig, private_file
from kubelock.kube.errors import Unreachable

log = logging.getLogger("kubelock.auth")

FILE_TOKEN_SECONDS = 60.0
FILE_RETRY_SECONDS = 10.0  # a token file whose re-read failed while a good token is kept
REFRESH_AT = 0.8  # of an exec credential's lifetime
EXEC_TIMEOUT_SECONDS = 60.0


class CredentialError(Unreachable):
    """No usable credential could be obtained (an exec plugin failed, a token file is unreadable)."""

    permanent = True


class Authenticator:
    def __init__(self, credentials: Credentials, *, clock: Callable[[], float] = time.time) -> None:
        self.credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._token_file_token: str | None = None  # the last good token read from the token file
        self._refresh_at: float | None = None  # wall time; None: no scheduled refresh
        self._expires_at: float | None = None  # wall time the current credential stops working
        self._cert: tuple[str, str] | None = None  # an exec plugin's client certificate and key (files)
        self._lock: asyncio.Lock | None = None
        self._loaded = False
        self.cert_changes = 0  # bumped when the client certificate changes: TLS sessions must be rebuilt
        self.refreshes = 0

    @property
    def refreshable(self) -> bool:
        return self.credentials.exec is not None or self.credentials.token_file is not None

    @property
    def expires_at(self) -> float | None:
        """When the current credential stops working (wall time), when known."""
        return self._expires_at

    def refresh_deadline(self) -> datetime | None:
        """When the credential in hand should be replaced: for kopf's `ConnectionInfo.expiration`."""
        return None if self._refresh_at is None else datetime.fromtimestamp(self._refresh_at, UTC)

    def client_certificate(self) -> tuple[str, str] | None:
        """(certificate file, key file) to present, from the kubeconfig or the exec plugin."""
        if self._cert is not None:
            return self._cert
        c = self.credentials
        return (c.cert_file, c.key_file) if c.cert_file and c.key_file else None

    async def token(self) -> str | None:
        """The bearer token to send now (refreshing it first when it is due)."""
        if not self._loaded or self._due():
            await self.refresh()
        return self._token

    async def headers(self) -> dict[str, str]:
        token = await self.token()
        if token:
            return {"Authorization": f"Bearer {token}"}
        c = self.credentials
        if c.username and c.password:
            raw = f"{c.username}:{c.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    async def refresh(self, *, rejected: str | None = None, force: bool = False) -> bool:
        """Obtain the credential again. `rejected`: the token a 401 refused (a concurrent refresh may
        already have replaced it); `force`: reload even if the credential in hand is not due.
        True when a retry may succeed where the last request failed."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._loaded and rejected is not None and self._token != rejected:
                return True  # another request refreshed it meanwhile
            if self._loaded and rejected is None and not force and not self._due():
                return False  # refreshed by another request while this one waited for the lock
            await self._load(keep_on_failure=rejected is None)
            self._loaded = True
            self.refreshes += 1
            return self.refreshable

    def _due(self) -> bool:
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    async def _load(self, *, keep_on_failure: bool) -> None:
        """Obtain the credential. `keep_on_failure`: a token file that cannot give a token now leaves
        the good token in hand (a scheduled re-read, not the answer to a 401)."""
        c = self.credentials
        if c.exec is not None:
            await self._run_exec(c.exec)
            return
        if c.token_file:
            try:
                token = await asyncio.to_thread(read_token_file, c.token_file)
            except CredentialError as error:
                if not keep_on_failure or self._token_file_token is None:
                    raise
                log.warning("%s; keeping the token read before and trying again in %.0f s",
                            error, FILE_RETRY_SECONDS)
                self._refresh_at = self._clock() + FILE_RETRY_SECONDS
                return
            self._token = self._token_file_token = token
            self._refresh_at = self._clock() + FILE_TOKEN_SECONDS
            return
        self._token = _bearer(c.token, "the kubeconfig's token")
        self._refresh_at = None

    async def _run_exec(self, plugin: ExecConfig) -> None:
        interactive = plugin.interactive_mode != "Never" and sys.stdin is not None and sys.stdin.isatty()
        if plugin.interactive_mode == "Always" and not interactive:
            raise CredentialError(
                f"exec plugin {plugin.command} needs a terminal (interactiveMode: Always) and there is none"
            )
        spec: dict[str, object] = {"interactive": interactive}
        if plugin.cluster_info is not None:
            spec["cluster"] = dict(plugin.cluster_info)
        info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            process = await asyncio.create_subprocess_exec(
                plugin.command,
                *plugin.args,
                env=env,
                stdin=None if interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
            async with asyncio.timeout(EXEC_TIMEOUT_SECONDS):
                out, _ = await process.communicate()
        except FileNotFoundError:
            hint = f" ({plugin.install_hint.strip()})" if plugin.install_hint else ""
            raise CredentialError(f"exec plugin {plugin.command} not found{hint}") from None
        except TimeoutError:
            process.kill()
            raise CredentialError(f"exec plugin {plugin.command} gave no credential within "
                                  f"{EXEC_TIMEOUT_SECONDS:g}s") from None
        if process.returncode != 0:
            raise CredentialError(f"exec plugin {plugin.command} failed with exit code {process.returncode}")
        self._accept(plugin, out)

    def _accept(self, plugin: ExecConfig, out: bytes) -> None:
        try:
            credential = json.loads(out)
            status = credential["status"]
        except (ValueError, KeyError, TypeError):
            raise CredentialError(f"exec plugin {plugin.command} printed no ExecCredential with a status") from None
        if credential.get("apiVersion") != plugin.api_version:
            raise CredentialError(
                f"exec plugin {plugin.command} answered apiVersion {credential.get('apiVersion')!r}, "
                f"not {plugin.api_version!r}"
            )
        token = status.get("token") or None
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if not token and not (cert and key):
            raise CredentialError(f"exec plugin {plugin.command} returned neither a token nor a client certificate")
        self._token = _bearer(token, f"the token of exec plugin {plugin.command}")
        if cert and key:
            pair = (private_file(cert.encode(), "exec-cert"), private_file(key.encode(), "exec-key"))
            if self._cert is not None:
                for path in self._cert:
                    _unlink(path)
            self._cert = pair
            self.cert_changes += 1
        now = self._clock()
        expiry = _parse_time(status.get("expirationTimestamp"))
        self._expires_at = expiry
        self._refresh_at = None if expiry is None else now + max(0.0, expiry - now) * REFRESH_AT


def _bearer(token: str | None, source: str) -> str | None:
    """A token as it may go into the Authorization header: a line break or another control character
    inside it (a token file being rewritten, a pasted token) would end every request in a ValueError."""
    if token and HEADER_UNSAFE.search(token):
        raise CredentialError(f"{source} contains a control character (a line break, tab or escape) inside the "
                              "token, so it is not a bearer token")
    return token


def read_token_file(path: str) -> str:
    """The bearer token in the file at `path` (surrounding whitespace removed, as client-go does).
    Refused (`CredentialError`, naming the file) when it cannot be read, is not text, or holds no
    token: an empty token would send the request without credentials, as `system:anonymous`."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as error:
        raise CredentialError(f"cannot read the token file {path}: {error}") from None
    except UnicodeDecodeError:
        raise CredentialError(f"the token file {path} is not text (UTF-8): not a bearer token") from None
    if not token:
        raise CredentialError(f"the token file {path} is empty: no token to send (without one the request would "
                              "be made as system:anonymous), so nothing was sent")
    bearer = _bearer(token, f"the token file {path}")
    assert bearer is not None
    return bearer


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value).timestamp()
    except ValueError:
        raise CredentialError(f"exec credential expirationTimestamp {value!r} is not RFC 3339") from None
