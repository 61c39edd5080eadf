"""Domain exceptions of the exporter; only the CLI layer turns them into exit codes."""

from __future__ import annotations

from mycelium.runtime.errors import MyceliumError


class ExportError(MyceliumError):
    """An export cannot be carried out (bad options, existing output, failed step)."""


class CheckpointError(ExportError):
    """The checkpoint folder breaks the checkpoint contract (docs/ARCHITECTURE.md)."""


class ParityError(ExportError):
    """The exported graphs disagree with the PyTorch models beyond tolerance."""

    def __init__(self, message: str, rows: list | None = None):
        super().__init__(message)
        self.rows = rows or []  # the parity rows, failing and passing
