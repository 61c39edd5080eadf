"""The kept gold steps reordered to the search's structure (step 4 of the derivation): the code
lives in the runtime, :mod:`mycelium.runtime.gold.reorder` (pure Python, so that
`mycelium-rt diagnose` needs nothing of train/); these are its names as training imports
them."""

from mycelium.runtime.gold.reorder import (
    MAX_ORDER_NODES,
    Order,
    reorder,
)

__all__ = [
    "MAX_ORDER_NODES", "Order", "reorder",
]
