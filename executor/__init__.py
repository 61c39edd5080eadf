"""mycelium.executor."""
