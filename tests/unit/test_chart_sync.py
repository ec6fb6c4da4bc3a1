"""The Helm chart, rendered with the real helm binary (no cluster): it says what config/ says, it passes
settings the operator accepts, it hardens the pod, and its values are checked and documented.

config/rbac/ and config/admission/ are the single source of truth; hack/sync-chart.py generates the
chart's copies. These tests compare what helm renders with config/ object by object, so a hand edit
of a generated template, a forgotten `make generate` or a bug in the generator all fail here.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kubelock.operator.settings import parse

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubelock"
RELEASE_NS = "kubelock-system"
# What a cluster with prometheus-operator's CRDs serves.
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
Obj = dict[str, Any]

METRICS = {
    "kubelock_locks_held",
    "kubelock_claims_pending",
    "kubelock_grants_total",
    "kubelock_rejections_total",
    "kubelock_expirations_total",
    "kubelock_revocations_total",
    "kubelock_deadlocks_total",
    "kubelock_timeouts_total",
    "kubelock_stale_locks",
    "kubelock_acquire_latency_seconds",
    "kubelock_wait_seconds",
    "kubelock_hold_seconds",
    "kubelock_reconcile_duration_seconds",
    "kubelock_api_requests_total",
}


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(
    helm: Path,
    *sets: str,
    release: str = "kubelock",
    values: Obj | None = None,
    tmp: Path | None = None,
    api_versions: tuple[str, ...] = (),
) -> list[Obj]:
    args = ["template", release, str(CHART), "--namespace", RELEASE_NS, "--kube-version", "v1.30.0"]
    args += [arg for api in api_versions for arg in ("--api-versions", api)]
    for s in sets:
        args += ["--set", s]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return [d for d in yaml.safe_load_all(run_helm(helm, *args).stdout) if d]


def find(docs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def config_objects(*folders: str) -> list[Obj]:
    docs: list[Obj] = []
    for folder in folders:
        for path in sorted((REPO / "config" / folder).glob("*.yaml")):
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def renamed(name: str, fullname: str) -> str:
    assert name.startswith("kubelock-")
    return f"{fullname}-{name.removeprefix('kubelock-')}"


def load_sync_chart() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_chart", REPO / "hack" / "sync-chart.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# ---- single source of truth: config/ ------------------------------------------------------------


def test_generated_templates_are_up_to_date() -> None:
    messages: list[str] = []
    assert load_sync_chart().main(["--check"], out=messages.append) == 0, "\n".join(messages)


def test_generator_detects_a_config_change(tmp_path: Path) -> None:
    for folder in ("config", "charts"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    roles = tmp_path / "config" / "rbac" / "user-roles.yaml"
    roles.write_text(roles.read_text().replace('verbs: ["get", "list", "watch"]', 'verbs: ["get"]', 1))
    sync = load_sync_chart()
    messages: list[str] = []
    assert sync.main(["--check", "--root", str(tmp_path)], out=messages.append) == 1
    assert "make generate" in messages[-1]
    assert sync.main(["--root", str(tmp_path)], out=messages.append) == 0
    assert sync.main(["--check", "--root", str(tmp_path)], out=messages.append) == 0


@pytest.mark.parametrize(("release", "fullname"), [("kubelock", "kubelock"), ("locks", "locks-kubelock")])
def test_cluster_roles_have_the_rules_of_config(helm: Path, release: str, fullname: str) -> None:
    docs = render(helm, release=release)
    expected = find(config_objects("rbac"), "ClusterRole")
    assert {r["metadata"]["name"] for r in expected} >= {
        "kubelock-agent",
        "kubelock-viewer",
        "kubelock-admin",
        "kubelock-operator",
    }
    for role in expected:
        rendered = one(docs, "ClusterRole", renamed(role["metadata"]["name"], fullname))
        assert rendered["rules"] == role["rules"], role["metadata"]["name"]
    assert len(find(docs, "ClusterRole")) == len(expected)


def test_operator_role_is_bound_to_the_operator_service_account(helm: Path) -> None:
    docs = render(helm)
    binding = one(docs, "ClusterRoleBinding", "kubelock-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kubelock-operator",
    }
    account = one(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": RELEASE_NS}]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]


def _without_max_ttl(spec: Obj) -> tuple[Obj, list[str]]:
    """The spec minus the maxTtlSeconds variable's expression, and that expression (if any)."""
    spec = copy.deepcopy(spec)
    found = [v.pop("expression") for v in spec.get("variables", []) if v["name"] == "maxTtlSeconds"]
    return spec, found


@pytest.mark.parametrize(
    ("sets", "max_ttl"), [((), "86400"), (("maxTtlSeconds=600", "resourceLockTimeout=300"), "600")]
)
def test_admission_policies_are_config_with_max_ttl_templated(helm: Path, sets: tuple[str, ...], max_ttl: str) -> None:
    docs = render(helm, *sets)
    expected = config_objects("admission")
    assert expected, "config/admission/ holds no objects"
    seen_ttl = False
    for obj in expected:
        kind, name = obj["kind"], obj["metadata"]["name"]
        rendered = one(docs, kind, name)  # release `kubelock`: the names of config/
        if kind == "ValidatingAdmissionPolicy":
            want, want_ttl = _without_max_ttl(obj["spec"])
            got, got_ttl = _without_max_ttl(rendered["spec"])
            assert got == want, name
            if want_ttl:
                seen_ttl = True
                assert want_ttl == ["86400"], "config/ holds the default maxTtlSeconds"
                assert got_ttl == [max_ttl]
        else:
            assert rendered["spec"] == obj["spec"], name
    assert seen_ttl, "no admission policy takes maxTtlSeconds"
    rendered_kinds = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert len([d for d in docs if d["kind"] in rendered_kinds]) == len(expected)


def test_release_scoped_names_follow_the_policy_bindings(helm: Path) -> None:
    docs = render(helm, release="locks")
    policies = {p["metadata"]["name"] for p in find(docs, "ValidatingAdmissionPolicy")}
    assert policies
    assert all(p.startswith("locks-kubelock-") for p in policies)
    for binding in find(docs, "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["policyName"] in policies


def test_switches_leave_out_rbac_and_admission(helm: Path) -> None:
    docs = render(helm, "rbac.create=false", "rbac.userRoles=false", "admission.enabled=false")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }


def test_plain_manifests_are_rendered_from_the_chart(helm: Path) -> None:
    env = {**os.environ, "HELM": str(helm)}
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "render-manifests.sh"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    docs = [d for d in yaml.safe_load_all((REPO / "manifests" / "kubelock.yaml").read_text()) if d]
    assert docs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": RELEASE_NS,
            "labels": {"app.kubernetes.io/name": "kubelock", "app.kubernetes.io/part-of": "kubelock"},
        },
    }
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] in ("Deployment", "ServiceAccount")} == {
        RELEASE_NS
    }


# ---- the operator Deployment --------------------------------------------------------------------


def container(docs: list[Obj]) -> Obj:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_pod_is_hardened(helm: Path) -> None:
    docs = render(helm)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(docs)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsNonRoot"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container(docs)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_probes_use_the_health_endpoint(helm: Path) -> None:
    c = container(render(helm))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--health-address=0.0.0.0:8080" in c["args"]


def test_pod_name_comes_from_the_downward_api(helm: Path) -> None:
    env = {e["name"]: e for e in container(render(helm))["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's parser reads KUBELOCK_* defaults from the environment: none here."""
    for name in list(os.environ):
        if name.startswith("KUBELOCK_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_operator_accepts_the_default_arguments(helm: Path) -> None:
    settings = parse(container(render(helm))["args"])
    assert settings.resource_lock_timeout == 1800
    assert settings.max_ttl_seconds == 86400
    assert settings.stale_after_percent == 50
    assert settings.ttl_seconds_after_finished == 3600
    assert (settings.priority_aging_seconds, settings.preemption_priority_delta) == (10, None)
    assert settings.preemption_grace_seconds == 30
    assert settings.namespaces == ()
    assert settings.all_namespaces
    assert settings.log_format == "json"
    assert settings.health_address == "0.0.0.0:8080"
    assert settings.metrics_port == 9090
    assert settings.metrics_address == "0.0.0.0"
    assert settings.early_grants
    assert not settings.verbose


@pytest.mark.usefixtures("clean_env")
def test_operator_accepts_the_settings_of_values_files(helm: Path, tmp_path: Path) -> None:
    # A values file, not --set: helm reads its numbers as floats, which must still render as integers.
    values = {
        "resourceLockTimeout": 86400,
        "maxTtlSeconds": 86400,
        "staleAfterPercent": 75,
        "ttlSecondsAfterFinished": 0,
        "priorityAgingSeconds": 3,
        "preemptionPriorityDelta": 100,
        "preemptionGraceSeconds": 5,
        "namespaces": ["agents", "team-*"],
        "logFormat": "text",
        "verbose": True,
        "earlyGrants": False,
        "metrics": {"enabled": False},
        "healthPort": 8181,
    }
    c = container(render(helm, values=values, tmp=tmp_path))
    settings = parse(c["args"])
    assert settings.resource_lock_timeout == 86400
    assert settings.max_ttl_seconds == 86400
    assert settings.stale_after_percent == 75
    assert settings.ttl_seconds_after_finished == 0
    assert settings.policy.priority_aging_seconds == 3
    assert (settings.policy.preemption_priority_delta, settings.policy.preemption_grace_seconds) == (100, 5)
    assert settings.namespaces == ("agents", "team-*")
    assert settings.log_format == "text"
    assert settings.verbose
    assert not settings.early_grants
    assert settings.metrics_port == 0
    assert settings.health_address == "0.0.0.0:8181"
    assert [p["name"] for p in c["ports"]] == ["health"]


def test_replicas_are_plain_deployment_replicas(helm: Path) -> None:
    docs = render(helm, "replicaCount=3", "podDisruptionBudget.enabled=true")
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_the_operator_token_is_the_api_servers_unless_a_lifetime_is_set(helm: Path) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert all("projected" not in v for v in pod["volumes"])
    # A lifetime of its own: the API server does not extend a token projected this way, so the
    # kubelet rotates it (docs/reliability.md, "On the node by hand, again").
    pod = one(render(helm, "serviceAccount.tokenExpirationSeconds=600"), "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (volume,) = (v for v in pod["volumes"] if v["name"] == "serviceaccount-token")
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"] == {"path": "token", "expirationSeconds": 600}
    assert {"ca.crt", "namespace"} == {
        item["path"] for s in sources[1:] for item in (s.get("configMap") or s["downwardAPI"])["items"]
    }
    (mount,) = (m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "serviceaccount-token")
    assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"


# ---- optional objects ---------------------------------------------------------------------------


def test_defaults_install_crds_kept_and_no_optional_extras(helm: Path) -> None:
    docs = render(helm)
    crds = find(docs, "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        "lockclaims.kubelock.dev", "resourcelocks.kubelock.dev", "lockpolicies.kubelock.dev"
    }
    assert all(c["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for c in crds)
    assert not find(docs, "ServiceMonitor")
    assert not find(docs, "ConfigMap")
    assert not find(docs, "PodDisruptionBudget")
    assert one(docs, "Service", "kubelock-operator-metrics")


def test_crds_can_be_left_out_or_deleted_with_the_release(helm: Path) -> None:
    assert not find(render(helm, "crds.install=false"), "CustomResourceDefinition")
    crds = find(render(helm, "crds.keep=false"), "CustomResourceDefinition")
    assert len(crds) == 3
    assert all(not c["metadata"].get("annotations") for c in crds)


def test_service_monitor_only_where_the_cluster_serves_its_api(helm: Path) -> None:
    # Enabled in a cluster without prometheus-operator: no ServiceMonitor, so the install still works.
    assert not find(render(helm, "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    enabled = render(helm, "metrics.serviceMonitor.enabled=true", api_versions=(SERVICE_MONITOR_API,))
    assert one(enabled, "ServiceMonitor")


def test_service_monitor_scrapes_the_metrics_service(helm: Path) -> None:
    docs = render(
        helm,
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prom",
        api_versions=(SERVICE_MONITOR_API,),
    )
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NS]}
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_grafana_dashboard_config_map(helm: Path) -> None:
    docs = render(helm, "grafana.dashboard.enabled=true", "grafana.dashboard.namespace=monitoring")
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["kubelock.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "kubelock.json").read_text())


def test_dashboard_queries_exactly_the_operator_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "kubelock.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"kubelock_\w+", e)}
    assert used == METRICS
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Locks held", "Claims pending", "Acquire latency", "Reconcile duration", "API errors per second"):
        assert wanted in titles
    # Every panel reads the data source variable, so the dashboard works in any Grafana.
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p["type"] != "row")


# ---- values: validated and documented -----------------------------------------------------------

BAD_VALUES = [
    pytest.param("replicaCount=-1", "replicaCount", id="negative-replicas"),
    pytest.param("replicaCount=two", "replicaCount", id="replicas-not-a-number"),
    pytest.param("maxTtlSeconds=0", "maxTtlSeconds", id="ttl-zero"),
    pytest.param("maxTtlSeconds=86401", "maxTtlSeconds", id="ttl-above-crd-ceiling"),
    pytest.param("resourceLockTimeout=1h", "resourceLockTimeout", id="timeout-not-a-number"),
    pytest.param("staleAfterPercent=33", "staleAfterPercent", id="stale-below-the-renewal-schedule"),
    pytest.param("staleAfterSeconds=120", "staleAfterSeconds", id="stale-seconds-replaced"),
    pytest.param("ttlSecondsAfterFinished=-1", "ttlSecondsAfterFinished", id="finished-ttl-negative"),
    pytest.param("logFormat=xml", "logFormat", id="log-format"),
    pytest.param("namespaces=agents", "namespaces", id="namespaces-not-a-list"),
    pytest.param("metrics.port=70000", "metrics/port", id="port-range"),
    pytest.param("image.pullPolicy=Sometimes", "pullPolicy", id="pull-policy"),
    pytest.param("crds.install=yes", "crds/install", id="bool-as-string"),
    pytest.param("replicas=2", "replicas", id="unknown-key"),
    pytest.param("resourceLockTimeout=900,maxTtlSeconds=600", "must not exceed maxTtlSeconds", id="timeout-above-max"),
    pytest.param("metrics.port=8080", "must differ", id="port-clash"),
    pytest.param("serviceAccount.create=false", "serviceAccount.name is required", id="sa-name-required"),
    pytest.param("serviceAccount.tokenExpirationSeconds=300", "tokenExpirationSeconds", id="token-below-api-minimum"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES)
def test_bad_values_are_rejected(helm: Path, setting: str, message: str) -> None:
    result = run_helm(helm, "template", "kubelock", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert message in result.stderr


def test_lint_is_clean(helm: Path) -> None:
    result = run_helm(helm, "lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in result.stdout


def schema_keys(schema: Obj, prefix: str = "") -> list[str]:
    """Dotted paths of the values the schema names (objects with properties are recursed into)."""
    keys: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        if name == "global":  # helm's own
            continue
        path = f"{prefix}{name}"
        keys.append(path)
        keys += schema_keys(sub, f"{path}.")
    return keys


def commented_keys(values_text: str) -> dict[str, bool]:
    """Dotted path of every key line in values.yaml → whether a comment line precedes it."""
    out: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in values_text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            out[".".join(k for _, k in stack)] = previous.lstrip().startswith("#")
        if line.strip():
            previous = line
    return out


def test_every_value_is_in_the_schema_commented_and_documented() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = schema_keys(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    commented = commented_keys((CHART / "values.yaml").read_text())
    docs = (REPO / "docs" / "install.md").read_text()
    for key in keys:
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict), f"{key}: a parent is not a mapping in values.yaml"
            assert part in node, f"{key} is in the schema but not in values.yaml"
            node = node[part]
        assert commented.get(key), f"{key} has no comment in values.yaml"
        assert f"`{key}`" in docs, f"{key} is not in the settings table of docs/install.md"
    # Keys below a free-form value (podSecurityContext.runAsUser, ...) are its content, not values.
    free_form = [k for k in keys if _free_form(schema, k)]
    unknown = [k for k in commented if k not in keys and not any(k.startswith(f"{f}.") for f in free_form)]
    assert not unknown, f"values.yaml keys the schema does not name: {unknown}"


def _free_form(schema: Obj, key: str) -> bool:
    node = schema
    for part in key.split("."):
        node = node["properties"][part]
    return "properties" not in node
