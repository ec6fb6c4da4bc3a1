"""The CRDs generated from the pydantic models: structural, as the contract names them, and in sync."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.api import crdgen
from kubelock.api.types import CLAIM_CHANGE_ADVICE

REPO = Path(__file__).resolve().parents[2]
CLAIMS_FILE = "kubelock.dev_lockclaims.yaml"
LOCKS_FILE = "kubelock.dev_resourcelocks.yaml"
POLICIES_FILE = "kubelock.dev_lockpolicies.yaml"
FORBIDDEN_KEYS = ("$ref", "anyOf", "oneOf", "allOf", "title", "additionalProperties", "$defs", "const")


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    rendered = crdgen.render()
    return {"lc": rendered[CLAIMS_FILE], "rl": rendered[LOCKS_FILE], "lp": rendered[POLICIES_FILE]}


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    [version] = crd["spec"]["versions"]
    return version


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return version_of(crd)["schema"]["openAPIV3Schema"]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def schemas(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (not every dict: `properties` maps names to schemas)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schemas(child, f"{path}.{name}")
    if "items" in node:
        yield from schemas(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", ["lc", "rl", "lp"])
def test_schema_is_structural(crds: dict[str, dict[str, Any]], kind: str) -> None:
    schema = schema_of(crds[kind])
    for path, node in walk(schema):
        if isinstance(node, dict):
            bad = [k for k in node if k in FORBIDDEN_KEYS]
            # `properties` may legitimately have a field called "title"; only schema keywords count.
            if path.endswith("/properties"):
                continue
            assert not bad, f"{path} has {bad}"
    for path, node in schemas(schema):
        if path == ".metadata":
            assert node == {"type": "object"}
            continue
        assert "type" in node, f"{path or '<root>'} has no type"
        if node["type"] == "object":
            assert "properties" in node, f"{path} is an object without properties"
        if node["type"] == "array":
            assert "items" in node, f"{path} is an array without items"


@pytest.mark.parametrize("kind", ["lc", "rl", "lp"])
def test_every_field_has_a_description(crds: dict[str, dict[str, Any]], kind: str) -> None:
    for path, node in schemas(schema_of(crds[kind])):
        if path in ("", ".metadata") or path.endswith("[]"):
            continue
        assert node.get("description"), f"{path} has no description (kubectl explain prints it)"


@pytest.mark.parametrize("kind", ["lc", "rl", "lp"])
def test_kubectl_explain_states_each_fields_bounds_and_default(crds: dict[str, dict[str, Any]], kind: str) -> None:
    """`kubectl explain` prints a field's description but neither its schema's `minimum`/`maximum` nor its
    `default`: a description must say them itself (ResourceLock's leaseDurationSeconds said only "as in
    coordination.k8s.io/v1 Lease", its mode and permits neither their default nor their range)."""
    missing = []
    for path, node in schemas(schema_of(crds[kind])):
        text = node.get("description", "")
        for key in ("minimum", "maximum"):
            # The bound as a number of its own: the "1" of "v1" or of "1.5" does not state a bound of 1.
            if key in node and not re.search(rf"(?<![\w.]){node[key]}(?![\w.]*\d)", text):
                missing.append(f"{path}: {key} {node[key]}")
        if "default" in node and "default" not in text.lower():
            missing.append(f"{path}: default {node['default']!r}")
    assert not missing, f"descriptions that do not state the schema's bound or default: {missing}"


@pytest.mark.parametrize(
    ("kind", "kind_name", "plural", "short", "status_subresource"),
    [
        pytest.param("lc", "LockClaim", "lockclaims", "lc", True, id="lockclaim"),
        pytest.param("rl", "ResourceLock", "resourcelocks", "rl", False, id="resourcelock"),
        pytest.param("lp", "LockPolicy", "lockpolicies", "lp", True, id="lockpolicy"),  # observedGeneration
    ],
)
def test_names_scope_and_subresources(
    crds: dict[str, dict[str, Any]], kind: str, kind_name: str, plural: str, short: str, status_subresource: bool
) -> None:
    crd = crds[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.kubelock.dev"
    spec = crd["spec"]
    assert spec["group"] == "kubelock.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind_name
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["locks"]
    version = version_of(crd)
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert ("status" in version.get("subresources", {})) is status_subresource
    assert "spec" in schema_of(crd)["required"]


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        pytest.param("lc", ["Resource", "Holder", "Phase", "Position", "Expires", "Age"], id="lockclaim"),
        pytest.param("rl", ["Resource", "Holder", "Mode", "Holders", "Token", "Expires", "Age"], id="resourcelock"),
        pytest.param("lp", ["Prefix", "Capacity", "Lock-Delay", "Age"], id="lockpolicy"),
    ],
)
def test_printer_columns_of_the_contract(crds: dict[str, dict[str, Any]], kind: str, columns: list[str]) -> None:
    printed = version_of(crds[kind])["additionalPrinterColumns"]
    default_view = [c["name"] for c in printed if not c.get("priority")]
    assert default_view == columns
    by_name = {c["name"]: c for c in printed}
    assert by_name["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    schema = schema_of(crds[kind])
    for column in printed:
        if column["jsonPath"].startswith(".metadata"):
            continue
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            node = node["properties"][part]  # every column points at a field of the schema
        # kubectl prints a list as its JSON text
        expected_type = {"integer": "integer", "string": "string", "array": "string"}[node["type"]]
        assert column["type"] == expected_type, column


def test_claim_columns_point_at_the_right_fields(crds: dict[str, dict[str, Any]]) -> None:
    paths = {c["name"]: c["jsonPath"] for c in version_of(crds["lc"])["additionalPrinterColumns"]}
    assert paths["Resource"] == ".spec.resource"
    assert paths["Holder"] == ".spec.holder"
    assert paths["Phase"] == ".status.phase"
    assert paths["Position"] == ".status.queuePosition"
    assert paths["Expires"] == ".status.expiresAt"
    paths = {c["name"]: c["jsonPath"] for c in version_of(crds["rl"])["additionalPrinterColumns"]}
    assert paths["Token"] == ".spec.fencingToken"


def test_resource_field_rules(crds: dict[str, dict[str, Any]]) -> None:
    resource = schema_of(crds["lc"])["properties"]["spec"]["properties"]["resource"]
    assert resource["type"] == "string"
    assert resource["maxLength"] == 1024
    rules = {r["rule"]: r.get("message") or r["messageExpression"] for r in resource["x-kubernetes-validations"]}
    assert rules["self == oldSelf"] == "resource is immutable" + CLAIM_CHANGE_ADVICE
    [uri_rule] = [r for r in rules if r.startswith("self.matches(")]
    assert "://" in uri_rule
    assert r"\p{C}" in uri_rule
    assert r"\p{Z}" in uri_rule
    assert "URI" in rules[uri_rule]
    # The spellings RFC 3986 would rewrite: refused on the field, and on the list of `resources` as a whole.
    spellings = [r for r in rules if r.startswith("!self.matches(")]
    assert len(spellings) == 5 and all("RFC 3986" in rules[r] for r in spellings)
    listed = schema_of(crds["lc"])["properties"]["spec"]["properties"]["resources"]["x-kubernetes-validations"]
    assert sum("RFC 3986" in r.get("messageExpression", "") for r in listed) == 5


def test_claim_spec_rules(crds: dict[str, dict[str, Any]]) -> None:
    spec = schema_of(crds["lc"])["properties"]["spec"]
    assert set(spec["required"]) == {"holder"}  # and exactly one of resource, resources (CEL)
    holder_rules = {r["rule"] for r in spec["properties"]["holder"]["x-kubernetes-validations"]}
    assert "self == oldSelf" in holder_rules
    messages = {r["message"] for r in spec["x-kubernetes-validations"]}
    assert {"podRef is immutable" + CLAIM_CHANGE_ADVICE, "wait is immutable" + CLAIM_CHANGE_ADVICE,
            "waitTimeoutSeconds requires wait: true", "waitTimeoutSeconds is immutable" + CLAIM_CHANGE_ADVICE,
            "resource and resources are immutable" + CLAIM_CHANGE_ADVICE,
            "set exactly one of resource (one URI) and resources (a list of URIs locked all together)",
            "a Shared claim takes no permits: with mode: Shared, permits must be 1 (or unset)"} <= messages
    assert spec["properties"]["mode"]["enum"] == ["Exclusive", "Shared"]
    permits = spec["properties"]["permits"]
    assert permits["default"] == 1
    resources = spec["properties"]["resources"]
    assert (resources["minItems"], resources["maxItems"]) == (1, 16)
    assert "self == oldSelf" not in {r["rule"] for r in resources["items"]["x-kubernetes-validations"]}
    assert spec["properties"]["ttlSeconds"]["type"] == "integer"
    assert spec["properties"]["wait"]["default"] is False


def test_kubectl_explain_says_which_claim_fields_are_immutable(crds: dict[str, dict[str, Any]]) -> None:
    """`kubectl explain lockclaim.spec.<field>` is read one field at a time: each field the API server
    keeps from changing says so in its own description (only ttlSeconds may change)."""
    spec = schema_of(crds["lc"])["properties"]["spec"]
    silent = [name for name, field in spec["properties"].items()
              if name != "ttlSeconds" and "Immutable." not in field["description"]]
    assert silent == []
    assert "Immutable." not in spec["properties"]["ttlSeconds"]["description"]


def test_claim_status_shape(crds: dict[str, dict[str, Any]]) -> None:
    status = schema_of(crds["lc"])["properties"]["status"]["properties"]
    assert status["phase"]["type"] == "string"
    assert status["phase"]["enum"] == ["Pending", "Held", "Rejected", "TimedOut", "Expired", "Deadlocked", "Revoked"]
    assert status["fencingToken"] == {**status["fencingToken"], "type": "integer", "format": "int64"}
    assert status["cycle"]["type"] == "array"
    assert status["cycle"]["items"]["type"] == "string"
    # Written whole by one writer each: tracked as one field in managedFields (see crdgen._atomic).
    assert "x-kubernetes-list-type" not in status["conditions"]  # atomic, the default
    root = schema_of(crds["lc"])["properties"]
    assert root["status"]["x-kubernetes-map-type"] == "atomic"
    assert root["spec"]["x-kubernetes-map-type"] == "atomic"
    for stamp in ("acquiredAt", "renewedAt", "expiresAt"):
        assert status[stamp]["format"] == "date-time"


def test_lock_spec_is_one_managed_field(crds: dict[str, dict[str, Any]]) -> None:
    # Written only by the operator (create, then merge patches): tracked as one field, like the
    # claim's spec and status (crdgen._atomic); its lists stay atomic (no list-type).
    spec = schema_of(crds["rl"])["properties"]["spec"]
    assert spec["x-kubernetes-map-type"] == "atomic"
    assert "x-kubernetes-list-type" not in spec["properties"]["grants"]
    assert "x-kubernetes-map-type" not in schema_of(crds["lp"])["properties"]["spec"]  # an admin's


# ---- committed files -------------------------------------------------------------------------


def test_committed_files_are_what_render_produces() -> None:
    for path, text in crdgen.outputs(REPO).items():
        assert path.read_text() == text, f"{path} is stale: run `make generate`"
        if path.parent.name == "crds" and path.parent.parent == REPO:
            assert yaml.safe_load(text) == crdgen.render()[path.name]


def test_check_passes_on_the_repository() -> None:
    printed: list[str] = []
    assert crdgen.main(["--check", "--root", str(REPO)], out=printed.append) == 0
    assert printed == []


def copy_of_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "crds", root / "crds")
    shutil.copytree(REPO / "charts", root / "charts")
    return root


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda p: p.write_text(p.read_text().replace("shortNames:\n    - lc", "shortNames:\n    - lx")),
                     id="edited"),
        pytest.param(lambda p: p.write_text(p.read_text() + "\n"), id="trailing-newline"),
        pytest.param(lambda p: p.unlink(), id="deleted"),
    ],
)
def test_check_fails_when_a_crd_file_was_altered(tmp_path: Path, alter: Any) -> None:
    root = copy_of_repo(tmp_path)
    printed: list[str] = []
    assert crdgen.main(["--check", "--root", str(root)], out=printed.append) == 0
    alter(root / "crds" / CLAIMS_FILE)
    assert crdgen.main(["--check", "--root", str(root)], out=printed.append) == 1
    assert any("make generate" in line for line in printed)
    assert any(CLAIMS_FILE in line for line in printed), "the diff names the file"


def test_check_fails_when_the_chart_copy_was_altered(tmp_path: Path) -> None:
    root = copy_of_repo(tmp_path)
    chart_copy = root / "charts" / "kubelock" / "templates" / "crds" / LOCKS_FILE
    chart_copy.write_text(chart_copy.read_text().replace("crds.keep", "crds.kept"))
    assert crdgen.main(["--check", "--root", str(root)], out=lambda _: None) == 1


def test_generate_then_check_round_trips(tmp_path: Path) -> None:
    assert crdgen.main(["--root", str(tmp_path)], out=lambda _: None) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml")) == sorted(
        [
            f"charts/kubelock/templates/crds/{CLAIMS_FILE}",
            f"charts/kubelock/templates/crds/{LOCKS_FILE}",
            f"crds/{CLAIMS_FILE}",
            f"crds/{LOCKS_FILE}",
            f"charts/kubelock/templates/crds/{POLICIES_FILE}",
            f"crds/{POLICIES_FILE}",
        ]
    )
    assert crdgen.main(["--check", "--root", str(tmp_path)], out=lambda _: None) == 0


def test_chart_copy_is_gated_and_kept() -> None:
    text = crdgen.chart_wrap(crdgen.dump(crdgen.render()[CLAIMS_FILE]))
    assert text.startswith(crdgen.HEADER + "{{- if .Values.crds.install }}\n")
    assert text.endswith("{{- end }}\n")
    assert "helm.sh/resource-policy: keep" in text


@pytest.mark.parametrize(
    ("field", "low", "high", "advice"),
    [
        ("ttlSeconds", 1, 86400, "renew it while the work lasts"),
        ("waitTimeoutSeconds", 1, 86400, "leave it out to wait until granted"),
        ("priority", -1000, 1000, "higher is served first"),
        ("permits", 1, 1000, "at most that capacity"),
    ],
)
def test_claim_bounds_are_rules_that_name_the_field_the_bounds_and_what_to_do(
    crds: dict[str, dict[str, Any]], field: str, low: int, high: int, advice: str
) -> None:
    """The schema's own minimum/maximum would be answered "spec.ttlSeconds in body should be less than
    or equal to 86400" (and `kubectl explain` shows neither: the description states the range); the
    rule's message says which field, its bounds and what to do."""
    prop = schema_of(crds["lc"])["properties"]["spec"]["properties"][field]
    assert "minimum" not in prop and "maximum" not in prop
    [bound] = [r for r in prop["x-kubernetes-validations"] if r["rule"] == f"self >= {low} && self <= {high}"]
    assert bound["message"].startswith(f"{field} must be between {low} and {high}: "), bound
    assert advice in bound["message"], bound


def test_an_immutable_fields_refusal_names_the_command_that_makes_the_claim_anew() -> None:
    assert "only ttlSeconds may change" in CLAIM_CHANGE_ADVICE
    assert "kubectl replace --force -f FILE" in CLAIM_CHANGE_ADVICE
