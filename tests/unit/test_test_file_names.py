"""pytest imports test files by basename (its default `prepend` import mode, without `__init__.py` in
the test directories), so two files of one name in different tiers stop the whole collection with
"import file mismatch": every tier's names must differ."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_name() -> None:
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    assert len(by_name) > 100, "the walk found too few test files to be checking anything"
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"test files of one name (rename one of each): {shared}"
