"""The hyper-parameters of one ``mycelium-train fit`` run.

:class:`FitConfig` is the one source of defaults: ``mycelium-train fit`` and ``all`` read
their option defaults from it (:func:`default`), and the per-specialist choices (which
pretrained encoder a specialist starts from, its batch size, its peak learning rate) are
answered here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycelium.runtime.manifest import MODEL_NAMES

# How an encoder classifier reads a group: each problem once, every group pooled from its
# spans' tokens (tasks/span_groups.py, the shipped kind), or one text pair per group
# (tasks/pair.py).
CLASSIFIER_HEADS = ("span-groups", "pair")


@dataclass
class FitConfig:
    """Hyper-parameters of one ``fit`` run (recorded in training.json)."""

    size: str = "small"
    epochs: int = 20  # upper bound per model
    minutes: float = 12.0  # wall-clock budget per model (0 = none)
    patience: int = 3  # stop after this many epochs without a better dev figure (0 = never)
    seed: int = 0
    device: str = "auto"
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 100
    clip: float = 1.0
    batch_size: int = 32  # segmenter rows per step
    packed_batch_size: int = 16  # problems per step for the classifier and the extractor
    bucket_chunk: int = 50  # batches per length-sorting chunk
    generate_eval: int = 300  # extractor dev rows checked by greedy generation at the end
    pretrain_minutes: float = 0.0  # 0 = no backbone pretraining
    pretrain_text: str | None = None  # GSM8K JSONL whose answers join the pretraining text
    backbone: str | None = None  # a saved backbone.safetensors to start from (no pretraining)
    augment: int = 0  # number-resampled copies of each train problem (train/augment.py)
    dropout: float = 0.0  # residual dropout while fine-tuning the specialists (models.add_dropout)
    span_markers: bool = False  # classifier/extractor read MARKED_TEMPLATES (spec.py)
    models: tuple[str, ...] = MODEL_NAMES
    # a pretrained encoder folder (config.json, model.safetensors, tokenizer.json) the
    # segmenter starts from, with its own tokenizer; None = a Qwen2 segmenter from scratch
    segmenter_init: str | None = None
    # the same for the classifier, read as ``classifier_head`` says
    classifier_init: str | None = None
    classifier_layers: int = 0  # keep only the pair classifier's first N layers (0 = all)
    classifier_head: str = CLASSIFIER_HEADS[0]  # one of CLASSIFIER_HEADS
    init_lr: float = 5e-5  # peak learning rate of a specialist started from a pretrained encoder
    reject_weight: float = 1.0  # loss weight of the classifier's reject-labelled groups

    def encoder_init(self, name: str) -> Path | None:
        """The pretrained encoder folder a specialist starts from, if any."""
        folder = {"segmenter": self.segmenter_init,
                  "classifier": self.classifier_init}.get(name)
        return Path(folder) if folder else None

    def batch_size_for(self, name: str) -> int:
        """Items per step: segmenter rows, or problems (pairs for a pair classifier)."""
        return self.batch_size if name == "segmenter" else self.packed_batch_size

    def peak_lr_for(self, name: str) -> float:
        """The peak learning rate of a specialist's pretrained weights (``init_lr`` when it
        starts from an encoder; a fresh head always peaks at ``lr``)."""
        return self.init_lr if self.encoder_init(name) is not None else self.lr


DEFAULTS = FitConfig()


def default(name: str) -> Any:
    """The default of one :class:`FitConfig` field (for the command-line options)."""
    return getattr(DEFAULTS, name)
