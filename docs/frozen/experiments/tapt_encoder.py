"""Does all-MiniLM-L6-v2, trained further as a masked LM on the train split's problems and
worked solutions (task-adaptive pretraining), start a better classifier? (Experiment;
train/README.md has the result.)

    python docs/experiments/tapt_encoder.py ENCODER GSM8K_TRAIN_JSONL OUT [--minutes M]

Reads the train split only (the fixed split of train/data.py; dev lines never enter),
writes each problem as ``question [SEP] solution`` with the ``<<...>>`` calculator
annotations removed, masks 15 % of the tokens (BERT's 80/10/10) and trains
``BertForMaskedLM`` started from ENCODER (a fresh prediction transform, the decoder tied
to the word embeddings) for M minutes or the given epochs. OUT is an encoder folder
(weights, config, tokenizer files) that ``mycelium-train fit --classifier-init OUT`` or
``--segmenter-init OUT`` reads like ENCODER.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from pathlib import Path

import torch
from transformers import (
    BertForMaskedLM,
    BertTokenizerFast,
    DataCollatorForLanguageModeling,
    get_linear_schedule_with_warmup,
)

from mycelium.train.annotations import annotation_bounds
from mycelium.train.data import read_problems, split_of

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json")


def without_annotations(solution: str) -> str:
    """The worked solution with its ``<<EXPR=RESULT>>`` spans cut out."""
    pieces, last = [], 0
    for start, end in annotation_bounds(solution):
        pieces.append(solution[last:start])
        last = end
    pieces.append(solution[last:])
    return "".join(pieces)


def train_texts(path: Path) -> list[tuple[str, str]]:
    """(question, solution without annotations) of every train-split problem."""
    return [(record["question"], without_annotations(record["answer"]))
            for number, record in read_problems(path) if split_of(number) == "train"]


def masked_loss(model: BertForMaskedLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the masked tokens, the vocabulary projection computed at those
    positions only (BertForMaskedLM projects every position: 7x the cost)."""
    labels = batch.pop("labels")
    states = model.bert(**batch).last_hidden_state
    chosen = labels != -100
    logits = model.cls(states[chosen])
    return torch.nn.functional.cross_entropy(logits, labels[chosen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tokenizer = BertTokenizerFast.from_pretrained(args.encoder)
    pairs = train_texts(args.data)
    encoded = tokenizer([q for q, _ in pairs], [s for _, s in pairs], truncation=True,
                        max_length=args.max_tokens)
    rows = [{"input_ids": ids, "token_type_ids": types} for ids, types in
            zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)]
    print(f"{len(rows)} train problems, {sum(len(r['input_ids']) for r in rows)} tokens",
          flush=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    model = BertForMaskedLM.from_pretrained(args.encoder)
    model.train()
    steps_per_epoch = math.ceil(len(rows) / args.batch_size)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, total // 20, total)
    started, step = time.monotonic(), 0
    for epoch in range(args.epochs):
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        random.shuffle(batches)  # similar lengths together, batches in random order
        running = []
        for batch_index in batches:
            batch = collator([rows[i] for i in batch_index])
            loss = masked_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            running.append(loss.item())
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch + 1} step {step}/{total} loss "
                      f"{sum(running[-100:]) / len(running[-100:]):.3f} "
                      f"{time.monotonic() - started:.0f}s", flush=True)
            if time.monotonic() - started > args.minutes * 60:
                break
        print(f"epoch {epoch + 1} mean loss {sum(running) / len(running):.3f}", flush=True)
        if time.monotonic() - started > args.minutes * 60:
            break
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (args.encoder / name).exists():
            shutil.copy(args.encoder / name, args.out / name)
    print(f"wrote {args.out} after {step} steps, {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
