"""Embedded default specialists (artifacts made by mycelium-export)."""
