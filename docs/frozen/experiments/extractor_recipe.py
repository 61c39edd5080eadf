"""The extractor recipe the experiments share: p45's backbone, 8 minutes, patience 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from mycelium.train import trainer


def fit_extractor(items: Callable, data: Path, backbone: Path, out: Path) -> None:
    """`mycelium-train fit --model extractor --minutes 8 --patience 2 --backbone B`, with
    ``items`` encoding the extractor records instead of ``trainer.extractor_items``."""
    torch.set_num_threads(2)
    trainer.extractor_items = items
    config = trainer.FitConfig(backbone=str(backbone), minutes=8, patience=2)
    config.models = ("extractor",)
    trainer.fit(data, out, config)
