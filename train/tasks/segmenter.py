"""C1: the segmenter's task (BIO token classification)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batching import IGNORE, collate_segmenter, eval_batches, to_device
from ..items import SegItem
from ..labels import spans_from_bio
from .base import Task


class SegmenterTask(Task):
    """C1: BIO token classification, cross-entropy over real tokens."""

    name, metric = "segmenter", "span_f1"

    def collate(self, items: list[SegItem]) -> dict[str, torch.Tensor]:
        return collate_segmenter(items, self.vocab.pad)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                               ignore_index=IGNORE)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        model.eval()
        tp = n_pred = n_gold = 0
        correct_tokens = total_tokens = exact = 0
        for idx in eval_batches([len(x) for x in self.dev], batch_size):
            items = [self.dev[i] for i in idx]
            batch = to_device(self.collate(items), device)
            best = model(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).logits.argmax(-1).cpu()
            for row, item in enumerate(items):
                labels = best[row, : len(item.ids)].tolist()
                correct_tokens += sum(
                    a == b for a, b in zip(labels, item.labels, strict=True))
                total_tokens += len(item.ids)
                pred = set(spans_from_bio(item.question, item.offsets, labels))
                gold = set(item.gold)
                tp += len(pred & gold)
                n_pred += len(pred)
                n_gold += len(gold)
                exact += pred == gold
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "span_f1": f1,
            "span_precision": precision,
            "span_recall": recall,
            "problem_exact": exact / max(1, len(self.dev)),
            "token_accuracy": correct_tokens / max(1, total_tokens),
        }

    def label_ceiling(self) -> float:
        """Span F1 of the gold BIO labels themselves (token-alignment ceiling)."""
        tp = n_pred = n_gold = 0
        for item in self.dev:
            pred = set(spans_from_bio(item.question, item.offsets, item.labels))
            gold = set(item.gold)
            tp, n_pred, n_gold = tp + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
        return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
