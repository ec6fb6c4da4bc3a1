"""Heap facts of a running operator, for `bench/fill_ab.py` with `KUBELOCK_HEAPFACTS_DIR` set (and
tests/integration/test_flood_memory.py).

That script puts this directory on the operator's PYTHONPATH; Python imports `sitecustomize` at
start, and on SIGUSR2 the operator writes DIR/TAG.json (TAG read from DIR/tag): VmRSS, Python's
allocated blocks, pymalloc's arenas (`sys._debugmallocstats`), glibc's `mallinfo2`, its threads,
and the objects the cyclic collector tracks, counted by type (the frozen ones included, `frozen`
saying how many were), and the sizes of the containers (dict,
set, list, deque) held by kubelock's and kopf's own objects and module globals, summed per
`Class.attribute` (to see a per-claim table that outlives its claim). With "trim" in TAG it then calls
`malloc_trim(0)` and reads VmRSS again; with "collect" in TAG, `gc.collect()` first. With
tracemalloc on (PYTHONTRACEMALLOC=1, slow) each dump also lists the source lines whose live
allocations grew most since the first dump.
Never part of the operator: a measuring aid only (glibc).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import tracemalloc
from collections import Counter
from typing import Any

DIR = os.environ.get("KUBELOCK_HEAPFACTS_DIR")
_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
_PYMALLOC = (
    "# arenas allocated current", "# arenas highwater mark", "# arenas reclaimed", "bytes in allocated blocks",
    "bytes in available blocks", "unused pools", "bytes lost to pool headers", "bytes lost to quantization",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def _mallinfo() -> dict[str, int]:
    info = _libc.mallinfo2()
    return {name: int(getattr(info, name)) for name in _FIELDS}


def _pymalloc() -> dict[str, int]:
    """`sys._debugmallocstats` writes to the C stderr: read it from a temporary file."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    facts: dict[str, int] = {}
    for line in text.splitlines():
        for key in _PYMALLOC:
            if key in line and "=" in line and key not in facts:
                facts[key] = int(line.split("=")[-1].replace(",", "").split()[0])
    return facts


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


_CONTAINERS = (dict, set, frozenset, list, collections.deque, collections.OrderedDict)
_OWN = ("kubelock", "kopf")


def _own(module: object) -> bool:
    return isinstance(module, str) and module.split(".")[0] in _OWN


def _attributes(obj: object) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with contextlib.suppress(TypeError):
        found.update(vars(obj))
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if isinstance(slot, str) and hasattr(obj, slot):
                found[slot] = getattr(obj, slot)
    return found


def _container_sizes(objects: list[object]) -> dict[str, int]:
    """len() of every container an own object or module holds, summed per `Owner.attribute`; the
    frozen objects (`gc.freeze`, the operator's long-lived ones) are among `objects`."""
    sizes: Counter[str] = Counter()
    for obj in objects:
        if isinstance(obj, type) or not _own(getattr(type(obj), "__module__", None)):
            continue
        for name, value in _attributes(obj).items():
            if isinstance(value, _CONTAINERS):
                sizes[f"{type(obj).__qualname__}.{name}"] += len(value)
    for module_name, module in list(sys.modules.items()):
        if _own(module_name):
            for name, value in list(vars(module).items()):
                if isinstance(value, _CONTAINERS) and not name.startswith("__"):
                    sizes[f"{module_name}:{name}"] += len(value)
    return {key: count for key, count in sorted(sizes.items()) if count}


_FIRST: list[tracemalloc.Snapshot] = []


def _traced() -> list[str]:
    """The 25 source lines whose live allocations grew most since the first dump (tracemalloc on)."""
    if not tracemalloc.is_tracing():
        return []
    snapshot = tracemalloc.take_snapshot()
    if not _FIRST:
        _FIRST.append(snapshot)
        return []
    return [str(stat) for stat in snapshot.compare_to(_FIRST[0], "lineno")[:25]]


def _dump(signum: int, frame: Any) -> None:
    assert DIR is not None
    with open(os.path.join(DIR, "tag")) as tag_file:
        tag = tag_file.read().strip()
    if "collect" in tag:
        gc.collect()
    frozen = gc.get_freeze_count()
    gc.unfreeze()  # to see the frozen objects too; frozen again below (a measuring aid, not the hot path)
    objects = gc.get_objects()
    types = Counter(type(o).__name__ for o in objects)
    sizes = _container_sizes(objects)
    del objects
    gc.freeze()
    facts: dict[str, Any] = {
        "tag": tag, "rss_mib": _rss_mib(), "allocated_blocks": sys.getallocatedblocks(), "mallinfo": _mallinfo(),
        "threads": threading.active_count(), "tasks": len(os.listdir("/proc/self/task")), "pymalloc": _pymalloc(),
        "frozen": frozen, "tracked": sum(types.values()), "types": types.most_common(40), "sizes": sizes,
        "traced": _traced(),
    }
    if "trim" in tag:
        _libc.malloc_trim(0)
        facts["rss_after_trim_mib"] = _rss_mib()
        facts["mallinfo_after_trim"] = _mallinfo()
    temporary = os.path.join(DIR, f".{tag}.json")
    with open(temporary, "w") as out:
        json.dump(facts, out, indent=1)
    os.rename(temporary, os.path.join(DIR, f"{tag}.json"))


if DIR:
    signal.signal(signal.SIGUSR2, _dump)
