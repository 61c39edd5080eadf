"""The equation grammar of the program writer; it lives in the runtime
(:mod:`mycelium.runtime.equations`, torch-free), re-exported here for training code."""

from __future__ import annotations

from mycelium.runtime.equations import (
    ALPHABET,
    END,
    MAX_DECIMALS,
    OPERATORS,
    Equations,
    Sources,
    WriterState,
    advance,
    allowed,
    finish,
    value_text,
    write_equations,
)

__all__ = ["ALPHABET", "END", "MAX_DECIMALS", "OPERATORS", "Equations", "Sources",
           "WriterState", "advance", "allowed", "finish", "value_text", "write_equations"]
