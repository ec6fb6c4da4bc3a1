"""`kubelock status -n NAMESPACE` of a namespace that does not exist, against the real API server: it
lists nothing there rather than saying so, so the command asks, and says the namespace does not exist
(exit 2, `NamespaceNotFound`) instead of "no locks held", which would hide a typo. An identity that may
not read namespaces (kubelock's roles do not grant it) is answered as before: the API server's own
refusal where it may not list, "no locks held" where it may."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from kubelock.cli.exitcodes import ExitCode
from tests.support.access import bind, wait_allowed
from tests.support.commands import environment, run


def test_status_of_a_namespace_that_does_not_exist_says_so(
    control_plane: Any, admin_api: Any, namespace: str, tmp_path: Path
) -> None:
    missing = f"kl-nosuch-{secrets.token_hex(3)}"
    admin = control_plane.kubeconfig

    gone = run("kubelock", "status", "-n", missing, env=environment(admin, namespace))
    assert gone.code == ExitCode.NOT_FOUND, (gone.code, gone.stdout, gone.stderr)
    assert f"namespace {missing} does not exist" in gone.stderr, gone.stderr
    assert "no locks held" not in gone.stdout + gone.stderr
    as_json = run("kubelock", "status", "-n", missing, "--json", env=environment(admin, namespace))
    assert as_json.code == ExitCode.NOT_FOUND, as_json
    assert as_json.json["error"] == "NamespaceNotFound", as_json.json

    # An existing namespace without locks is what it was.
    empty = run("kubelock", "status", env=environment(admin, namespace))
    assert (empty.code, empty.stdout.strip()) == (ExitCode.OK, f"no locks held in namespace {namespace}"), empty

    # An agent (kubelock-agent in its own namespace only) is refused elsewhere by the API server.
    bind(admin_api, namespace, "kubelock-agent", "alice")
    wait_allowed(admin_api, "alice", namespace, "list", "lockclaims")
    alice = control_plane.user_kubeconfig("alice")
    own = run("kubelock", "status", env=environment(alice, namespace))
    assert own.code == ExitCode.OK, own
    elsewhere = run("kubelock", "status", "-n", missing, env=environment(alice, namespace))
    assert elsewhere.code == ExitCode.FORBIDDEN, (elsewhere.code, elsewhere.stderr)
