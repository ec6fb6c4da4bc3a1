#!/usr/bin/env python3
"""Generate the chart's RBAC and admission templates from config/, their single source of truth.

    python hack/sync-chart.py            # write charts/kubelock/templates/{rbac,admission}/*.yaml
    python hack/sync-chart.py --check    # exit 1 when the committed templates differ

config/rbac/*.yaml and config/admission/*.yaml are what the test bed applies and what reviewers read.
The chart carries the same objects, changed only where an install must differ:
- names: `kubelock-<x>` becomes `<fullname>-<x>` (`kubelock-<x>` again for the release `kubelock`),
  in metadata.name and in a binding's policyName;
- labels: the chart's standard labels, keeping the object's app.kubernetes.io/component;
- the admission variable `maxTtlSeconds` takes `.Values.maxTtlSeconds`;
- each file is wrapped in the value that switches it on (rbac.create, rbac.userRoles, admission.enabled).
Everything else (rules, match constraints, CEL, comments) is copied as it is, line for line.
tests/unit/test_chart_sync.py renders the chart with helm and compares the result with config/.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path("charts/kubelock/templates")
PREFIX = "kubelock-"
FULLNAME = '{{ include "kubelock.fullname" . }}'
MAX_TTL_VARIABLE = "maxTtlSeconds"


@dataclass(frozen=True)
class Source:
    """One config file, the chart template it becomes and the value that switches it on."""

    config: Path
    template: Path
    enabled_by: str


def sources(root: Path) -> list[Source]:
    found = [
        Source(Path("config/rbac/operator-role.yaml"), TEMPLATES / "rbac/operator-role.yaml", ".Values.rbac.create"),
        Source(Path("config/rbac/user-roles.yaml"), TEMPLATES / "rbac/user-roles.yaml", ".Values.rbac.userRoles"),
    ]
    for path in sorted((root / "config/admission").glob("*.yaml")):
        rel = path.relative_to(root)
        found.append(Source(rel, TEMPLATES / "admission" / path.name, ".Values.admission.enabled"))
    return found


class SyncError(Exception):
    pass


def _split_documents(text: str) -> list[str]:
    """Splits on `---` lines, keeping every document's own comments with it."""
    docs: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.rstrip() == "---":
            docs.append([])
        else:
            docs[-1].append(line)
    return ["\n".join(d) + "\n" for d in docs if any(ln.strip() and not ln.startswith("#") for ln in d)]


def _suffix(name: str, where: str) -> str:
    if not name.startswith(PREFIX):
        raise SyncError(f"{where}: name {name!r} does not start with {PREFIX!r}")
    return name[len(PREFIX) :]


AGGREGATE_PREFIX = "rbac.authorization.k8s.io/aggregate-to-"


def _metadata(obj: dict[str, Any], where: str) -> list[str]:
    meta = obj.get("metadata") or {}
    extra = set(meta) - {"name", "labels"}
    if extra:  # anything else would be dropped silently: teach this script about it first
        raise SyncError(f"{where}: metadata keys {sorted(extra)} are not synced to the chart")
    labels = meta.get("labels") or {}
    aggregation = sorted(k for k in labels if k.startswith(AGGREGATE_PREFIX))
    unknown = set(labels) - {"app.kubernetes.io/name", "app.kubernetes.io/component", *aggregation}
    if unknown:
        raise SyncError(f"{where}: labels {sorted(unknown)} are not synced to the chart")
    lines = [
        "metadata:",
        f"  name: {FULLNAME}-{_suffix(meta['name'], where)}",
        "  labels:",
        '    {{- include "kubelock.labels" . | nindent 4 }}',
    ]
    if "app.kubernetes.io/component" in labels:
        lines.append(f"    app.kubernetes.io/component: {labels['app.kubernetes.io/component']}")
    # Aggregation into the default roles (admin, edit, view) is part of what a role means.
    lines.extend(f'    {key}: "{labels[key]}"' for key in aggregation)
    return lines


def _template_document(doc: str, where: str) -> str:
    """The document with metadata, policyName and the maxTtlSeconds variable templated."""
    obj = yaml.safe_load(doc)
    if "{{" in doc:  # helm would evaluate it
        raise SyncError(f"{where}: '{{{{' in a config file would be read as a template by helm")
    out: list[str] = []
    lines = doc.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "metadata:":
            out += _metadata(obj, where)
            i += 1
            while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
                i += 1
            continue
        policy = re.fullmatch(r"(\s+policyName: )(\S+)", line)
        if policy:
            out.append(f"{policy.group(1)}{FULLNAME}-{_suffix(policy.group(2), where)}")
            i += 1
            continue
        variable = re.fullmatch(r"(\s+)- name: " + MAX_TTL_VARIABLE, line)
        if variable and i + 1 < len(lines):
            expression = re.fullmatch(r'(\s+)expression: "?(\d+)"?', lines[i + 1])
            if not expression:
                raise SyncError(f"{where}: variable {MAX_TTL_VARIABLE} must be a bare integer expression")
            out += [line, f"{expression.group(1)}expression: {{{{ int64 .Values.maxTtlSeconds | quote }}}}"]
            i += 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def render(source: Source, root: Path) -> str:
    text = (root / source.config).read_text()
    docs = _split_documents(text)
    if not docs:
        raise SyncError(f"{source.config}: no objects")
    body = [_template_document(doc, f"{source.config} (document {n + 1})") for n, doc in enumerate(docs)]
    header = (
        f"# Generated by hack/sync-chart.py (`make generate`) from {source.config}. Do not edit:\n"
        f"# change {source.config} and run `make generate`.\n"
    )
    return header + f"{{{{- if {source.enabled_by} }}}}\n" + "---\n".join(body) + "{{- end }}\n"


def outputs(root: Path) -> dict[Path, str]:
    files = {root / s.template: render(s, root) for s in sources(root)}
    if not any(f".Values.{MAX_TTL_VARIABLE} | quote" in text for text in files.values()):
        # The chart promises that maxTtlSeconds reaches the admission policy.
        raise SyncError(f"no admission policy in config/admission declares the variable {MAX_TTL_VARIABLE}")
    return files


def stale(root: Path, current: dict[Path, str]) -> list[Path]:
    """Generated templates whose config file is gone."""
    out: list[Path] = []
    for folder in ("rbac", "admission"):
        for path in sorted((root / TEMPLATES / folder).glob("*.yaml")):
            if path not in current and path.read_text().startswith("# Generated by hack/sync-chart.py"):
                out.append(path)
    return out


def main(argv: list[str] | None = None, out: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--check", action="store_true", help="fail when the committed templates differ")
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        files = outputs(root)
    except SyncError as error:
        out(f"sync-chart: {error}")
        return 2
    drift = False
    for path, text in files.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            drift = True
            rel = str(path.relative_to(root))
            out("".join(difflib.unified_diff(current.splitlines(True), text.splitlines(True), rel, "generated")))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            out(f"wrote {path.relative_to(root)}")
    for path in stale(root, files):
        if args.check:
            drift = True
            out(f"{path.relative_to(root)}: its config file is gone")
        else:
            path.unlink()
            out(f"removed {path.relative_to(root)}")
    if drift:
        out("The chart's RBAC or admission templates differ from config/: run `make generate` and commit the result.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
