"""What every specialist's task provides to the training loop, and what they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mycelium.runtime.spec import SolverSpec

from ..vocab import Vocab


class Task:
    """One specialist: how to batch, score and evaluate it."""

    name: str
    metric: str

    def __init__(self, train: list[Any], dev: list[Any], vocab: Vocab, spec: SolverSpec):
        self.train, self.dev, self.vocab, self.spec = train, dev, vocab, spec
        self.class_weights: torch.Tensor | None = None  # per label, for a classifier's loss

    def weighted_cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = -100) -> torch.Tensor:
        """Cross-entropy, each label weighted by ``class_weights`` when set (a weighted mean)."""
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index)

    def collate(self, items: list[Any]) -> dict[str, torch.Tensor]:
        """Tensors for a batch of items."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean training loss of a batch."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """Dev figures; ``self.metric`` is the one model selection uses."""
        raise NotImplementedError


@dataclass
class OperationTally:
    """Dev figures of an operation classifier, accumulated batch by batch: ``accuracy`` of
    the best operation (the reject label aside, as the runtime picks) on the groups that
    are steps, their mean ``loss``, and ``reject_accuracy`` on the groups that are not."""

    ops: int
    correct: int = 0
    total: int = 0
    rejected: int = 0
    negatives: int = 0
    loss: float = 0.0

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Count one batch: logits (B, labels), target label ids (B,)."""
        steps = targets < self.ops
        self.loss += F.cross_entropy(logits[steps], targets[steps], reduction="sum").item()
        self.correct += (logits[steps, :self.ops].argmax(-1) == targets[steps]).sum().item()
        self.total += int(steps.sum())
        if logits.shape[1] > self.ops:
            self.rejected += (logits[~steps].argmax(-1) == self.ops).sum().item()
            self.negatives += int((~steps).sum())

    def figures(self) -> dict[str, float]:
        """The accumulated figures."""
        out = {"accuracy": self.correct / max(1, self.total),
               "loss": self.loss / max(1, self.total), "groups": self.total}
        if self.negatives:
            out["reject_accuracy"] = self.rejected / self.negatives
        return out


def packed_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  head: torch.nn.Module) -> torch.Tensor:
    """Backbone over packed rows, then the head at the gathered positions only."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    return head(hidden[batch["rows"], batch["cols"]])
