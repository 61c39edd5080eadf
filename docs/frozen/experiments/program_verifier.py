"""Can a model that reads the problem and a whole candidate program pick better than the
answer scorer? (Experiment; train/README.md has the result: it cannot, at this size.)

    python docs/experiments/program_verifier.py listwise TRAIN_CACHE DEV_CACHE CKPT OUT
    python docs/experiments/program_verifier.py lm DATA_V7 DEV_CACHE CKPT OUT

The caches are `mycelium-train scorer --cache` files (their ``programs`` hold each
candidate written as solution text, `train/program_text.py`), collected by the shipped
artifacts with the default ranking; CKPT is the checkpoint whose extractor starts both
models (a causal LM that already reads the problem text).

``listwise``: a one-output head on the last token of ``<sep>{program}<cls>`` after the
problem, trained listwise on the train candidates (a softmax over a problem's candidates
whose gold-valued ones should carry the mass; each step samples the scorer's eight best
and four others). ``lm``: the extractor fine-tuned as a language model of the gold
programs (data v7's aligned train programs, executed and written the same way), a
candidate scored by log P(its text | problem). Both report the dev picks of the shipped
scorer's logit + w x the new score (w = 100: the new score alone). A problem's candidates
share its text, so they are packed into one row (the trainer's block mask).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForSequenceClassification

from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.verifier import AnswerScorer
from mycelium.train.scorer import ProblemCandidates, picked
from mycelium.train.trainer import PackedItem, Vocab, _to, collate_packed, packed_logits

PROGRAM_TEMPLATE = "<sep>{program}<cls>"


@dataclass
class VerifierConfig:
    """How the verifier is trained."""

    epochs: int = 2
    lr: float = 2e-4
    batch_problems: int = 8
    sample: int = 12  # candidates per problem per step (the scorer's best first)
    hardest: int = 8  # of which the scorer's best-ranked ones
    seed: int = 0
    minutes: float = 0.0  # 0: no time budget


def program_block(vocab: Vocab, spec: SolverSpec, program: str) -> list[int]:
    """Token ids of one candidate's block: ``<sep>``, its solution text, ``<cls>``."""
    ids = vocab.encode([PROGRAM_TEMPLATE.format(program=program)])[0].ids
    return list(ids[: spec.max_suffix_tokens])


def build_verifier(extractor: Path) -> Qwen2ForSequenceClassification:
    """A one-output sequence scorer with the extractor checkpoint's backbone weights."""
    from safetensors.torch import load_file

    config = Qwen2Config.from_pretrained(extractor)
    config.num_labels = 1
    config.architectures = ["Qwen2ForSequenceClassification"]
    model = Qwen2ForSequenceClassification(config)
    weights = {k: v for k, v in load_file(str(extractor / "model.safetensors")).items()
               if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.startswith("score.")]:
        raise ValueError(f"{extractor}: not a Qwen2 extractor ({missing[:3]}, {unexpected[:3]})")
    return model


def listwise_loss(scores: torch.Tensor, rows: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(the softmax mass of the row's positive blocks)."""
    losses = []
    for row in torch.unique(rows):
        s = scores[rows == row]
        p = positive[rows == row]
        losses.append(torch.logsumexp(s, 0) - torch.logsumexp(s[p], 0))
    return torch.stack(losses).mean()


class VerifierData:
    """Problems' token ids and candidate blocks, encoded once."""

    def __init__(self, problems: Sequence[ProblemCandidates], questions: dict[int, str],
                 vocab: Vocab, spec: SolverSpec, scorer: AnswerScorer | None):
        self.problems = list(problems)
        encoded = vocab.encode([questions[p.id] for p in self.problems], spec.max_problem_tokens)
        self.questions = [list(e.ids) for e in encoded]
        self.blocks = [[program_block(vocab, spec, text) for text in p.programs]
                       for p in self.problems]
        self.positive = [[v == p.gold for v in p.values] for p in self.problems]
        self.prior = [np.asarray(scorer.logits(p.vectors)) if scorer is not None
                      else np.zeros(len(p.values)) for p in self.problems]

    def trainable(self) -> list[int]:
        """Problems with at least one positive and one negative candidate."""
        return [i for i, pos in enumerate(self.positive) if any(pos) and not all(pos)]

    def sampled(self, index: int, config: VerifierConfig, rng: random.Random) -> PackedItem:
        """Up to ``config.sample`` candidates: the scorer's ``hardest`` best, random others,
        at least one positive."""
        order = list(np.argsort(-self.prior[index]))
        chosen = order[: config.hardest]
        rest = order[config.hardest:]
        rng.shuffle(rest)
        chosen += rest[: max(0, config.sample - len(chosen))]
        positives = [i for i, pos in enumerate(self.positive[index]) if pos]
        if not any(self.positive[index][i] for i in chosen):
            chosen[-1] = rng.choice(positives)
        return PackedItem(self.questions[index], [self.blocks[index][i] for i in chosen],
                          [int(self.positive[index][i]) for i in chosen])

    def whole(self, index: int) -> PackedItem:
        """Every candidate of a problem."""
        return PackedItem(self.questions[index], self.blocks[index],
                          [int(x) for x in self.positive[index]])


def score_all(model: torch.nn.Module, data: VerifierData, pad: int, device: torch.device,
              batch_problems: int = 8) -> list[np.ndarray]:
    """The verifier's score of every candidate of every problem."""
    model.eval()
    out: list[np.ndarray] = [np.zeros(0) for _ in data.problems]
    todo = [i for i, blocks in enumerate(data.blocks) if blocks]
    with torch.no_grad():
        for start in range(0, len(todo), batch_problems):
            chunk = todo[start:start + batch_problems]
            batch = _to(collate_packed([data.whole(i) for i in chunk], pad, extractor=False),
                        device)
            scores = packed_logits(model, batch, model.score)[:, 0].cpu().numpy()
            rows = batch["rows"].cpu().numpy()
            for r, i in enumerate(chunk):
                out[i] = scores[rows == r].astype(np.float64)
    return out


def pick_counts(data: VerifierData, scores: list[np.ndarray],
                weights: Sequence[float]) -> dict[float, int]:
    """Problems solved when picking by scorer logit + w * verifier score, per w (pooled
    per value as the runtime picks)."""
    out = {}
    for w in weights:
        out[w] = sum(picked(p, prior + w * s) == p.gold
                     for prior, s, p in zip(data.prior, scores, data.problems, strict=True))
    return out


def train_verifier(model: torch.nn.Module, train: VerifierData, dev: VerifierData | None,
                   pad: int, config: VerifierConfig, device: torch.device,
                   log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Listwise training; logs dev pick counts per epoch. Returns the history."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    indices = train.trainable()
    steps = math.ceil(len(indices) / config.batch_problems) * config.epochs
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps))))
    history: list[dict[str, object]] = []
    start = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        model.train()
        rng.shuffle(indices)
        total = 0.0
        for at in range(0, len(indices), config.batch_problems):
            chunk = indices[at:at + config.batch_problems]
            items = [train.sampled(i, config, rng) for i in chunk]
            batch = _to(collate_packed(items, pad, extractor=False), device)
            scores = packed_logits(model, batch, model.score)[:, 0]
            loss = listwise_loss(scores, batch["rows"], batch["targets"].bool())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(loss)
            step += 1
            if step % 50 == 0:
                log(f"epoch {epoch} step {step}/{steps} loss {total / 50:.4f} "
                    f"{time.perf_counter() - start:.0f}s")
                total = 0.0
            if config.minutes and time.perf_counter() - start > config.minutes * 60:
                break
        entry: dict[str, object] = {"epoch": epoch, "seconds": time.perf_counter() - start}
        if dev is not None:
            scores_dev = score_all(model, dev, pad, device)
            entry["dev"] = pick_counts(dev, scores_dev, (0.0, 0.5, 1.0, 2.0, 100.0))
        log(str(entry))
        history.append(entry)
    return history


# --------------------------------------------------------------------------- the program LM


def gold_program_text(record: dict, constants: list) -> str | None:
    """A data-v7 problem's aligned program, executed and written as `render_program`."""
    from mycelium.executor import execute
    from mycelium.executor.numbers import parse_number
    from mycelium.executor.program import Step
    from mycelium.runtime.grammar import parse_args
    from mycelium.runtime.solver import program_record
    from mycelium.train.program_text import render_program

    steps = tuple(Step(s["op"], parse_args(" ".join(s["args"])) if s["args"] else ())
                  for s in record["program"])
    result = execute(steps, [parse_number(span["value"]) for span in record["spans"]],
                     constants=constants)
    return render_program(program_record(result, [])) if result.ok else None


def lm_block(vocab: Vocab, spec: SolverSpec, text: str) -> list[int]:
    """``<sep>``, the program text, ``<eos>``: every token after ``<sep>`` is scored."""
    return list(vocab.encode(["<sep>" + text])[0].ids[: spec.max_suffix_tokens]) + [vocab.eos]


def token_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log P(each scored token | what precedes it) over packed rows."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    logits = model.lm_head(hidden[batch["rows"], batch["cols"]]).float()
    return torch.log_softmax(logits, -1).gather(1, batch["targets"][:, None])[:, 0]


def program_lm(data_v7: Path, dev: VerifierData, vocab: Vocab, spec: SolverSpec, ckpt: Path,
               epochs: int = 2, lr: float = 3e-4, batch_problems: int = 16) -> torch.nn.Module:
    """Fine-tune the extractor on the gold programs; log the dev picks per epoch."""
    import json

    from transformers import Qwen2ForCausalLM

    from mycelium.executor.numbers import parse_number

    constants = [parse_number(c) for c in spec.constants]
    rows = [json.loads(line) for line in data_v7.joinpath("problems.jsonl").open()]
    pairs = [(r["question"], gold_program_text(r, constants)) for r in rows
             if r["split"] == "train" and r["aligned"] and r["program"]]
    pairs = [(q, t) for q, t in pairs if t is not None]
    encoded = vocab.encode([q for q, _ in pairs], spec.max_problem_tokens)
    items = [PackedItem(list(e.ids), [lm_block(vocab, spec, t)], [1])
             for e, (_, t) in zip(encoded, pairs, strict=True)]
    print(f"{len(items)} gold programs", flush=True)
    model = Qwen2ForCausalLM.from_pretrained(ckpt / "extractor")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = math.ceil(len(items) / batch_problems) * epochs
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps))))
    rng = random.Random(0)
    for epoch in range(epochs):
        model.train()
        rng.shuffle(items)
        for at in range(0, len(items), batch_problems):
            batch = collate_packed(items[at:at + batch_problems], vocab.pad, extractor=True)
            loss = -token_logprobs(model, batch).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        scores = lm_scores(model, dev, vocab, spec)
        print(f"epoch {epoch}: dev picks {pick_counts(dev, scores, (0.0, 0.1, 0.3, 1.0, 100.0))}",
              flush=True)
    return model


def lm_scores(model: torch.nn.Module, dev: VerifierData, vocab: Vocab,
              spec: SolverSpec) -> list[np.ndarray]:
    """log P(program text | problem) of every candidate."""
    model.eval()
    out = []
    with torch.no_grad():
        for question, problem in zip(dev.questions, dev.problems, strict=True):
            if not problem.programs:
                out.append(np.zeros(0))
                continue
            item = PackedItem(question, [lm_block(vocab, spec, t) for t in problem.programs],
                              [1] * len(problem.programs))
            batch = collate_packed([item], vocab.pad, extractor=True)
            sums = np.zeros(len(problem.programs))
            np.add.at(sums, batch["block_of"].numpy(), token_logprobs(model, batch).numpy())
            out.append(sums)
    return out


def main(argv: list[str]) -> None:
    import json

    from mycelium.train.data import read_problems
    from mycelium.train.scorer import read_cache

    mode, out = argv[0], argv[4]
    source, dev_cache, ckpt = (Path(a) for a in argv[1:4])
    torch.set_num_threads(2)
    spec = SolverSpec.from_dict(json.loads((ckpt / "mycelium.json").read_text()))
    vocab = Vocab.load(ckpt / "extractor" / "tokenizer.json", spec)
    manifest = json.loads(Path("runtime/default_artifacts/manifest.json").read_text())
    scorer = AnswerScorer.from_dict(manifest["mycelium"]["answer_scorer"])
    gsm8k = Path("../shared/data/gsm8k/train.jsonl")
    questions = {n: r["question"] for n, r in read_problems(gsm8k)}
    dev = VerifierData(read_cache(dev_cache), questions, vocab, spec, scorer)
    if mode == "listwise":
        train = VerifierData(read_cache(source), questions, vocab, spec, scorer)
        model = build_verifier(ckpt / "extractor")
        train_verifier(model, train, dev, vocab.pad, VerifierConfig(), torch.device("cpu"))
    else:
        model = program_lm(source, dev, vocab, spec, ckpt)
    model.save_pretrained(out)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
