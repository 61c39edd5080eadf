"""The specialists' training tasks and the registry that picks one.

A task says how to encode a specialist's records into items, batch them, compute the loss
and evaluate on dev (:class:`base.Task`). :data:`TASKS` maps (specialist, kind) to its
item encoder and task class; the kind is ``None`` for the Qwen2 specialists and the
classifier head (``FitConfig.classifier_head``) for an encoder classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mycelium.runtime.spec import SolverSpec

from ..augment import augment
from ..items import classifier_items, extractor_items, read_jsonl, segmenter_items
from ..vocab import Vocab
from .base import OperationTally, Task, packed_logits
from .classifier import ClassifierTask, reject_class_weights
from .extractor import ExtractorTask
from .pair import PairClassifierTask, pair_items
from .segmenter import SegmenterTask
from .span_groups import SpanGroupClassifierTask, span_group_items

Encoder = Callable[[list[dict[str, Any]], str, Vocab, SolverSpec], list[Any]]

TASKS: dict[tuple[str, str | None], tuple[Encoder, type[Task]]] = {
    ("segmenter", None): (segmenter_items, SegmenterTask),
    ("classifier", None): (classifier_items, ClassifierTask),
    ("extractor", None): (extractor_items, ExtractorTask),
    ("classifier", "pair"): (pair_items, PairClassifierTask),
    ("classifier", "span-groups"): (span_group_items, SpanGroupClassifierTask),
}


def task_kind(name: str, kind: str | None) -> tuple[Encoder, type[Task]]:
    """The item encoder and task class of a specialist of ``kind``."""
    try:
        return TASKS[(name, kind)]
    except KeyError:
        heads = ", ".join(k for n, k in TASKS if n == name and k is not None)
        raise ValueError(f"unknown {name} head {kind!r}" + (f" ({heads})" if heads else "")
                         ) from None


def load_tasks(data: Path, vocab: Vocab, spec: SolverSpec, names: Sequence[str],
               augment_copies: int = 0, seed: int = 0,
               encoder_classifier: str | None = None) -> dict[str, Task]:
    """Read and encode the supervision files of the requested specialists (train records
    with ``augment_copies`` number-resampled copies each); ``encoder_classifier``: the
    classifier is an encoder reading each problem once ("span-groups") or one text pair
    per group ("pair")."""
    tasks: dict[str, Task] = {}
    for name in names:
        records = read_jsonl(data / f"{name}.jsonl")
        records += augment(records, augment_copies, seed)
        encode, cls = task_kind(name, encoder_classifier if name == "classifier" else None)
        tasks[name] = cls(encode(records, "train", vocab, spec),
                          encode(records, "dev", vocab, spec), vocab, spec)
    return tasks


__all__ = [
    "TASKS", "ClassifierTask", "ExtractorTask", "OperationTally", "PairClassifierTask",
    "SegmenterTask", "SpanGroupClassifierTask", "Task", "load_tasks", "packed_logits",
    "reject_class_weights", "task_kind",
]
