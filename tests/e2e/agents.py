"""Agent pods for the end-to-end tests: real containers of the agent image that run the CLI
(`rlock`, `rlock-heartbeat`, `runlock`) exactly as docs/SKILL.md tells an agent to, with their
ServiceAccount bound to the chart's kubelock-agent role and the pod wiring docs/sdk.md documents
(the `kubelock.dev/lock-holder` label, POD_NAME/POD_UID/POD_NAMESPACE from the downward API).

Each pod runs a shell script; every CLI call's JSON output is followed by a line `exit=<code>`, so
the test reads from `kubectl logs` what the agent saw.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from tests.e2e.tools import Tools

Obj = dict[str, Any]
T = TypeVar("T")
HOLDER_LABEL = "kubelock.dev/lock-holder"


def poll(value: Callable[[], T], what: str, timeout: float, interval: float = 0.2) -> T:
    """The first truthy result of `value`."""
    deadline = time.monotonic() + timeout
    while True:
        result = value()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def access_objects(namespace: str) -> list[Obj]:
    """The agents' ServiceAccount, bound to the chart's kubelock-agent ClusterRole."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent", "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "agent-locks", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubelock-agent"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}],
        },
    ]


def agent_pod(namespace: str, name: str, image: str, script: str) -> Obj:
    env = [
        {"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for var, path in (("POD_NAME", "metadata.name"), ("POD_UID", "metadata.uid"),
                          ("POD_NAMESPACE", "metadata.namespace"))
    ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {HOLDER_LABEL: "true"}},
        "spec": {
            "serviceAccountName": "agent",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "agent",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "env": env,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def run(command: str) -> str:
    """A shell line that runs one CLI command and records its exit code."""
    return f'{command}; echo "exit=$?"'


SLEEP = "exec sleep 3600"


@dataclass
class Agents:
    """Agent pods in one namespace of the cluster."""

    tools: Tools
    namespace: str
    image: str

    def start(self, name: str, *lines: str) -> str:
        script = "\n".join(lines)
        return self.start_pod(agent_pod(self.namespace, name, self.image, script))

    def start_pod(self, pod: Obj) -> str:
        self.tools.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pod))
        return str(pod["metadata"]["name"])

    def outputs(self, pod: str, container: str | None = None, *, previous: bool = False) -> list[tuple[Obj, int]]:
        """(JSON output, exit code) of each CLI call the pod (its `container`; with `previous`, that
        container's run before its last restart) has finished."""
        which = ["--container", container] if container else []
        before = ["--previous"] if previous else []
        result = self.tools.run("kubectl", "logs", pod, "--namespace", self.namespace, *which, *before)
        if result.returncode != 0:
            return []
        lines = result.stdout.splitlines()
        calls: list[tuple[Obj, int]] = []
        output: Obj = {}
        for line in lines:
            if line.startswith("{"):
                output = json.loads(line)
            elif line.startswith("exit="):
                calls.append((output, int(line.removeprefix("exit="))))
                output = {}
        return calls

    def wait_outputs(self, pod: str, count: int, timeout: float = 60, container: str | None = None,
                     *, previous: bool = False) -> list[tuple[Obj, int]]:
        return poll(lambda: (o := self.outputs(pod, container, previous=previous)) and len(o) >= count and o,
                    f"{count} results of {pod} {container or ''}", timeout)  # fmt: skip

    def kill(self, pod: str) -> None:
        self.tools.kubectl("delete", "pod", pod, "--namespace", self.namespace, "--grace-period=0", "--force",
                           "--wait=false")  # fmt: skip

    def phase(self, pod: str) -> str:
        return self.tools.kubectl("get", "pod", pod, "-n", self.namespace, "-o", "jsonpath={.status.phase}")

    def claims(self) -> list[Obj]:
        items: list[Obj] = json.loads(self.tools.kubectl("get", "lockclaims", "-n", self.namespace, "-o", "json"))[
            "items"
        ]
        return items

    def holder(self, pod: str, container: str = "agent") -> str:
        """The holder an agent in `container` of `pod` claims as:
        `pod:<namespace>/<pod>/<first 8 characters of its uid>.<container>`."""
        uid = self.tools.kubectl("get", "pod", pod, "-n", self.namespace, "-o", "jsonpath={.metadata.uid}")
        return f"pod:{self.namespace}/{pod}/{uid[:8]}.{container}"

    def claim_of(self, pod: str, resource: str) -> Obj | None:
        """The claim the agent in `pod` made on `resource` (found by its podRef)."""
        return next(
            (
                c
                for c in self.claims()
                if (c["spec"].get("podRef") or {}).get("name") == pod and c["spec"]["resource"] == resource
            ),
            None,
        )

    def phase_of(self, pod: str, resource: str) -> str | None:
        claim = self.claim_of(pod, resource)
        return None if claim is None else (claim.get("status") or {}).get("phase")


@contextlib.contextmanager
def agents_namespace(tools: Tools, image: str, prefix: str) -> Iterator[Agents]:
    """A fresh namespace with the agents' ServiceAccount; deleted afterwards."""
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    tools.kubectl("create", "namespace", namespace)
    try:
        tools.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(access_objects(namespace)))
        yield Agents(tools, namespace, image)
    finally:
        tools.run("kubectl", "delete", "namespace", namespace, "--wait=false")
