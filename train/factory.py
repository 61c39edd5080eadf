"""Which model a specialist trains: a registry from (specialist, kind) to its builder.

The kind is ``qwen2`` for a specialist trained from scratch on the shared tokenizer,
``encoder`` for a segmenter started from a pretrained encoder, and the classifier head
(``span-groups`` or ``pair``) for a classifier started from one (:func:`model_kind`).
Adding a kind is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from mycelium.runtime.spec import SolverSpec

from .config import FitConfig
from .labels import classifier_labels
from .models import (
    build_classifier,
    build_extractor,
    build_segmenter,
    encoder_classifier,
    encoder_segmenter,
    span_group_classifier,
)
from .vocab import Vocab

# (config, vocab, spec, reject label, pretrained encoder folder or None) -> a fresh model
Builder = Callable[[FitConfig, Vocab, SolverSpec, bool, Path | None], torch.nn.Module]
BUILDERS: dict[tuple[str, str], Builder] = {}


def builder(name: str, kind: str) -> Callable[[Builder], Builder]:
    """Register the builder of specialist ``name`` of ``kind``."""

    def register(build: Builder) -> Builder:
        BUILDERS[(name, kind)] = build
        return build

    return register


def model_kind(name: str, config: FitConfig) -> str:
    """The kind of model ``config`` trains for specialist ``name``."""
    if config.encoder_init(name) is None:
        return "qwen2"
    return config.classifier_head if name == "classifier" else "encoder"


def build_model(name: str, config: FitConfig, vocab: Vocab, spec: SolverSpec,
                seed: int, reject: bool = False) -> torch.nn.Module:
    """A freshly initialised specialist (seeded); ``reject``: the classifier also learns
    the reject label."""
    torch.manual_seed(seed)
    kind = model_kind(name, config)
    build = BUILDERS.get((name, kind))
    if build is None:
        kinds = ", ".join(k for n, k in BUILDERS if n == name)
        raise ValueError(f"no {kind} {name} ({kinds})")
    return build(config, vocab, spec, reject, config.encoder_init(name))


@builder("segmenter", "qwen2")
def _qwen2_segmenter(config: FitConfig, vocab: Vocab, spec: SolverSpec, reject: bool,
                     folder: Path | None) -> torch.nn.Module:
    return build_segmenter(config.size, vocab.token_ids, spec.segmenter_labels)


@builder("segmenter", "encoder")
def _encoder_segmenter(config: FitConfig, vocab: Vocab, spec: SolverSpec, reject: bool,
                       folder: Path | None) -> torch.nn.Module:
    assert folder is not None
    return encoder_segmenter(folder, spec.segmenter_labels)


@builder("classifier", "qwen2")
def _qwen2_classifier(config: FitConfig, vocab: Vocab, spec: SolverSpec, reject: bool,
                      folder: Path | None) -> torch.nn.Module:
    return build_classifier(config.size, vocab.token_ids, classifier_labels(spec, reject))


@builder("classifier", "span-groups")
def _span_group_classifier(config: FitConfig, vocab: Vocab, spec: SolverSpec, reject: bool,
                           folder: Path | None) -> torch.nn.Module:
    """The encoder's weights, a fresh head (kept when the folder is already such a
    classifier)."""
    assert folder is not None
    if config.classifier_layers:
        raise ValueError("--classifier-layers applies to the pair classifier only")
    return span_group_classifier(folder, classifier_labels(spec, reject))


@builder("classifier", "pair")
def _pair_classifier(config: FitConfig, vocab: Vocab, spec: SolverSpec, reject: bool,
                     folder: Path | None) -> torch.nn.Module:
    assert folder is not None
    return encoder_classifier(folder, classifier_labels(spec, reject), config.classifier_layers)


@builder("extractor", "qwen2")
def _qwen2_extractor(config: FitConfig, vocab: Vocab, spec: SolverSpec, reject: bool,
                     folder: Path | None) -> torch.nn.Module:
    return build_extractor(config.size, vocab.token_ids, spec.max_new_tokens)
