"""The first steps of the operator's process, taken before kopf and aiohttp are imported: the
settings, the credentials, and the priming LISTs of claims and locks started early
(`kubelock.kube.prelist`), so that the API server encodes them while the rest is imported."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from kubelock.kube import config, paths
from kubelock.kube.config import Credentials
from kubelock.kube.prelist import Prelist
from kubelock.operator import logs
from kubelock.operator.settings import Settings, parse

log = logging.getLogger("kubelock.operator")


@dataclass
class Start:
    settings: Settings
    credentials: Credentials
    prelist: Prelist | None = None


def scopes(settings: Settings) -> list[str | None]:
    """The scopes the operator lists and watches claims and locks in: each exact namespace, or every
    namespace at once (None) when it watches them all or namespaces matching patterns."""
    namespaces = settings.namespaces
    return list(namespaces) if namespaces and not settings.namespace_patterns else [None]


def begin(argv: Sequence[str] | None = None, *, early: bool = True) -> Start:
    """Parse the settings, read the credentials (exiting with 2 when they cannot be read) and, with
    `early`, start the LISTs of every scope's locks and claims."""
    settings = parse(argv)
    logs.configure(settings.log_format, settings.verbose, settings.debug_loggers)
    try:
        credentials = config.load(settings.kubeconfig, settings.context)
    except Exception as error:  # a missing or broken kubeconfig: say so plainly and stop
        log.error("cannot load Kubernetes credentials: %s", error)
        sys.exit(2)
    listed = [path for scope in scopes(settings) for path in (paths.locks(scope), paths.claims(scope))]
    return Start(settings, credentials, Prelist.start(credentials, listed) if early else None)
