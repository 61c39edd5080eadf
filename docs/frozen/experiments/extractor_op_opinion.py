"""Does the extractor, trained to also predict the operation token, add a second opinion
on a group's operation to the classifier's? (Experiment; train/README.md has the result.)

    python docs/experiments/extractor_op_opinion.py train DATA_V7 BACKBONE OUT
    python docs/experiments/extractor_op_opinion.py eval DATA_V7 OUT CLASSIFIER_CKPT DATA_V6R

``train``: the extractor as `mycelium-train fit --model extractor --minutes 8
--patience 2`, with the loss also on the operation token after ``<op>`` (its exact match
then counts the operation too). ``eval``: on the dev steps (gold spans and groups), the
extractor's operation accuracy (softmax over the operation tokens after ``<op>``), the
span-group classifier's, and their product with weights 0.25..1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from extractor_recipe import fit_extractor  # the script's own folder is on sys.path

from mycelium.runtime.spec import OPERATIONS, SolverSpec
from mycelium.runtime.templates import extractor_suffix
from mycelium.train import trainer


def _with_op_loss(records, split, vocab, spec):
    items = ORIGINAL(records, split, vocab, spec)
    for item in items:
        # suffix = ... "<op>", " OP", "<args>": the loss starts at the operation token
        item.labels = [start - 2 for start in item.labels]
    return items


ORIGINAL = trainer.extractor_items


def train(data: Path, backbone: Path, out: Path) -> None:
    fit_extractor(_with_op_loss, data, backbone, out)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def evaluate(data: Path, out: Path, classifier: Path, data_reject: Path) -> None:
    from transformers import AutoModelForCausalLM

    from mycelium.train.span_group import span_group_classifier, span_group_items  # noqa: F401

    torch.set_num_threads(2)
    spec = SolverSpec.from_dict(json.loads((out / "mycelium.json").read_text()))
    vocab = trainer.Vocab.load(out / "extractor" / "tokenizer.json", spec)
    model = AutoModelForCausalLM.from_pretrained(out / "extractor").eval()
    op_ids = [vocab.tokenizer.token_to_id(f" {op}") for op in OPERATIONS]
    if None in op_ids:
        op_ids = [vocab.tokenizer.encode(f" {op}", add_special_tokens=False).ids[0]
                  for op in OPERATIONS]
    rows = [r for r in trainer.read_jsonl(data / "extractor.jsonl") if r["split"] == "dev"]
    ext: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
    with torch.no_grad():
        for r in rows:
            group = tuple(i for i, _ in r["group"])
            if (r["id"], group) in ext:
                continue
            prefix = trainer._prefixes({r["question"]: [r]}, spec)[0]
            suffix = extractor_suffix(spec.templates, [tuple(g) for g in r["group"]], "ADD")
            suffix = suffix[: suffix.index("<op>") + len("<op>")]
            ids = vocab.encode([prefix], spec.max_problem_tokens)[0].ids
            ids = ids + vocab.encode([suffix])[0].ids
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            ext[(r["id"], group)] = _log_softmax(logits[op_ids].numpy())
    cls = _classifier_logprobs(classifier, data_reject)
    gold = [(r["id"], tuple(i for i, _ in r["group"]), OPERATIONS.index(r["op"])) for r in rows]
    gold = [g for g in gold if (g[0], g[1]) in cls]
    print(f"{len(gold)} dev steps")
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        right = sum(int(np.argmax(cls[(i, g)] + weight * ext[(i, g)]) == op)
                    for i, g, op in gold)
        print(f"classifier + {weight} x extractor: {right / len(gold):.4f}")
    right = sum(int(np.argmax(ext[(i, g)]) == op) for i, g, op in gold)
    print(f"extractor alone: {right / len(gold):.4f}")


def _classifier_logprobs(folder: Path, data_reject: Path):
    """The span-group classifier's operation log-probabilities per dev (id, group)."""
    from transformers import AutoConfig

    from mycelium.train.span_group import (
        BertForSpanGroupClassification,
        collate_groups,
        span_group_items,
    )

    spec = SolverSpec.from_dict(json.loads((folder.parent / "mycelium.json").read_text()))
    vocab = trainer.Vocab.for_encoder(folder)
    records = trainer.read_jsonl(data_reject / "classifier.jsonl")
    items = span_group_items(records, "dev", vocab, spec)
    model = BertForSpanGroupClassification.from_pretrained(folder).eval()
    labels = AutoConfig.from_pretrained(folder).id2label
    real = [int(k) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))
            if v in OPERATIONS]
    dev = [r for r in records if r["split"] == "dev"]
    by_question: dict[str, list] = {}
    for r in dev:
        by_question.setdefault(r["question"], []).append(r)
    out = {}
    with torch.no_grad():
        for item, group_rows in zip(items, by_question.values(), strict=True):
            batch = collate_groups([item], vocab.pad)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           group_tokens=batch["group_tokens"]).logits[0]
            for k, r in enumerate(group_rows):
                full = _log_softmax(logits[k].numpy())
                out[(r["id"], tuple(i for i, _ in r["group"]))] = full[real]
    return out


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("train", "eval"):
        sys.exit(__doc__)
    command, *paths = sys.argv[1:]
    if command == "train":
        train(*(Path(p) for p in paths))
    else:
        evaluate(*(Path(p) for p in paths))
