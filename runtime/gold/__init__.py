"""Gold programs from GSM8K's annotated solutions (pure Python): what `mycelium-rt
diagnose` attributes a loss against and what training supervises with.

:func:`~mycelium.runtime.gold.align.derive` parses the annotations (``annotations``),
finds the problem's quantities (``scan``), gives every number a source (``sources``), fits
the kept steps to the search's structure (``reorder``) and writes the program in the
runtime's grammar (``align``).
"""

from .align import Derivation, derive

__all__ = ["Derivation", "derive"]
