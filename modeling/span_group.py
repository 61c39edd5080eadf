"""A span-group classifier: one encoder pass per problem, every span group classified
from the same states.

The encoder reads each problem once, framed by its tokenizer's post-processor
(``[CLS] problem [SEP]``), and each group's operation comes from
``[first token; mean and max of its spans' token vectors]`` (a learned vector for a
span-free group) through a small MLP. Training builds it (``mycelium.train.factory``),
export loads it by the name config.json's ``architectures`` gives (``SPAN_GROUP_CLASS``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from . import SPAN_GROUP_CLASS

__all__ = ["SPAN_GROUP_CLASS", "BertForSpanGroupClassification"]


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
