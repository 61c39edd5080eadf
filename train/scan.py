"""The candidate quantities of a problem text: the code lives in the runtime,
:mod:`mycelium.runtime.gold.scan` (pure Python, so that `mycelium-rt diagnose` needs nothing
of train/); these are its names as training imports them."""

from mycelium.runtime.gold.scan import (
    LEADING_PUNCTUATION,
    MAX_WINDOW,
    ORDINAL_SUFFIXES,
    TRAILING_PUNCTUATION,
    TextQuantity,
    pieces,
    scan_quantities,
    words,
)

__all__ = [
    "LEADING_PUNCTUATION", "TRAILING_PUNCTUATION", "ORDINAL_SUFFIXES", "MAX_WINDOW",
    "TextQuantity", "words", "pieces", "scan_quantities",
]
