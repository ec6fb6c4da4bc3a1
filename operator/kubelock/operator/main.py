"""`kubelock-operator` / `python -m kubelock.operator`: run the operator in the foreground."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
from collections.abc import Sequence

import kopf

from kubelock.domain.clock import SystemClock
from kubelock.operator.handlers import build_registry
from kubelock.operator.metrics import Metrics
from kubelock.operator.runtime import Runtime
from kubelock.operator.start import Start, begin

log = logging.getLogger("kubelock.operator")
# asyncio gives every TLS connection a read buffer of `SSLProtocol.max_size` (256 KiB), allocated and
# zeroed when the connection opens; with the operator's pool of 32 connections kept open after a burst
# of grants, that was 8 MiB of its resident memory. aiohttp reads 64 KiB at a time anyway, and the API
# server's TLS records are at most 16 KiB, so a 64 KiB buffer costs no extra reads worth measuring.
TLS_READ_BUFFER = 64 * 1024


def main(argv: Sequence[str] | None = None, start: Start | None = None) -> None:
    """Run the operator; `start`: the first steps already taken (`kubelock.operator.launch`)."""
    start = start or begin(argv)
    logging.getLogger("kubelock.start").debug("imports done")
    settings, credentials = start.settings, start.credentials
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    metrics = Metrics()
    runtime = Runtime(settings, credentials, SystemClock(), metrics=metrics, prelist=start.prelist)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.metrics_address)
    liveness = f"http://{settings.health_address}/healthz" if settings.health_address else None
    operator = kopf.operator(
        registry=build_registry(runtime),
        standalone=True,  # no peering: replicas are safe because the API server arbitrates every grant
        clusterwide=settings.all_namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
    # The standard event loop: under uvloop, a connection attempt failing while the API server restarts
    # raised "file descriptor is used by transport" out of aiohttp's connector and stopped the operator.
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(operator)
