"""docs/api.md describes the API the CRDs and the operator have.

- Every spec and status field of the generated CRDs (crds/) is in docs/api.md: in its kind's
  `spec:`/`status:` table, or as `Kind.part.field` under "Additions in this implementation"; and every
  field a table names is in the schema.
- Every phase and every reason (`kubelock.domain.reasons`) is named in docs/api.md; its list of Events
  names every reason, Normal and Warning as the operator sends them, and no reason that is gone.
- The domain sends each reason's Events as Warning exactly when `WARNING_REASONS` says so (read from
  the source: every `Notice(Reason.X, ...)` and `end_claim(..., Reason.X, ..., warning=...)`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.domain import lockpolicy
from kubelock.domain.reasons import WARNING_REASONS, Phase, Reason

REPO = Path(__file__).resolve().parents[2]
API = (REPO / "docs" / "api.md").read_text()
KINDS = {"LockClaim": "lockclaims", "ResourceLock": "resourcelocks", "LockPolicy": "lockpolicies"}
STATUS_ONLY = {Reason.GIVING_BACK}  # a claim's status says it; no Event is sent for it


def schema_fields(kind: str, part: str) -> set[str]:
    crd = yaml.safe_load((REPO / "crds" / f"kubelock.dev_{KINDS[kind]}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"].get(part, {}).get("properties", {}))


def kind_section(kind: str, text: str = API) -> str:
    return text.split(f"\n## {kind} — ", 1)[1].split("\n## ", 1)[0]


def table_fields(kind: str, part: str, text: str = API) -> set[str]:
    """The fields named in the first column of the table after the line `spec:` or `status ...:`."""
    section = kind_section(kind, text)
    match = re.search(rf"^{part}\b[^\n]*:\n((?:\|[^\n]*\n)+)", section, flags=re.M)
    if match is None:
        return set()
    rows = match.group(1).splitlines()[2:]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}


def additions(text: str = API) -> set[tuple[str, str, str]]:
    section = text.split("\n## Additions in this implementation\n", 1)[1]
    return set(re.findall(r"`(LockClaim|ResourceLock|LockPolicy)\.(spec|status)\.(\w+)`", section))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_schema_field_is_documented(kind: str, part: str) -> None:
    documented = table_fields(kind, part) | {f for k, p, f in additions() if (k, p) == (kind, part)}
    assert sorted(schema_fields(kind, part) - documented) == [], f"{kind}.{part} fields not in docs/api.md"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_documented_field_is_in_the_schema(kind: str, part: str) -> None:
    documented = table_fields(kind, part) | {f for k, p, f in additions() if (k, p) == (kind, part)}
    assert sorted(documented - schema_fields(kind, part)) == [], f"{kind}.{part} fields of docs/api.md not in the CRD"


def test_the_tables_are_read() -> None:
    assert {"resource", "holder", "onBusy"} <= table_fields("LockClaim", "spec")
    assert {"phase", "conditions", "observedGeneration"} <= table_fields("LockClaim", "status")
    assert "capacity" in table_fields("LockPolicy", "spec")
    without = API.replace("| `podRef` | object, optional, immutable |", "| `other` | object |")
    assert "podRef" not in table_fields("LockClaim", "spec", without)


@pytest.mark.parametrize("name", [*(p.value for p in Phase), *(r.value for r in Reason)])
def test_every_phase_and_reason_is_named(name: str) -> None:
    assert f"`{name}`" in API, f"{name} is not in docs/api.md"


def event_lists(text: str = API) -> tuple[set[str], set[str]]:
    """The Normal and the Warning Events of the list under "Additions in this implementation"."""
    bullet = text.split("\n- Events (on the claim", 1)[1].split(" as Warning.", 1)[0]
    normal, warning = bullet.split(" as Normal;", 1)
    return set(re.findall(r"`([A-Z]\w+)`", normal)), set(re.findall(r"`([A-Z]\w+)`", warning))


def test_the_events_listed_are_those_sent() -> None:
    normal, warning = event_lists()
    assert warning == {r.value for r in WARNING_REASONS}
    sent = {r.value for r in Reason} - {r.value for r in STATUS_ONLY}
    assert normal == sent - warning, "docs/api.md's Normal Events"
    assert f"`{lockpolicy.REMOVED}` (Normal)" in API  # the one Event on a policy


def test_a_missing_event_is_found() -> None:
    normal, warning = event_lists(API.replace(", `Requeued`", "").replace("`QuotaExceeded`,", ""))
    assert "Requeued" not in normal and "QuotaExceeded" not in warning


def _reason(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Reason":
        return node.attr
    return None


def _constant(node: ast.expr | None) -> bool | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, bool) else None


def sent_as() -> list[tuple[str, str, bool]]:
    """(where, reason, warning) of every Event the domain decides with a literal reason and flag."""
    out = []
    for path in sorted((REPO / "operator" / "kubelock" / "domain").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            if node.func.id == "Notice" and node.args and (reason := _reason(node.args[0])):
                flag = node.args[2] if len(node.args) > 2 else keywords.get("warning")
                warning = False if flag is None else _constant(flag)
            elif node.func.id == "end_claim" and len(node.args) > 2 and (reason := _reason(node.args[2])):
                warning = _constant(keywords.get("warning"))
            else:
                continue
            if warning is not None:
                out.append((f"{path.name}:{node.lineno}", reason, warning))
    return out


def test_the_sources_are_read() -> None:
    found = {(reason, warning) for _, reason, warning in sent_as()}
    assert {("GRANTED", False), ("STALE", True), ("WAIT_TIMED_OUT", False), ("QUOTA_EXCEEDED", True)} <= found


@pytest.mark.parametrize(("where", "reason", "warning"), sent_as())
def test_an_event_is_a_warning_exactly_when_its_reason_is(where: str, reason: str, warning: bool) -> None:
    assert (Reason[reason] in WARNING_REASONS) == warning, f"{where}: {reason} sent with warning={warning}"


RANGE = re.compile(r"(?<![\w.-])(-?\d+) ?(?:-|–|\.\.) ?(\d+)(?!\w|\.\d)")


def spec_rows(kind: str, text: str = API) -> dict[str, str]:
    """The spec table of `kind`: each field and the rest of its row."""
    section = kind_section(kind, text)
    table = re.search(r"^spec:\n((?:\|[^\n]*\n)+)", section, flags=re.M)
    assert table is not None
    rows = {}
    for row in table.group(1).splitlines()[2:]:
        first, rest = row.split("|")[1], "|".join(row.split("|")[2:])
        for name in re.findall(r"`(\w+)`", first):
            rows[name] = rest
    return rows


def explained(kind: str) -> dict[str, dict[str, Any]]:
    crd = yaml.safe_load((REPO / "crds" / f"kubelock.dev_{KINDS[kind]}.yaml").read_text())
    properties: dict[str, dict[str, Any]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]
    return properties


@pytest.mark.parametrize("kind", ["LockClaim", "LockPolicy"])
def test_kubectl_explain_and_api_md_give_the_same_ranges_and_defaults(kind: str) -> None:
    """What `kubectl explain` says of a field (its description, from the pydantic model, and its
    schema default) and what docs/api.md's row of it says do not contradict each other: a range one
    states is the other's, a default the schema has is the row's."""
    rows = spec_rows(kind)
    for field, schema in explained(kind).items():
        row = rows.get(field)
        if row is None:
            continue  # test_every_schema_field_is_documented says so
        ranges = set(RANGE.findall(row))
        for low, high in RANGE.findall(schema.get("description", "")):
            assert (low, high) in ranges, f"{kind}.spec.{field}: kubectl explain says {low}-{high}, docs/api.md {row}"
        if "default" in schema:
            default = json_text(schema["default"])
            assert re.search(rf"default:? `?{re.escape(default)}`?|`{re.escape(default)}` \(default\)", row), (
                f"{kind}.spec.{field}: the schema's default is {default}; docs/api.md says {row}")


def json_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_a_contradicting_range_is_found() -> None:
    changed = API.replace("| integer, default 1 | 1–10000:", "| integer, default 1 | 1–1000:")
    assert ("1", "10000") not in set(RANGE.findall(spec_rows("LockPolicy", changed)["capacity"]))
    assert ("1", "10000") in set(RANGE.findall(explained("LockPolicy")["capacity"]["description"]))
