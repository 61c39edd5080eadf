"""C2 as a pretrained encoder: one text pair per span group, no shared prefix.

A bidirectional encoder cannot reuse a problem's prefix across its groups, so each
group is its own row: the problem text with the group's spans marked in place
(``group_pair``: ``sold clips to [ 48 ] of her friends``) and the group's span texts
as the second segment, joined by the encoder tokenizer's own post-processor
(``[CLS] a [SEP] b [SEP]``, token types 0 then 1). The runtime builds the same pairs
with the same two functions (``group_pair``, ``encode_pairs``). The span-group classifier
(span_groups.py) reads each problem once instead; this one runs the encoder once per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.templates import group_pair
from mycelium.runtime.tokenization import EncodedPair, encode_pairs, pair_feed

from ..batching import eval_batches, to_device
from ..labels import classifier_labels
from ..vocab import Vocab
from .base import OperationTally, Task


@dataclass
class PairItem(EncodedPair):
    """One span group as an encoder reads it, and its operation label."""

    label: int

    def __len__(self) -> int:
        return len(self.ids)


def pair_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
               spec: SolverSpec) -> list[PairItem]:
    """Encode classifier records of one split, one pair per group."""
    rows = [r for r in records if r.get("split") == split]
    op_index = {op: i for i, op in enumerate(classifier_labels(spec, reject=True))}
    pairs = []
    for record in rows:
        if record.get("spans") is None:
            raise ValueError(f"step record {record.get('id')} has no 'spans': an encoder "
                             "classifier marks the group in the text (rewrite the data with "
                             "`mycelium-train data`)")
        spans = [(int(a), int(b)) for a, b in record["spans"]]
        group = [(int(i), str(text)) for i, text in record["group"]]
        pairs.append(group_pair(spec.templates, record["question"], spans, group))
    encoded = encode_pairs(vocab.tokenizer, pairs, spec.max_problem_tokens,
                           spec.max_suffix_tokens)
    return [PairItem(e.ids, e.type_ids, op_index[r["op"]])
            for e, r in zip(encoded, rows, strict=True)]


def collate_pairs(items: list[PairItem], pad: int) -> dict[str, torch.Tensor]:
    """The runtime's inputs (``pair_feed``: right-padded ids, mask, token types) and the
    labels."""
    batch = {k: torch.from_numpy(v) for k, v in pair_feed(items, pad).items()}
    batch["targets"] = torch.tensor([item.label for item in items], dtype=torch.long)
    return batch


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"]).logits


class PairClassifierTask(Task):
    """C2 on an encoder: cross-entropy of each group's operation (and the reject label
    when the records hold it), read from the pooled pair."""

    name, metric = "classifier", "accuracy"

    @property
    def reject(self) -> bool:
        """Whether the train records hold the reject label (its index follows the ops)."""
        index = len(self.spec.operations)
        return any(item.label == index for item in self.train)

    def collate(self, items: list[PairItem]) -> dict[str, torch.Tensor]:
        return collate_pairs(items, self.vocab.pad)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weighted_cross_entropy(_logits(model, batch), batch["targets"])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """The figures of ``OperationTally`` (as ``ClassifierTask``)."""
        model.eval()
        tally = OperationTally(len(self.spec.operations))
        for idx in eval_batches([len(x) for x in self.dev], max(batch_size, 64)):
            batch = to_device(self.collate([self.dev[i] for i in idx]), device)
            tally.add(_logits(model, batch), batch["targets"])
        return tally.figures()
