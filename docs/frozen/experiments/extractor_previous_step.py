"""How much would the extractor gain from knowing the step before it? (Experiment;
train/README.md has the result.)

An extractor's reading is independent of the candidate: an ``R1`` cannot know which step
precedes it. Here the extractor's suffix also names the previous step of the gold program
(its group's items and its operation, ``<sep> Q0=48 DIV<cls> none<op> ADD<args>``; the
first step has nothing before ``<cls>``). Trained as `mycelium-train fit --model extractor
--minutes 8 --patience 2` from the same backbone, and read greedily on the dev steps with
the gold previous step: an ORACLE context, an upper bound for a runtime that would have to
read each step once per possible predecessor.

    python docs/experiments/extractor_previous_step.py train DATA_V7 BACKBONE OUT
    python docs/experiments/extractor_previous_step.py eval DATA_V7 OUT [--plain]

``--plain``: evaluate an ordinary extractor (no previous step) the same way.
``--context used`` (train and eval): the context is every quantity the gold program reads
(its used set, which the runtime knows per used set) instead of the previous step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from extractor_recipe import fit_extractor  # the script's own folder is on sys.path

from mycelium.executor import canonical_args
from mycelium.runtime.grammar import parse_args
from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.templates import extractor_suffix, group_items
from mycelium.train import trainer

CONTEXT = "previous"  # or "used": every quantity the program reads (``--context used``)


def suffixes(rows: list[dict], spec: SolverSpec, plain: bool = False) -> list[str]:
    """Each step record's suffix; ``rows``: one problem's records in program order."""
    used = sorted({tuple(g) for row in rows for g in row["group"]})
    out, previous = [], ""
    for row in rows:
        group = [tuple(g) for g in row["group"]]
        suffix = extractor_suffix(spec.templates, group, row["op"])
        context = group_items(spec.templates, used) if CONTEXT == "used" else previous
        if not plain:
            suffix = suffix.replace("<sep>", f"<sep>{context}<cls>", 1)
        out.append(suffix)
        previous = group_items(spec.templates, group) + f" {row['op']}"
    return out


def _items_with_previous(records, split, vocab, spec):
    grouped = trainer._by_question(records, split)
    questions = list(grouped)
    q_ids = vocab.encode(trainer._prefixes(grouped, spec), spec.max_problem_tokens)
    items = []
    for question, enc in zip(questions, q_ids, strict=True):
        rows = grouped[question]
        encoded = vocab.encode(suffixes(rows, spec), spec.max_suffix_tokens)
        targets = vocab.encode([" " + r["target"] for r in rows])
        blocks = [list(s.ids) + list(t.ids) + [vocab.eos]
                  for s, t in zip(encoded, targets, strict=True)]
        starts = [len(s.ids) for s in encoded]
        items.append(trainer.PackedItem(list(enc.ids), blocks, starts,
                                        [" ".join(r["target"].split()) for r in rows], starts))
    return items


def train(data: Path, backbone: Path, out: Path) -> None:
    fit_extractor(_items_with_previous, data, backbone, out)


def _same(op: str, text: str, target: str) -> bool:
    mine, gold = parse_args(text), parse_args(target)
    if mine is None or gold is None:
        return text == target
    return canonical_args(op, tuple(mine)) == canonical_args(op, tuple(gold))


def evaluate(data: Path, out: Path, plain: bool) -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    spec = SolverSpec.from_dict(json.loads((out / "mycelium.json").read_text()))
    vocab = trainer.Vocab.load(out / "extractor" / "tokenizer.json", spec)
    model = AutoModelForCausalLM.from_pretrained(out / "extractor").eval()
    records = trainer.read_jsonl(data / "extractor.jsonl")
    grouped = trainer._by_question(records, "dev")
    prefixes = vocab.encode(trainer._prefixes(grouped, spec), spec.max_problem_tokens)
    right = {"chunk": [0, 0], "tail": [0, 0]}
    with torch.no_grad():
        for rows, prefix in zip(grouped.values(), prefixes, strict=True):
            for row, suffix in zip(rows, suffixes(rows, spec, plain), strict=True):
                ids = list(prefix.ids) + vocab.encode([suffix])[0].ids
                new = model.generate(input_ids=torch.tensor([ids]),
                                     attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=spec.max_new_tokens, do_sample=False,
                                     eos_token_id=vocab.eos, pad_token_id=vocab.pad)[0, len(ids):]
                new = new.tolist()
                new = new[: new.index(vocab.eos)] if vocab.eos in new else new
                text = " ".join(vocab.tokenizer.decode(new, skip_special_tokens=True).split())
                kind = "chunk" if row["group"] else "tail"
                right[kind][0] += _same(row["op"], text, row["target"])
                right[kind][1] += 1
    total = [sum(v[i] for v in right.values()) for i in (0, 1)]
    print(f"greedy, canonical order: all {total[0]}/{total[1]}, "
          + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in right.items()))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("train", "eval"):
        sys.exit(__doc__)
    if "--context" in sys.argv:
        at = sys.argv.index("--context")
        CONTEXT = sys.argv.pop(at + 1)
        sys.argv.pop(at)
    command, *args = sys.argv[1:]
    if command == "train":
        train(*(Path(a) for a in args))
    else:
        evaluate(Path(args[0]), Path(args[1]), "--plain" in args)
