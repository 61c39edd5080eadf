"""Freed heap pages go back to the system after each batch (runtime/memory.py)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from mycelium.runtime import answers
from mycelium.runtime.errors import MyceliumError
from mycelium.runtime.memory import release_memory
from mycelium.runtime.records import InputRecord


def test_release_memory_runs_on_glibc() -> None:
    # CI and the development machine run glibc Linux; elsewhere it is a no-op
    assert release_memory() is sys.platform.startswith("linux")


class _Solver:
    """Fails a batch that holds the question "bad"; answers the others one by one."""

    def solve(self, questions, ids):
        if "bad" in questions:
            raise MyceliumError("bad problem")
        return [SimpleNamespace(to_record=lambda i=i: {"id": i, "answer": 1, "error": None})
                for i in ids]


def test_each_batch_releases_memory_and_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(answers, "release_memory", lambda: calls.append(1) or True)
    batch = [InputRecord(1, "a", question="q1"), InputRecord(2, "b", error="line 2: bad"),
             InputRecord(3, "c", question="bad"), InputRecord(4, "d", question="q4")]
    records = answers.solve_records(_Solver(), batch)
    assert [r["id"] for r in records] == ["a", "b", "c", "d"]
    assert [r["error"] for r in records] == [None, "line 2: bad", "bad problem", None]
    assert len(calls) == 1


_HELD_AFTER_FREE = """
import ctypes, os, sys
from mycelium.runtime.memory import configure_allocator
if sys.argv[1] == "fixed":
    assert configure_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def touched(size: int) -> int:
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block

libc.free(touched(16 << 20))  # glibc's dynamic threshold rises to 16 MiB here
before = rss()
libc.free(touched(8 << 20))  # then an 8 MiB tensor comes from the heap and stays there
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_freed_large_tensor_leaves_the_process_at_once() -> None:
    import subprocess

    def held(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, mode],
                              capture_output=True, text=True, check=True)
        return int(done.stdout)

    assert held("default") >= 4 << 20  # glibc keeps the freed 8 MiB block's pages
    assert held("fixed") < 1 << 20  # with the fixed mmap threshold they are unmapped
