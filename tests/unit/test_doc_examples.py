"""Claims shown to users (README, docs, examples, the chart's release notes) name holders in the form
the admission policies accept, `<identity>/<instance>`: a copied example must not be refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubelock.domain.holder import split

REPO = Path(__file__).resolve().parents[2]
SHOWN = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
         *sorted(str(p.relative_to(REPO)) for p in (REPO / "examples").glob("*.yaml")),
         "charts/kubelock/templates/NOTES.txt"]
HOLDER_LINE = re.compile(r"^\s*holder:\s*([^\s#]+)", re.MULTILINE)


def holders() -> list[tuple[str, str]]:
    return [(name, match) for name in SHOWN for match in HOLDER_LINE.findall((REPO / name).read_text())]


def test_the_examples_are_found() -> None:
    assert {name for name, _ in holders()} >= {"README.md", "docs/install.md", "examples/lockclaim.yaml",
                                                "charts/kubelock/templates/NOTES.txt"}


@pytest.mark.parametrize(("name", "holder"), holders())
def test_example_holders_have_an_identity_and_an_instance(name: str, holder: str) -> None:
    assert split(holder) is not None, f"{name}: holder {holder!r} is not <identity>/<instance>"
