"""Optional: pretrain the shared backbone as a causal LM before the specialists.

The corpus is the TRAIN split's problem texts (from ``segmenter.jsonl``), each
followed by its GSM8K answer when a GSM8K JSONL is given (only problems whose
question is in the train split are used, so dev never leaks in). Documents are
joined with ``<eos>`` and cut into fixed-length rows. The budget is wall-clock.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mycelium.runtime.spec import SolverSpec

from .annotations import annotation_bounds
from .config import FitConfig
from .items import read_jsonl
from .loop import Batch, Log, Schedule, make_optimizer, run_steps
from .models import build_pretrain_lm
from .vocab import Vocab

ROW_TOKENS = 256


def strip_annotations(answer: str) -> str:
    """The worked solution without its ``<<EXPR=RESULT>>`` calculator markers."""
    pieces, last = [], 0
    for start, end in annotation_bounds(answer):
        pieces.append(answer[last:start])
        last = end
    return "".join(pieces) + answer[last:]


def pretrain_corpus(data: Path, answers: Path | None = None) -> tuple[list[str], list[str]]:
    """(train texts, dev texts): questions, plus GSM8K answers of train questions if given."""
    records = read_jsonl(Path(data) / "segmenter.jsonl")
    train = [r["question"] for r in records if r.get("split") == "train"]
    dev = [r["question"] for r in records if r.get("split") == "dev"]
    if answers is not None and Path(answers).is_file():
        known = set(train)
        by_question: dict[str, str] = {}
        with open(answers, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    if row.get("question") in known and isinstance(row.get("answer"), str):
                        by_question[row["question"]] = strip_annotations(row["answer"])
        train = [q + "\n" + by_question[q] if q in by_question else q for q in train]
    return train, dev


def _rows(texts: list[str], vocab: Vocab) -> torch.Tensor:
    stream: list[int] = []
    for enc in vocab.encode(texts):
        stream.extend(enc.ids)
        stream.append(vocab.eos)
    usable = len(stream) // ROW_TOKENS * ROW_TOKENS
    if usable == 0:
        stream = stream + [vocab.eos] * (ROW_TOKENS - len(stream))
        usable = ROW_TOKENS
    return torch.tensor(stream[:usable], dtype=torch.long).view(-1, ROW_TOKENS)


@torch.no_grad()
def _dev_loss(model: torch.nn.Module, rows: torch.Tensor, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), 32):
        ids = rows[start:start + 32].to(device)
        logits = model(input_ids=ids).logits[:, :-1]
        total += F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(),
                                 reduction="sum").item()
        count += ids[:, 1:].numel()
    model.train()
    return total / max(1, count)


def _lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy over full rows."""
    ids = batch["input_ids"]
    logits = model(input_ids=ids).logits[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def pretrain_backbone(
    data: Path, vocab: Vocab, spec: SolverSpec, config: FitConfig, device: torch.device,
    log: Log, answers: Path | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train a causal LM for ``config.pretrain_minutes``; return its backbone state dict."""
    train_texts, dev_texts = pretrain_corpus(data, answers)
    rows, dev_rows = _rows(train_texts, vocab), _rows(dev_texts, vocab)
    torch.manual_seed(config.seed * 1000 + 99)
    model = build_pretrain_lm(config.size, vocab.token_ids).to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    rng = random.Random(config.seed)
    batch = 32
    steps_per_epoch = math.ceil(len(rows) / batch)
    start = time.perf_counter()
    # no step count bounds the run: the cosine decay follows the time budget only
    schedule = Schedule(10**9, min(config.warmup_steps, 50), config.min_lr_ratio,
                        config.pretrain_minutes * 60.0, start, config.clip)
    step, epoch, losses = 0, 0, []
    history = []
    while schedule.elapsed() < schedule.budget:
        epoch += 1
        order = list(range(len(rows)))
        rng.shuffle(order)
        batches = [order[first:first + batch] for first in range(0, len(order), batch)]
        epoch_losses, step, _ = run_steps(model, optimizer, batches,
                                          lambda idx: {"input_ids": rows[idx].to(device)},
                                          _lm_loss, schedule, step)
        losses += epoch_losses
        dev = _dev_loss(model, dev_rows, device)
        history.append({"epoch": epoch, "steps": step, "train_loss": sum(losses[-steps_per_epoch:])
                        / max(1, len(losses[-steps_per_epoch:])), "dev_loss": dev,
                        "elapsed_seconds": round(time.perf_counter() - start, 1)})
        log(f"[pretrain] epoch {epoch} steps {step} loss {history[-1]['train_loss']:.4f} "
            f"dev loss {dev:.4f} ({history[-1]['elapsed_seconds']:.0f} s)")
    info = {"rows": len(rows), "row_tokens": ROW_TOKENS, "with_answers": answers is not None,
            "steps": step, "epochs": history, "seconds": round(time.perf_counter() - start, 1)}
    state = {k: v.detach().cpu().clone() for k, v in model.model.state_dict().items()}
    return state, info
