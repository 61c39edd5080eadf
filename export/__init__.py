"""mycelium.export."""
