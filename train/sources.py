"""A source for every number literal of the gold steps (step 2 of the derivation): the code
lives in the runtime, :mod:`mycelium.runtime.gold.sources` (pure Python, so that
`mycelium-rt diagnose` needs nothing of train/); these are its names as training imports
them."""

from mycelium.runtime.gold.sources import (
    CONSTANTS,
    MAX_ALIGNMENTS,
    PERCENT,
    AlignedStep,
    Source,
    alignments,
)

__all__ = [
    "CONSTANTS", "PERCENT", "MAX_ALIGNMENTS", "Source", "AlignedStep", "alignments",
]
