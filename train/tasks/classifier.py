"""C2: the Qwen2 classifier's task (packed rows, each group read at its last token), and
the reject label's loss weights every classifier task uses."""

from __future__ import annotations

import torch

from mycelium.runtime.spec import REJECT, SolverSpec

from ..batching import collate_packed, eval_batches, to_device
from ..items import PackedItem
from ..labels import classifier_labels
from .base import OperationTally, Task, packed_logits


def reject_class_weights(spec: SolverSpec, weight: float) -> torch.Tensor:
    """Loss weights of the classifier's labels: 1 for each operation, ``weight`` for the
    reject label (below 1: rejecting a group takes less probability from the operations)."""
    return torch.tensor([weight if label == REJECT else 1.0
                         for label in classifier_labels(spec, reject=True)])


class ClassifierTask(Task):
    """C2: operation of each group, read at its last token; with ``REJECT`` records
    (``mycelium-train data --reject-groups``) also whether the group is a step at all."""

    name, metric = "classifier", "accuracy"

    @property
    def reject(self) -> bool:
        """Whether the train records hold the reject label (its index follows the ops)."""
        index = len(self.spec.operations)
        return any(index in item.labels for item in self.train)

    def collate(self, items: list[PackedItem]) -> dict[str, torch.Tensor]:
        return collate_packed(items, self.vocab.pad, extractor=False)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weighted_cross_entropy(packed_logits(model, batch, model.score),
                                           batch["targets"])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """``accuracy``: the best operation (the reject label aside, as the runtime picks)
        on the groups that are steps; ``reject_accuracy``: the reject label's argmax rate
        on the groups that are not."""
        model.eval()
        tally = OperationTally(len(self.spec.operations))
        for idx in eval_batches([len(x) for x in self.dev], batch_size):
            batch = to_device(self.collate([self.dev[i] for i in idx]), device)
            tally.add(packed_logits(model, batch, model.score), batch["targets"])
        return tally.figures()
