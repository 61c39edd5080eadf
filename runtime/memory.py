"""Give freed heap memory back to the system between batches.

onnxruntime runs without its CPU arena (``sessions.make_session``), so a call's tensors
are plain heap allocations; glibc keeps the pages of freed ones for reuse (its mmap
threshold rises to the largest block freed, up to 32 MiB), and the pages of one call's
shapes rarely fit the next call's. ``malloc_trim`` after each batch returns them, so the
next batch starts from what the loaded models hold. Elsewhere (musl, macOS) it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_memory() -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim(0)``); True when it
    could run here."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
