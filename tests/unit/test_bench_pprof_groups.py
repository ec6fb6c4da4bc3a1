"""bench/pprof_groups.py's pure part: `go tool pprof -raw` text parsed, each sample in one group."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pprof_groups", BENCH / "pprof_groups.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


groups = _load()

RAW = """PeriodType: cpu nanoseconds
Period: 10000000
Samples:
samples/count cpu/nanoseconds
""" + (
    # pprof ends each sample's line with a space
    "          1   10000000: 1 2 4 \n"
    "          2   20000000: 3 4 \n"
    "          1   10000000: 5 \n"
    "          1   10000000: 6 \n"
) + """Locations
     1: 0x40d00e M=1 encoding/json.(*encodeState).marshal /usr/local/go/src/encoding/json/encode.go:1:0 s=1
     2: 0x40d00f M=1 k8s.io/apiserver/pkg/storage/cacher.(*cacheWatcher).process /x/cacher.go:1:0 s=1
     3: 0x40d010 M=1 github.com/google/cel-go/interpreter.(*evalBinary).Eval /x/i.go:1:0 s=1
             k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel.(*Validator).validate /x/v.go:2:0 s=2
     4: 0x40d011 M=1 net/http.(*conn).serve /usr/local/go/src/net/http/server.go:1:0 s=1
     5: 0x40d012 M=1 runtime.gcBgMarkWorker /usr/local/go/src/runtime/mgc.go:1:0 s=1
     6: 0x40d013 M=1 main.somethingElse /x/m.go:1:0 s=1
Mappings
1: 0x400000/0x2000000/0x0 /usr/local/bin/kube-apiserver
"""


def test_each_sample_counts_once_in_the_first_group_its_stack_meets() -> None:
    out = groups.grouped(RAW)
    # The watch's encoding counts as watch serving, not as encoding: the group's place decides.
    assert out["watch serving (dispatch, encoding, sending)"] == 0.01
    # An inlined frame (a continuation line) belongs to its location.
    assert out["CEL of the CRDs' rules"] == 0.02
    assert out["Go GC (background)"] == 0.01
    assert out[groups.OTHER] == 0.01
    assert abs(sum(out.values()) - 0.05) < 1e-12


def test_the_table_divides_by_cycles_and_adds_up() -> None:
    text = groups.table([groups.grouped(RAW)], [10.0])
    assert "| total | 0.05 s, 100.0 %, 5.00 |" in text
    assert "| Go GC (background) | 0.01 s, 20.0 %, 1.00 |" in text
