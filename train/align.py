"""Derive a search-reachable program from a GSM8K problem's annotated solution: the code lives
in the runtime, :mod:`mycelium.runtime.gold.align` (pure Python, so that `mycelium-rt
diagnose` needs nothing of train/); these are its names as training imports them."""

from mycelium.runtime.gold.align import (
    SEARCH,
    Derivation,
    ProgramStep,
    canonical_order,
    derive,
    parse_answer,
    to_executor,
)
from mycelium.runtime.gold.sources import CONSTANTS

__all__ = [
    "CONSTANTS", "SEARCH", "ProgramStep", "Derivation", "parse_answer", "canonical_order",
    "to_executor", "derive",
]
