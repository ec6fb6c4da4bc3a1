"""bench/variants_ab.py's pure parts: the variant's spelling, the lock event that tells a holder, the
writes a window counts and the ratios to the floor and to the reference of the same round."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import variants_ab  # noqa: E402  # after bench/ is on the path
from harness import Seen  # noqa: E402


def test_a_variant_names_its_tree_client_and_crd(tmp_path: Path) -> None:
    v = variants_ab.Variant.parse(f"nohold={tmp_path}/operator:lock:crd={tmp_path}/c.yaml")
    assert (v.name, v.tree, v.by_lock, v.crd) == ("nohold", tmp_path / "operator", True, tmp_path / "c.yaml")
    plain = variants_ab.Variant.parse(f"lean={tmp_path}/operator")
    assert (plain.by_lock, plain.crd) == (False, None)


@pytest.mark.parametrize("text", ["=tree", "lean=", "lean=tree:locks"])
def test_a_misspelt_variant_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        variants_ab.Variant.parse(text)


def seen(kind: str, claim: str | None) -> Seen:
    spec = {"claimRef": {"name": claim, "uid": "u"}} if claim else {}
    return Seen(at=0.0, wall=0.0, type=kind, obj={"metadata": {"name": "lk"}, "spec": spec})


def test_the_holder_is_told_by_the_lock_that_names_its_claim() -> None:
    told = variants_ab.held_by("c-1")
    assert told(seen("ADDED", "c-1")) and told(seen("MODIFIED", "c-1"))
    assert not told(seen("ADDED", "c-2"))
    assert not told(seen("DELETED", "c-1"))
    assert not told(seen("ADDED", None))


def test_writes_are_the_mutating_verbs() -> None:
    result = {"requests": {"POST/lockclaims": {"per_cycle": 1.0}, "PUT/lockclaims/status": {"per_cycle": 1.0},
                           "DELETE/resourcelocks": {"per_cycle": 0.94}, "GET/resourcelocks": {"per_cycle": 0.5},
                           "WATCH/lockclaims": {"per_cycle": 0.1}}}
    assert variants_ab.writes_per_cycle(result) == 2.94


def window(label: str, index: int, api_ms: float, rate: float, load: float = 3.0) -> dict[str, Any]:
    return {"round": index, "label": label, "rate": rate, "load1": load, "writes_per_cycle": 5.0,
            "cpu_ms_per_cycle": {"kube-apiserver": api_ms, "etcd": 1.0}}


def test_each_round_is_taken_against_its_own_floor_and_reference() -> None:
    windows = [window("floor", 0, 4.0, 200.0), window("reference", 0, 16.0, 50.0), window("lean", 0, 12.0, 60.0),
               window("floor", 1, 5.0, 100.0), window("reference", 1, 20.0, 20.0), window("lean", 1, 10.0, 40.0)]
    out = variants_ab.summarise(windows, ["reference", "lean"], 2)
    first, second = out["rounds"]
    assert first["reference"]["api_over_floor"] == 4.0 and first["reference"]["rate_over_floor"] == 0.25
    assert first["lean"]["api_over_reference"] == 0.75 and first["lean"]["rate_over_reference"] == 1.2
    assert second["lean"]["api_over_floor"] == 2.0 and second["lean"]["rate_over_reference"] == 2.0
    assert first["load1"] == [3.0, 3.0, 3.0]
    assert out["medians"]["lean"]["api_over_floor"] == 2.5
    assert out["medians"]["lean"]["machine_cpu_over_floor"] == pytest.approx((13 / 5 + 11 / 6) / 2, abs=0.001)


def test_nocel_leaves_out_every_rule_of_the_claim_crd_and_nothing_else() -> None:
    import yaml

    crd = yaml.safe_load((BENCH.parent / "crds" / "kubelock.dev_lockclaims.yaml").read_text())
    assert "x-kubernetes-validations" in repr(crd)
    bare = variants_ab.without_cel(crd)
    assert "x-kubernetes-validations" not in repr(bare)
    assert bare["metadata"] == crd["metadata"] and bare["spec"]["names"] == crd["spec"]["names"]
    assert variants_ab.Variant.parse("n=t:nocel").no_cel
