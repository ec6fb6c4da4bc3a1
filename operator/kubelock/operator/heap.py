"""The heap around the priming LISTs: no cyclic garbage collection while the cache is built, the
records kept out of later collections, and freed memory given back to the operating system.

Taking in 10 000 claims and 10 000 locks creates about 100 000 long-lived objects; each full
collection during that walks all of those made so far, and CPython runs about ten of them on the
way (a quarter of the priming's CPU, measured). The records are acyclic and freed by reference
counting when replaced, so nothing is lost by not collecting while they are built, and freezing them
afterwards (`gc.freeze`) keeps every later collection from walking them again.

Taking in 10 000 claims and locks (a priming LIST, a burst of grants) decodes pages of JSON that are
freed once absorbed; glibc's allocator keeps the freed pages for later use instead of returning
them, so the process's resident size stays at the burst's high water (about 7 MiB above what is in
use after a start with 10 000 held locks). `malloc_trim` returns them. Elsewhere (another C library)
this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Callable, Iterator


def _trimmer() -> Callable[[int], int] | None:
    try:
        # The symbols the process already has (no library search, which would start a subprocess).
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _trimmer()


def give_back() -> None:
    """Return the heap's free pages to the operating system (glibc only; a few milliseconds)."""
    if _TRIM is not None:
        _TRIM(0)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (reference counting still frees what is dropped)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def settle() -> None:
    """After the priming LISTs: what is alive now stays (the cache's records, the modules) and is left
    out of later collections; the freed LIST pages go back to the operating system."""
    gc.freeze()
    give_back()
