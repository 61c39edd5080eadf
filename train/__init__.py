"""mycelium.train."""
