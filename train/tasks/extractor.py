"""C3: the extractor's task (packed rows, LM loss on each group's arguments)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batching import collate_packed, eval_batches, to_device
from ..items import PackedItem
from .base import Task, packed_logits


class ExtractorTask(Task):
    """C3: arguments of each (group, op), LM loss on the target tokens and ``<eos>``."""

    name, metric = "extractor", "exact_match"

    def collate(self, items: list[PackedItem]) -> dict[str, torch.Tensor]:
        return collate_packed(items, self.vocab.pad, extractor=True)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(packed_logits(model, batch, model.lm_head), batch["targets"])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, device: torch.device,
                 batch_size: int) -> dict[str, float]:
        """Teacher-forced exact match: equals greedy-decoding exact match (argmax at every
        target step given the correct prefix, ``<eos>`` included)."""
        model.eval()
        exact = blocks = tokens_ok = tokens = 0
        loss = 0.0
        limit = self.spec.max_new_tokens
        for idx in eval_batches([len(x) for x in self.dev], batch_size):
            items = [self.dev[i] for i in idx]
            batch = to_device(self.collate(items), device)
            logits = packed_logits(model, batch, model.lm_head)
            loss += F.cross_entropy(logits, batch["targets"], reduction="sum").item()
            hit = (logits.argmax(-1) == batch["targets"]).long()
            n = int(batch["n_blocks"])
            per_block = torch.zeros(n, dtype=torch.long, device=hit.device)
            per_block.index_add_(0, batch["block_of"], 1 - hit)
            lengths = torch.zeros(n, dtype=torch.long, device=hit.device)
            lengths.index_add_(0, batch["block_of"], torch.ones_like(hit))
            # the runtime stops after max_new_tokens: longer targets can't be written whole
            ok = (per_block == 0) & (lengths - 1 <= limit)
            exact += int(ok.sum())
            blocks += n
            tokens_ok += int(hit.sum())
            tokens += len(hit)
        return {"exact_match": exact / max(1, blocks), "token_accuracy": tokens_ok / max(1, tokens),
                "loss": loss / max(1, tokens), "groups": blocks}

    @torch.no_grad()
    def generate_check(self, model: torch.nn.Module, device: torch.device, limit: int,
                       batch_size: int = 64) -> dict[str, float]:
        """Greedy ``generate`` on unpacked, left-padded inputs for the first ``limit`` dev rows."""
        model.eval()
        rows: list[tuple[list[int], str]] = []
        for item in self.dev:
            for block, start, target in zip(item.blocks, item.labels, item.targets,
                                            strict=True):
                rows.append((item.question + block[:start], target))
                if len(rows) >= limit:
                    break
            if len(rows) >= limit:
                break
        exact = 0
        pad = self.vocab.pad
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (seq, _) in enumerate(chunk):
                ids[r, width - len(seq):] = torch.tensor(seq)
                mask[r, width - len(seq):] = 1
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=self.spec.max_new_tokens, do_sample=False,
                eos_token_id=self.vocab.eos, pad_token_id=pad,
            )[:, width:].cpu()
            for r, (_, target) in enumerate(chunk):
                new = out[r].tolist()
                if self.vocab.eos in new:
                    new = new[: new.index(self.vocab.eos)]
                text = self.vocab.tokenizer.decode(new, skip_special_tokens=True)
                exact += " ".join(text.split()) == target
        return {"generate_exact_match": exact / max(1, len(rows)), "generate_rows": len(rows)}
