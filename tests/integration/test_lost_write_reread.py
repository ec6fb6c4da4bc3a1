"""A status write that loses to a write the claim watch has already brought is decided again on the
cache, without a GET of the claim (`kubelock.operator.moved`); against the real API server, with the
operator's half in-process (`Runtime`). The other write is made by the test while the operator's is
on its way: the API server answers the operator's with a real 409."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.client import ApiClient

from kubelock.domain.clock import SystemClock
from kubelock.kube import config, paths
from kubelock.operator.runtime import Runtime
from kubelock.operator.settings import Settings
from tests.support.claims import GROUP, VERSION, Locks, phase_of, wait_until_async

R = "deploy://lost-write"


def test_a_status_write_that_lost_to_a_write_the_watch_brought_is_not_read_back(
    control_plane, admin_api: ApiClient, iso_ns: str  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    status_path = paths.claims(iso_ns, "c1", status=True)
    claim_path = paths.claims(iso_ns, "c1")

    def touch() -> None:  # another writer's change of the claim (an annotation: no change of what it asks)
        patch = {"metadata": {"annotations": {"example.com/touched": "yes"}}}
        locks.api.patch_namespaced_custom_object(GROUP, VERSION, iso_ns, "lockclaims", "c1", patch)

    async def scenario() -> tuple[list[str], list[str]]:
        settings = Settings(namespaces=(iso_ns,), kubeconfig=str(control_plane.kubeconfig))
        runtime = Runtime(settings, config.load(str(control_plane.kubeconfig)), SystemClock())
        client = runtime.client
        replace, get = client.replace, client.get
        conflicts: list[str] = []
        reads_after: list[str] = []

        async def replace_after_another_write(path: str, body: dict[str, Any]) -> Any:
            if path == status_path and not conflicts:
                written_on = int(body["metadata"]["resourceVersion"])
                uid = body["metadata"]["uid"]
                await asyncio.to_thread(touch)

                def cache_has_it() -> bool:
                    record = runtime.cache.claims.get(uid)
                    return record is not None and int(record.resource_version) > written_on

                await wait_until_async(cache_has_it, "the other write's watch event in the cache")
                try:
                    return await replace(path, body)
                except Exception as error:
                    conflicts.append(type(error).__name__)
                    raise
            return await replace(path, body)

        async def recording_get(path: str, **params: Any) -> Any:
            if conflicts and path == claim_path:
                reads_after.append(path)
            return await get(path, **params)

        client.replace = replace_after_another_write  # type: ignore[method-assign]
        client.get = recording_get  # type: ignore[method-assign]
        await runtime.start()
        try:
            await asyncio.to_thread(locks.claim, "c1", R, "agent-1")
            await wait_until_async(lambda: phase_of(locks.get("c1")) == "Held", "the grant, told on the second write")
            return conflicts, reads_after
        finally:
            await runtime.stop()

    conflicts, reads_after = asyncio.run(scenario())
    assert conflicts == ["Conflict"], "the first status write lost to the other write"
    assert reads_after == [], "decided again on the cache, not on a GET of the claim"
