"""Kubeconfig fields of the wrong type or content, against the real API server: the commands must read
them as kubectl does (a field of the wrong type refuses the file) and say what is wrong, never act on a
guess. Above all a quoted `insecure-skip-tls-verify: "false"`, a non-empty string, must not turn off
the verification of the API server's certificate (the token would then go to whoever answers)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kubelock.cli.exitcodes import ExitCode
from tests.support.access import bind, wait_allowed
from tests.support.claims import Locks
from tests.support.commands import environment, run

Cluster = Any
Config = dict[str, Any]


def variant(control_plane: Cluster, path: Path, change: Callable[[Config], None]) -> Path:
    config: Config = yaml.safe_load(control_plane.kubeconfig.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_quoted_insecure_skip_tls_verify_never_turns_verification_off(
    control_plane: Cluster, namespace: str, tmp_path: Path
) -> None:
    def untrusted(value: object) -> Callable[[Config], None]:
        def change(config: Config) -> None:
            for entry in config["clusters"]:  # no CA: the bed's certificate is trusted by nothing
                entry["cluster"].pop("certificate-authority-data", None)
                entry["cluster"].pop("certificate-authority", None)
                if value is not None:
                    entry["cluster"]["insecure-skip-tls-verify"] = value
        return change

    # Without the bed's CA the server's certificate cannot be verified: refused.
    plain = run("kubelock", "status", env=environment(variant(control_plane, tmp_path / "a", untrusted(None)),
                                                      namespace))
    assert plain.code == ExitCode.UNREACHABLE, (plain.code, plain.stdout, plain.stderr)

    for quoted in ("false", "no", "0"):
        refused = run("kubelock", "status",
                      env=environment(variant(control_plane, tmp_path / quoted, untrusted(quoted)), namespace))
        assert refused.code == ExitCode.UNREACHABLE, (quoted, refused.code, refused.stdout, refused.stderr)
        assert (
            f"insecure-skip-tls-verify must be true or false (a YAML boolean, unquoted), not {quoted!r}"
        ) in refused.stderr, refused.stderr

    # The boolean still does what it says.
    skipped = run("kubelock", "status", env=environment(variant(control_plane, tmp_path / "t", untrusted(True)),
                                                        namespace))
    assert skipped.code == ExitCode.OK, (skipped.code, skipped.stderr)


def test_unusable_tls_files_and_fields_of_the_wrong_type_are_clear_errors(
    control_plane: Cluster, namespace: str, tmp_path: Path
) -> None:
    def not_a_certificate(config: Config) -> None:
        for entry in config["clusters"]:
            entry["cluster"]["certificate-authority-data"] = base64.b64encode(b"not a certificate").decode()

    def missing_ca(config: Config) -> None:
        for entry in config["clusters"]:
            entry["cluster"].pop("certificate-authority-data", None)
            entry["cluster"]["certificate-authority"] = str(tmp_path / "no-such-ca.crt")

    def numeric_token(config: Config) -> None:
        for entry in config["users"]:
            entry["user"] = {"token": 12345}

    for name, change, said in (
        ("not-a-certificate", not_a_certificate, "cannot load the kubeconfig's TLS files (CA "),
        ("missing-ca", missing_ca, f"cannot load the kubeconfig's TLS files (CA {tmp_path / 'no-such-ca.crt'}"),
        ("numeric-token", numeric_token, "token must be a string, not 12345"),
    ):
        refused = run("kubelock", "status", env=environment(variant(control_plane, tmp_path / name, change), namespace))
        assert refused.code == ExitCode.UNREACHABLE, (name, refused.code, refused.stderr)
        assert said in refused.stderr, (name, refused.stderr)
        assert "Traceback" not in refused.stderr, (name, refused.stderr)


def test_an_empty_token_file_is_refused_never_sent_as_anonymous(
    control_plane: Cluster, admin_api: Any, namespace: str, tmp_path: Path
) -> None:
    """The API server of the bed serves requests without credentials as `system:anonymous` (anonymous
    authentication is on, as by default). A kubeconfig whose `tokenFile` is empty, or a pod whose
    projected token is, must not end up there: the commands refuse it, naming the file (exit 6), and
    nothing is sent. Before the fix the request went out without an Authorization header and the
    API server answered as to `system:anonymous` (exit 3, its 403 naming that user)."""
    bind(admin_api, namespace, "kubelock-agent", "alice")
    wait_allowed(admin_api, "alice", namespace, "create", "lockclaims")
    alice: Config = yaml.safe_load(control_plane.user_kubeconfig("alice").read_text())
    token_file = tmp_path / "token"
    token_file.write_text(alice["users"][0]["user"]["token"] + "\n")

    def from_file(config: Config) -> None:
        config["users"] = [{"name": u["name"], "user": {"tokenFile": str(token_file)}} for u in alice["users"]]

    kubeconfig = variant(control_plane, tmp_path / "config", from_file)
    works = run("kubelock", "status", env=environment(kubeconfig, namespace))
    assert works.code == ExitCode.OK, (works.code, works.stderr)  # the file's token is alice's

    for content in ("", "\n  \n"):
        token_file.write_text(content)
        for command in (("status",), ("acquire", "mr://empty-token/a")):
            refused = run("kubelock", *command, env=environment(kubeconfig, namespace, instance="i"))
            assert refused.code == ExitCode.UNREACHABLE, (command, refused.code, refused.stderr)
            assert f"the token file {token_file} is empty" in refused.stderr, refused.stderr
            assert '"system:anonymous" cannot' not in refused.stderr, refused.stderr  # the API server's 403
            assert "Traceback" not in refused.stderr
    assert Locks(admin_api, namespace).claims() == []  # nothing was created, by anyone
