"""The first steps of the operator's process, taken before kopf and aiohttp are imported: the
settings, the credentials, and the LISTs a start waits for started early (`kubelock.kube.prelist`):
the LockPolicies and the unanswered claims (the early path's inputs, `kubelock.operator.early`) and
the priming LISTs of claims and locks, so that the API server answers them while the rest is
imported."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from kubelock.kube import config, paths
from kubelock.kube.config import Credentials
from kubelock.kube.prelist import Listing, Prelist
from kubelock.operator import logs
from kubelock.operator.settings import Settings, parse

log = logging.getLogger("kubelock.operator")
# The steps of a start, at debug level (`--debug kubelock.start`): where a slow restart's time went.
steps = logging.getLogger("kubelock.start")
# The claims no operator has answered yet: the early path's first LIST (`kubelock.operator.early`).
UNANSWERED = "status.phase="
UNANSWERED_QUERY = {"fieldSelector": UNANSWERED}


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
    steps.debug("settings read")
    try:
        credentials = config.load(settings.kubeconfig, settings.context)
    except Exception as error:  # a missing or broken kubeconfig: say so plainly and stop
        log.error("cannot load Kubernetes credentials: %s", error)
        sys.exit(2)
    if credentials.impersonate is not None:
        # kopf's connection has no impersonation: its watches would run as one user and the
        # operator's writes as another. Refused rather than half applied.
        log.error("cannot run the operator with impersonation (the kubeconfig's user has `as: %s`): give it "
                  "credentials of its own, such as its ServiceAccount's", credentials.impersonate.user)
        sys.exit(2)
    steps.debug("credentials read")
    prelist = Prelist.start(credentials, listings(settings)) if early else None
    steps.debug("priming LISTs started: %s", "from the pre-import threads" if prelist else "no (the event loop lists)")
    return Start(settings, credentials, prelist)


def listings(settings: Settings) -> list[Listing]:
    """What a start lists before the imports, the small LISTs first: each scope's LockPolicies and
    (with the early path) its unanswered claims, which the first decisions wait for; then its locks
    and claims, the priming."""
    small: list[Listing] = []
    for scope in scopes(settings):
        small.append(paths.policies(scope))
        if settings.early_grants:
            small.append((paths.claims(scope), UNANSWERED_QUERY))
    return small + [path for scope in scopes(settings) for path in (paths.locks(scope), paths.claims(scope))]
