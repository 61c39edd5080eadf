"""Per-stage seconds and token counts of a solver, and the timer that fills them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("tokenize", "segment", "search", "classify", "extract", "write", "execute")
TOKEN_COUNTERS = ("segmenter", "classifier", "extractor", "writer")


@dataclass
class Stats:
    """Per-stage seconds and token positions computed, accumulated over calls."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_COUNTERS, 0))
    problems: int = 0
    extractor_rows: int = 0  # (group, operation) readings decoded, times their branches

    def reset(self) -> None:
        """Zero every counter."""
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.tokens = dict.fromkeys(TOKEN_COUNTERS, 0)
        self.problems = 0
        self.extractor_rows = 0


@contextmanager
def timed(stats: Stats, stage: str) -> Iterator[None]:
    """Add the seconds spent inside the block to ``stats.seconds[stage]`` (nested blocks
    count in both stages)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stats.seconds[stage] += time.perf_counter() - start
