"""C2 as one encoder pass per problem (``mycelium.modeling.span_group``): every span group
classified from the same states, the shipped classifier kind.

The encoder reads each problem once, framed by its tokenizer's post-processor
(``[CLS] problem [SEP]``); a group is the set of its spans' tokens. The runtime builds the
same inputs with the same functions (``encode_framed``, ``span_tokens``, ``group_tokens``,
``group_feed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.tokenization import (
    GroupedProblem,
    encode_framed,
    group_feed,
    group_tokens,
    span_tokens,
)

from ..batching import IGNORE, eval_batches, to_device
from ..labels import classifier_labels
from ..vocab import Vocab
from .base import OperationTally, Task


@dataclass
class GroupedItem(GroupedProblem):
    """One problem's framed ids, its groups' token positions and their operation labels."""

    labels: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def span_group_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                     spec: SolverSpec) -> list[GroupedItem]:
    """Encode classifier records of one split, one item per problem (all its groups)."""
    op_index = {op: i for i, op in enumerate(classifier_labels(spec, reject=True))}
    problems: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("split") != split:
            continue
        if record.get("spans") is None:
            raise ValueError(f"step record {record.get('id')} has no 'spans': a span-group "
                             "classifier pools the spans' tokens (rewrite the data with "
                             "`mycelium-train data`)")
        problem = problems.setdefault(record["question"], {
            "spans": [(int(a), int(b)) for a, b in record["spans"]], "groups": [],
            "labels": []})
        problem["groups"].append([int(i) for i, _ in record["group"]])
        problem["labels"].append(op_index[record["op"]])
    questions = list(problems)
    encoded = encode_framed(vocab.tokenizer, questions, spec.max_problem_tokens)
    items = []
    for question, enc in zip(questions, encoded, strict=True):
        problem = problems[question]
        per_span = span_tokens(enc.offsets, problem["spans"])
        items.append(GroupedItem(enc.ids, group_tokens(per_span, problem["groups"]),
                                 problem["labels"]))
    return items


def collate_groups(items: list[GroupedItem], pad: int) -> dict[str, torch.Tensor]:
    """The runtime's inputs (``group_feed``) and the labels (B, G), IGNORE on padded slots."""
    batch = {k: torch.from_numpy(v) for k, v in group_feed(items, pad).items()}
    targets = torch.full(batch["group_tokens"].shape[:2], IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        targets[row, :len(item.labels)] = torch.tensor(item.labels, dtype=torch.long)
    batch["targets"] = targets
    return batch


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 group_tokens=batch["group_tokens"]).logits


class SpanGroupClassifierTask(Task):
    """C2 on one encoder pass per problem: cross-entropy of each group's operation (and
    the reject label when the records hold it); a batch is ``packed_batch_size``
    problems."""

    name, metric = "classifier", "accuracy"

    @property
    def reject(self) -> bool:
        """Whether the train records hold the reject label (its index follows the ops)."""
        index = len(self.spec.operations)
        return any(index in item.labels for item in self.train)

    def collate(self, items: list[GroupedItem]) -> dict[str, torch.Tensor]:
        return collate_groups(items, self.vocab.pad)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = _logits(model, batch)
        return self.weighted_cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(),
                                           ignore_index=IGNORE)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """The figures of ``OperationTally`` over the real groups."""
        model.eval()
        tally = OperationTally(len(self.spec.operations))
        for idx in eval_batches([len(x) for x in self.dev], max(batch_size, 32)):
            batch = to_device(self.collate([self.dev[i] for i in idx]), device)
            logits, targets = _logits(model, batch), batch["targets"]
            real = targets != IGNORE
            tally.add(logits[real], targets[real])
        return tally.figures()
