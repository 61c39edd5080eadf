"""Give freed heap memory back to the system between batches.

onnxruntime runs without its CPU arena (``sessions.make_session``), so a call's tensors
are plain heap allocations; glibc keeps the pages of freed ones for reuse (its mmap
threshold rises to the largest block freed, up to 32 MiB), and the pages of one call's
shapes rarely fit the next call's. ``malloc_trim`` after each batch returns them, so the
next batch starts from what the loaded models hold. Elsewhere (musl, macOS) it does
nothing.

``configure_allocator`` (called once, before the first session is made) also fixes glibc's
mmap threshold at ``MMAP_THRESHOLD``: a tensor at least that large is mapped on its own and
unmapped the moment it is freed, instead of the threshold rising to the largest block
ever freed and such blocks staying in the heap between calls.
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


MMAP_THRESHOLD = 1 << 20  # bytes
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


@lru_cache(maxsize=1)
def configure_allocator() -> bool:
    """Fix glibc's mmap threshold (once per process); True when it could run here."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
