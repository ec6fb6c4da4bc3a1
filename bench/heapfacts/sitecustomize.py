"""Heap facts of a running operator, for `bench/fill_ab.py` with `KUBELOCK_HEAPFACTS_DIR` set.

That script puts this directory on the operator's PYTHONPATH; Python imports `sitecustomize` at
start, and on SIGUSR2 the operator writes DIR/TAG.json (TAG read from DIR/tag): VmRSS, Python's
allocated blocks, pymalloc's arenas (`sys._debugmallocstats`), glibc's `mallinfo2`, its threads,
and the objects the cyclic collector tracks, counted by type. With "trim" in TAG it then calls
`malloc_trim(0)` and reads VmRSS again. Never part of the operator: a measuring aid only (glibc).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import threading
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


def _dump(signum: int, frame: Any) -> None:
    assert DIR is not None
    with open(os.path.join(DIR, "tag")) as tag_file:
        tag = tag_file.read().strip()
    types = Counter(type(o).__name__ for o in gc.get_objects())  # not the frozen ones (`gc.freeze`)
    facts: dict[str, Any] = {
        "tag": tag, "rss_mib": _rss_mib(), "allocated_blocks": sys.getallocatedblocks(), "mallinfo": _mallinfo(),
        "threads": threading.active_count(), "tasks": len(os.listdir("/proc/self/task")), "pymalloc": _pymalloc(),
        "frozen": gc.get_freeze_count(), "tracked": sum(types.values()), "types": types.most_common(25),
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
