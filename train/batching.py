"""Batches: which items go together (length-bucketed for training, length-sorted for
evaluation) and how they become tensors.

A packed row holds one problem's tokens once, then one block per span group. A 4D attention
mask lets each block attend to the problem and to itself only, and each block's position
ids continue from the problem's length, so every block computes exactly what the unpacked
sequence ``problem + suffix (+ target)`` computes, for a fraction of the cost. The
classifier reads the last token of each block; the extractor's loss covers each block's
target tokens and ``<eos>``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from .items import PackedItem, SegItem

IGNORE = -100  # the label of a position no loss reads


def bucketed_batches(lengths: Sequence[int], batch_size: int, chunk: int,
                     rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices; lengths are sorted within chunks to cut padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * max(1, chunk)
    for start in range(0, len(order), span):
        part = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic length-sorted batches for evaluation."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate_segmenter(items: list[SegItem], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels (pads ignored)."""
    width = max(len(it) for it in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.ids)
        ids[row, :n] = torch.tensor(item.ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(item.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(items: list[PackedItem], pad: int, *, extractor: bool,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Packed rows with a 4D block mask, position ids and the gather indices.

    For the classifier, ``rows``/``cols`` point at the last token of each block
    and ``targets`` holds the operation labels. For the extractor they point at
    every position whose next token is a target token (or ``<eos>``) and
    ``targets`` holds that next token; ``block_of`` maps each position to its
    (global) block number so exact match can be computed per block.
    """
    width = max(len(it) for it in items)
    batch = len(items)
    ids = torch.full((batch, width), pad, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    block = torch.full((batch, width), -1, dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    block_of: list[int] = []
    n_blocks = 0
    for r, item in enumerate(items):
        q = len(item.question)
        ids[r, :q] = torch.tensor(item.question, dtype=torch.long)
        positions[r, :q] = torch.arange(q)
        block[r, :q] = 0
        at = q
        for b, tokens in enumerate(item.blocks):
            n = len(tokens)
            ids[r, at:at + n] = torch.tensor(tokens, dtype=torch.long)
            positions[r, at:at + n] = torch.arange(q, q + n)
            block[r, at:at + n] = b + 1
            if extractor:
                start = item.labels[b]
                for k in range(start, n):  # position at + k - 1 predicts tokens[k]
                    rows.append(r)
                    cols.append(at + k - 1)
                    targets.append(tokens[k])
                    block_of.append(n_blocks)
            else:
                rows.append(r)
                cols.append(at + n - 1)
                targets.append(item.labels[b])
                block_of.append(n_blocks)
            n_blocks += 1
            at += n
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    query, key = block[:, :, None], block[:, None, :]
    allowed = causal & ((key == query) | ((key == 0) & (query >= 0)))
    mask = torch.zeros((batch, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "rows": torch.tensor(rows, dtype=torch.long),
        "cols": torch.tensor(cols, dtype=torch.long),
        "targets": torch.tensor(targets, dtype=torch.long),
        "block_of": torch.tensor(block_of, dtype=torch.long),
        "n_blocks": torch.tensor(n_blocks),
    }


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of a batch moved to ``device``."""
    return {k: v.to(device) for k, v in batch.items()}
