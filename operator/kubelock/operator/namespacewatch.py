"""Which namespaces are gone, for the metrics: a watch of Namespaces whose DELETED events drop the
namespace's series (`Metrics.drop_namespaces`), as kube-state-metrics does.

Why a watch, not the cache: a namespace with no claims left is not a deleted one (an idle team's
namespace keeps its counts), and a namespace deleted while it held no claim leaves no trace in the
claim, lock or policy watches. A DELETED event comes once the namespace controller has removed
everything in it, so no write of the operator into it succeeds afterwards, and no count of the old
namespace comes after its series went (the reconciler counts only writes the API server took).

Nothing is read per scrape, and nothing is kept per namespace: the stream is the shared `ListWatch`
(resumed where it broke; after a 410 Gone, listed again). A LIST drops the series of namespaces that
had some before it began and are not in it: they were deleted while the watch was not looking. One
that got its first series after the LIST began may be newer than the LIST, and is left alone. With no
series at all (the start), a one-item LIST gives the version to watch from, not every namespace.

Several replicas each watch and each drop their own series. An operator given exact namespaces
(`--namespace` without patterns) has a fixed set of series and runs no such watch.
"""

from __future__ import annotations

import logging

from kubelock.api import objects
from kubelock.kube.client import KubeClient
from kubelock.operator.metrics import Metrics
from kubelock.operator.watches import Body, ListWatch, QuietSink

log = logging.getLogger("kubelock.metrics")
NAMESPACES = "/api/v1/namespaces"


class NamespaceSink(QuietSink):
    """The namespace watch's sink: it only drops series."""

    def __init__(self, client: KubeClient, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    def event(self, scope: str | None, kind: str, body: Body) -> None:
        if kind != "DELETED":
            return
        name = str((body.get("metadata") or {}).get("name", ""))
        removed = self._metrics.drop_namespaces([name])
        if removed:
            log.debug("namespace %s deleted: %d metric series dropped", name, removed)

    async def relist(self, scope: str | None) -> int:
        had = self._metrics.namespaces()  # before the LIST: each of these existed before it began
        if not had:
            answer = await self._client.list(NAMESPACES, limit=1)
            return objects.revision(answer)
        bodies, version = await self._client.list_all(NAMESPACES)
        listed = {str((b.get("metadata") or {}).get("name", "")) for b in bodies}
        removed = self._metrics.drop_namespaces(had - listed)
        if removed:
            log.info("%d metric series of %d deleted namespaces dropped", removed, len(had - listed))
        return objects.revision_of(version)


def watch(client: KubeClient, metrics: Metrics) -> ListWatch:
    return ListWatch(client, NAMESPACES, "namespace", None, NamespaceSink(client, metrics))
