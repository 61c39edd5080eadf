"""C2 as one encoder pass per problem: every span group classified from the same states.

The pair classifier (pair_classifier.py) runs the encoder once per span group. Here the
encoder reads each problem once, framed by its tokenizer's post-processor
(``[CLS] problem [SEP]``), and each group's operation comes from
``[first token; mean and max of its spans' token vectors]`` (a learned vector for a
span-free group) through a small MLP: the serving cost of one encoder pass per problem.
The runtime builds the same inputs with the same functions (``encode_framed``,
``span_tokens``, ``group_tokens``, ``group_feed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.tokenization import (
    GroupedProblem,
    encode_framed,
    group_feed,
    group_tokens,
    span_tokens,
)

from .models import from_encoder
from .trainer import OperationTally, Task, Vocab, _to, classifier_labels, eval_batches

IGNORE = -100  # the label of a padded group slot


class BertForSpanGroupClassification(BertPreTrainedModel):
    """A BERT encoder and an operation head over span groups: ``(input_ids,
    attention_mask, group_tokens (B, G, T) 0/1) -> logits (B, G, L)``."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = getattr(config, "classifier_dropout", None)
        self.empty_group = nn.Parameter(torch.zeros(2 * hidden))  # a span-free group
        self.head = nn.Sequential(
            nn.Linear(3 * hidden, hidden), nn.GELU(),
            nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout),
            nn.Linear(hidden, config.num_labels),
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertForSpanGroupClassification):
            module.empty_group.data.zero_()  # also when from_pretrained lacks it

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters the pretrained encoder does not hold (trained at a higher rate)."""
        return [self.empty_group, *self.head.parameters()]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                group_tokens: torch.Tensor, **_: Any) -> SequenceClassifierOutput:
        """Logits (B, G, L) of every group slot (an all-zero slot reads as span-free)."""
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        member = group_tokens.to(states.dtype)  # (B, G, T)
        count = member.sum(dim=-1, keepdim=True)  # (B, G, 1)
        mean = torch.matmul(member, states) / count.clamp(min=1.0)  # (B, G, H)
        outside = (member == 0).unsqueeze(-1)  # (B, G, T, 1)
        peak = states.unsqueeze(1).masked_fill(outside, -1e4).amax(dim=2)  # (B, G, H)
        pooled = torch.where(count > 0, torch.cat([mean, peak], dim=-1), self.empty_group)
        first = states[:, :1].expand(-1, member.shape[1], -1)  # (B, G, H)
        return SequenceClassifierOutput(logits=self.head(torch.cat([first, pooled], dim=-1)))


def span_group_classifier(folder: Path, labels: tuple[str, ...]) -> BertForSpanGroupClassification:
    """C2 started from a pretrained encoder folder (its encoder weights; a fresh head over
    ``labels``, kept when the folder is already such a classifier)."""
    return from_encoder(BertForSpanGroupClassification, folder, labels)


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
            batch = _to(self.collate([self.dev[i] for i in idx]), device)
            logits, targets = _logits(model, batch), batch["targets"]
            real = targets != IGNORE
            tally.add(logits[real], targets[real])
        return tally.figures()
