"""What an agent is told when its credentials stop working (a rotated or revoked ServiceAccount
token): a 401 names the credentials, not RBAC, and a lease lost because its renewals were refused
says why instead of asking whether the API server is reachable."""

from __future__ import annotations

from kubelock.kube import errors as kube_errors
from kubelock.sdk.errors import Forbidden, NotFound, Unreachable, from_api
from kubelock.sdk.renewal import ran_out_message


def test_a_401_names_the_credentials_not_the_rights() -> None:
    error = from_api(kube_errors.Unauthorized(401, "Unauthorized", "Unauthorized"), "list locks in agents")
    assert isinstance(error, Forbidden)  # exit code 3, as documented
    assert str(error) == ("cannot list locks in agents: the API server did not accept the credentials "
                          "(401 Unauthorized: an expired or revoked token, or a wrong kubeconfig)")


def test_a_403_still_says_what_was_not_allowed() -> None:
    detail = 'lockclaims.kubelock.dev is forbidden: User "x" cannot create resource "lockclaims"'
    error = from_api(kube_errors.Forbidden(403, "Forbidden", detail), "create claim c")
    assert isinstance(error, Forbidden)
    assert str(error) == f"not allowed to create claim c: {detail}"


def test_a_missing_namespace_is_named_with_where_a_namespace_comes_from() -> None:
    status = {"kind": "Status", "reason": "NotFound", "details": {"name": "agnets", "kind": "namespaces"}}
    error = from_api(kube_errors.NotFound(404, "NotFound", 'namespaces "agnets" not found', status), "create claim c")
    assert isinstance(error, NotFound)  # exit code 2, as before
    assert str(error).startswith("cannot create claim c: namespace agnets does not exist; choose an existing one")
    assert "-n/--namespace, KUBELOCK_NAMESPACE" in str(error)
    other = {"details": {"name": "c", "group": "kubelock.dev", "kind": "lockclaims"}}
    plain = from_api(kube_errors.NotFound(404, "NotFound", 'lockclaims "c" not found', other), "read claim c")
    assert str(plain) == 'cannot read claim c: lockclaims "c" not found'


def test_a_lease_lost_to_refused_renewals_says_what_the_renewal_was_told() -> None:
    refused = "cannot renew the lock on x://r: the API server did not accept the credentials (401 Unauthorized: ...)"
    assert ran_out_message("x://r", renew_deadline=20.0, last_failure=refused) == (
        "no renewal of the lease on x://r succeeded within the renew deadline of 20s "
        f"(the last renewal failed: {refused})"
    )
    assert ran_out_message("x://r", renew_deadline=None, last_failure=refused) == (
        f"the lease on x://r ran out without a confirmed renewal (the last renewal failed: {refused})"
    )


def test_without_a_failed_renewal_the_api_server_is_suspected() -> None:
    assert ran_out_message("x://r", renew_deadline=20.0, last_failure=None) == (
        "no renewal of the lease on x://r succeeded within the renew deadline of 20s (is the API server reachable?)"
    )


def test_an_rbac_refusal_names_the_role_to_bind_and_how() -> None:
    detail = ('lockclaims.kubelock.dev is forbidden: User "dave" cannot create resource "lockclaims" '
              'in API group "kubelock.dev" in the namespace "agents"')
    error = from_api(kube_errors.Forbidden(403, "Forbidden", detail), "create claim c")
    assert isinstance(error, Forbidden)
    assert str(error) == (
        f"not allowed to create claim c: {detail}; a cluster or namespace admin grants it by binding the "
        "ClusterRole kubelock-agent in namespace agents: kubectl -n agents create rolebinding <name> "
        "--clusterrole=kubelock-agent --user=dave (installed by Helm as a release not named kubelock, the role "
        'is <release>-kubelock-agent; docs/install.md, "Giving people and agents access")'
    )


def test_the_role_follows_the_verb_and_the_subject_its_kind() -> None:
    def hint(user: str, verb: str, resource: str) -> str:
        detail = (f'{resource}.kubelock.dev is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                  'in API group "kubelock.dev" in the namespace "ns"')
        return str(from_api(kube_errors.Forbidden(403, "Forbidden", detail), "do it"))

    assert "--clusterrole=kubelock-viewer --user=dave " in hint("dave", "list", "resourcelocks")
    assert "--clusterrole=kubelock-admin --user=dave " in hint("dave", "delete", "resourcelocks")
    assert "--clusterrole=kubelock-agent --serviceaccount=agents:agent " in hint(
        "system:serviceaccount:agents:agent", "create", "lockclaims")


def test_admission_and_quota_refusals_get_no_rbac_hint() -> None:
    for detail in (
        'lockclaims.kubelock.dev "c" is forbidden: ValidatingAdmissionPolicy \'kubelock-lockclaim-holder\' '
        'with binding \'kubelock-lockclaim-holder\' denied request: holder must be your identity',
        'lockclaims.kubelock.dev "c" is forbidden: exceeded quota: claims, requested: count/lockclaims.kubelock.dev=1',
        'pods is forbidden: User "dave" cannot list resource "pods" in API group "" in the namespace "ns"',
    ):
        error = from_api(kube_errors.Forbidden(403, "Forbidden", detail), "do it")
        assert str(error) == f"not allowed to do it: {detail}"


def test_an_unserved_kubelock_path_says_kubelock_is_not_installed() -> None:
    """No CRDs: the API server answers "404 page not found" (no Status), or a Status naming no object.
    That is no claim missing but no kubelock at all: Unreachable (exit 6), not NotFound (exit 2)."""
    for body in ({}, {"kind": "Status", "reason": "NotFound", "details": {}}):
        error = from_api(kube_errors.Unserved(404, "", "404 page not found", body), "create claim c for x://r")
        assert isinstance(error, Unreachable) and error.reason == "NotInstalled", error
        assert str(error).startswith("cannot create claim c for x://r: this cluster does not serve kubelock's API")
        assert "kubectl get crd lockclaims.kubelock.dev" in str(error) and "docs/install.md" in str(error)
    # A request to another API (SelfSubjectReview) says nothing of kubelock's CRDs.
    other = from_api(kube_errors.Unserved(404, "", "404 page not found", {}), "ask who", kubelock_api=False)
    assert isinstance(other, NotFound) and "kubelock" not in str(other)


def test_a_refusal_because_the_bound_role_is_gone_says_kubelock_is_not_installed() -> None:
    """After an uninstall the bindings to kubelock-agent stay and name a role that is gone: "bind
    kubelock-agent" would not help, the roles must come back."""
    detail = ('lockclaims.kubelock.dev is forbidden: User "alice" cannot create resource "lockclaims" in API group '
              '"kubelock.dev" in the namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io '
              '"kubelock-agent" not found')
    error = from_api(kube_errors.Forbidden(403, "Forbidden", detail), "create claim c")
    assert isinstance(error, Forbidden)  # exit 3, as before
    assert str(error) == (
        f"not allowed to create claim c: {detail}; the ClusterRole kubelock-agent your binding names does not "
        "exist: kubelock's roles are not installed in this cluster (uninstalled, or never installed); install "
        "kubelock (docs/install.md) or use the kubeconfig of the cluster that has it"
    )


def test_a_refused_connection_asks_whether_the_cluster_runs_and_is_the_one_meant() -> None:
    # A real refused connection (a port nothing listens on), not a made-up error: the kube client
    # marks it, and the SDK's message says what to check (a stopped test bed, another kubeconfig).
    import asyncio
    import socket

    from kubelock.kube.client import KubeClient
    from kubelock.kube.config import Credentials

    with socket.socket() as probe:  # a free port, closed again: nothing answers on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def ask() -> kube_errors.Unreachable:
        client = KubeClient(Credentials(server=f"https://127.0.0.1:{port}", insecure=True), retries=0)
        try:
            await client.get("/version")
        except kube_errors.Unreachable as error:
            return error
        finally:
            await client.close()
        raise AssertionError("a closed port answered")

    refused = asyncio.run(ask())
    assert refused.connect_failed
    error = from_api(refused, "ask the API server who you are (SelfSubjectReview)")
    assert isinstance(error, Unreachable)  # exit code 6, as before
    assert str(error).startswith(f"cannot ask the API server who you are (SelfSubjectReview): cannot reach the "
                                 f"API server at https://127.0.0.1:{port}: ")
    assert str(error).endswith("is that cluster running, and is it the one meant? The address is the server of "
                               "the kubeconfig's current context (KUBECONFIG, --kubeconfig, --context)")
    # A timeout or another failure after connecting keeps its message as it was.
    assert str(from_api(kube_errors.Unreachable("cannot reach the API server at x: timeout"), "list locks")) == (
        "cannot list locks: cannot reach the API server at x: timeout")
