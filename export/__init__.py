"""mycelium.export: checkpoint (PyTorch, safetensors) -> ONNX artifacts + manifest.

    from mycelium.export import export_checkpoint
    report = export_checkpoint("ckpt/", "artifacts/", precision="fp32")
"""

from .errors import CheckpointError, ExportError, ParityError
from .pipeline import ExportReport, export_checkpoint

__all__ = ["export_checkpoint", "ExportReport", "ExportError", "CheckpointError", "ParityError"]
